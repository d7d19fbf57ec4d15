"""Embedders: models that turn image patches into low-dimensional features.

One model per module over the shared base (:mod:`aexp.models.base`: training, persistence, input
checks, encoders) and coordinate decoder (:mod:`aexp.models.decoders`):

* :class:`VAE` — plain VAE, the baseline;
* :class:`RVAE` — rotation, translation and optional scale latents;
* :class:`AffineVAE` — adds a shear latent;
* :class:`JVAE`, :class:`JRVAE` — a discrete class latent next to the continuous ones;
* :class:`SkipRVAE` — an rVAE whose content latents enter every decoder layer;
* :class:`SSVAE` — semi-supervised (a classifier or regressor learned with the VAE);
* :class:`CVAE` — encoder and decoder conditioned on a class or covariates;
* :class:`VED` — encoder-decoder between patches and spectra (:func:`im2spec`, :func:`spec2im`);
* :class:`ShiftVAE` — 1-D spectra with a shift latent;
* :func:`time_delay_patches` — frames ``t - dt, t, t + dt`` stacked as channels for the rVAE;
* :func:`latent_traversal`, :func:`latent_scatter` — figures of a fitted embedder's latents.
* :mod:`aexp.models.orientation` — the rVAE options for wide rotations and one angle offset
  across classes (encoder equivariance, learned canonical orientation);
* :mod:`aexp.models.shifts` — shift equivariance of the encoder, so the shift latents follow every
  direction of shift; the displacement a decoder's geometric latents describe;
* :mod:`aexp.models.metrics` — scores against known truth (circular correlation, also modulo a
  glyph's symmetry; k-means purity).

Every model encodes to latent means with the geometric latents first, in the order
``[angle, dx, dy, (scale), (shear), z...]``. :func:`make_embedder` builds one by name
(:data:`EMBEDDERS`), as the loop's ``embedder.kind`` does; the models that need labels, conditions
or spectra to train (SSVAE, CVAE, VED) are used directly, not as the loop's embedder.
"""

from .affine import AffineVAE
from .base import BaseVAE, NotFittedError
from .cvae import CVAE
from .figures import LatentScatter, latent_scatter, latent_traversal
from .jvae import JRVAE, JVAE
from .registry import EMBEDDERS, build_embedder, make_embedder
from .rvae import RVAE
from .shiftvae import ShiftVAE
from .skiprvae import SkipRVAE
from .ssvae import SSVAE
from .tdrvae import TimeDelayPatches, time_delay_patches
from .vae import VAE
from .ved import VED, im2spec, spec2im

__all__ = [
    "AffineVAE", "BaseVAE", "CVAE", "EMBEDDERS", "JRVAE", "JVAE", "NotFittedError", "RVAE", "SSVAE",
    "ShiftVAE", "SkipRVAE", "TimeDelayPatches", "VAE", "VED", "im2spec", "build_embedder", "make_embedder", "spec2im",
    "time_delay_patches",
    "LatentScatter", "latent_scatter", "latent_traversal",
]
