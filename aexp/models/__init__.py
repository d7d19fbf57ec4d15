"""Embedders: models that turn image patches into low-dimensional features.

One model per module over the shared base (:mod:`aexp.models.base`: training, persistence, input
checks, encoders) and coordinate decoder (:mod:`aexp.models.decoders`):

* :class:`VAE` — plain VAE, the baseline;
* :class:`RVAE` — rotation, translation and optional scale latents;
* :class:`AffineVAE` — adds a shear latent;
* :class:`JVAE`, :class:`JRVAE` — a discrete class latent next to the continuous ones.

Every model encodes to latent means with the geometric latents first, in the order
``[angle, dx, dy, (scale), (shear), z...]``. :func:`make_embedder` builds one by name
(:data:`EMBEDDERS`), as the loop's ``embedder.kind`` does.
"""

from .affine import AffineVAE
from .base import BaseVAE, NotFittedError
from .jvae import JRVAE, JVAE
from .registry import EMBEDDERS, make_embedder
from .rvae import RVAE
from .vae import VAE

__all__ = ["AffineVAE", "BaseVAE", "EMBEDDERS", "JRVAE", "JVAE", "NotFittedError", "RVAE", "VAE", "make_embedder"]
