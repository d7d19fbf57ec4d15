"""Rotation-invariant VAE (rVAE): rotation, translation and (optionally) scale get latents of their own.

The encoder maps a patch to a diagonal Gaussian over ``[angle, dx, dy, (scale), z_1..z_k]``. The
decoder is a :class:`~aexp.models.decoders.CoordinateDecoder`: it turns the pixel grid by ``angle``
(radians), divides it by the magnification ``exp(scale)``, moves it by ``0.1 * (dx, dy)`` (grid
units; the patch spans [-1, 1]) and draws the pixel values from the content latents ``z``, so ``z``
describes the object and not its orientation, size or position. The loss per patch is

    reconstruction + w(epoch) * [KL(z || N(0, 1)) + KL(angle || N(0, rotation_prior^2))
                                 + KL(0.1 (dx, dy) || N(0, translation_prior^2))
                                 + KL(scale || N(0, scale_prior^2))]

The angle prior is a proper Gaussian (its KL includes the mean term), so ``rotation_prior`` should
cover the rotations expected in the data. The angle is recovered up to the symmetry of the object
and a global sign and offset (the "canonical" orientation the decoder settles on is arbitrary,
and may differ between classes of objects).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .base import ENCODERS, SHIFT_SCALE, BaseVAE, InvariantNetwork, check_int, check_positive

__all__ = ["RVAE", "SHIFT_SCALE"]


class RVAE(BaseVAE):
    """Rotation- (and translation-, optionally scale-) invariant VAE for image patches.

    Encoded columns: ``[angle, dx, dy, (scale), z_1..z_k]``; ``dx, dy`` only with
    ``translation=True`` and ``scale`` only with ``scale=True``. ``angle`` is in radians; a positive
    angle turns the decoded patch counter-clockwise as displayed with row 0 at the top
    (``angle = pi/2`` gives ``np.rot90(patch)``). The shift latents move the decoder's grid by
    ``0.1 * (dx, dy)`` (the patch spans [-1, 1]): the decoded content moves ``0.05 * dx * (h - 1)``
    pixels up (towards row 0) and ``0.05 * dy * (w - 1)`` pixels right. ``scale`` is the
    log-magnification of the decoded object.

    Args:
        input_shape: ``(h, w)`` or ``(C, h, w)``.
        latent_dim: number of content latents ``k``.
        hidden: width of the decoder's per-pixel layers (the main cost, ~``hidden^2`` per pixel).
        decoder_layers: hidden ``hidden x hidden`` tanh layers after the decoder's first layer.
        encoder_hidden: width of the encoder's hidden layers.
        translation: learn shift latents ``(dx, dy)``.
        rotation_prior: standard deviation (radians) of the Gaussian prior on the angle.
        translation_prior: standard deviation of the prior on the shift ``0.1 * (dx, dy)``, in
            units of the patch half-width (0.1 makes the shift latents standard normal).
        scale: learn a scale latent (log-magnification).
        scale_prior: standard deviation of the prior on the log-magnification.
        encoder: ``"mlp"`` or ``"conv"`` (see :func:`~aexp.models.base.make_encoder`).
        likelihood, noise_std, device: see :class:`~aexp.models.base.BaseVAE`.

    Example:
        >>> m = RVAE(input_shape=(16, 16), latent_dim=2).fit(patches, epochs=20, progress=False)
        >>> m.encode(patches).shape          # N x (3 + 2): angle, dx, dy, z1, z2
        (4096, 5)
        >>> m.decode([[0.5, -1.0]]).shape    # content only: zero angle and shift
        (1, 16, 16)
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        latent_dim: int = 2,
        hidden: int = 32,
        decoder_layers: int = 2,
        encoder_hidden: int = 128,
        translation: bool = True,
        rotation_prior: float = math.pi / 3,
        translation_prior: float = 0.1,
        scale: bool = False,
        scale_prior: float = 0.2,
        encoder: str = "mlp",
        likelihood: str = "gaussian",
        noise_std: float = 0.1,
        device: str = "cpu",
    ):
        super().__init__(input_shape, latent_dim, likelihood, noise_std, device)
        self.hidden = hidden
        self.decoder_layers = decoder_layers
        self.encoder_hidden = encoder_hidden
        self.translation = translation
        self.rotation_prior = rotation_prior
        self.translation_prior = translation_prior
        self.scale = scale
        self.scale_prior = scale_prior
        self.encoder = encoder

    def _validate_hyperparameters(self) -> None:
        super()._validate_hyperparameters()
        check_int("hidden", self.hidden, 1)
        check_int("decoder_layers", self.decoder_layers, 0)
        check_int("encoder_hidden", self.encoder_hidden, 1)
        for flag in ("translation", "scale"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag} must be True or False; got {getattr(self, flag)!r}")
        check_positive("rotation_prior", self.rotation_prior)
        check_positive("translation_prior", self.translation_prior)
        check_positive("scale_prior", self.scale_prior)
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}; got {self.encoder!r}")

    @property
    def geometric_names(self) -> list[str]:
        """The geometric latents, in the order they lead :meth:`encode`'s columns."""
        names = ["angle"]
        if self.translation:
            names += ["dx", "dy"]
        if self.scale:
            names.append("scale")
        return names

    @property
    def latent_names(self) -> list[str]:
        return self.geometric_names + [f"z{i + 1}" for i in range(self.latent_dim)]

    def _geometric_priors(self) -> dict[str, tuple[str, float]]:
        """Geometric latent -> (KL term name, prior standard deviation in latent units)."""
        return {
            "angle": ("kl_angle", float(self.rotation_prior)),
            "dx": ("kl_shift", float(self.translation_prior) / SHIFT_SCALE),
            "dy": ("kl_shift", float(self.translation_prior) / SHIFT_SCALE),
            "scale": ("kl_scale", float(self.scale_prior)),
        }

    def _latent_priors(self) -> list[tuple[str, slice, float]]:
        table = self._geometric_priors()
        priors: list[tuple[str, slice, float]] = []
        for i, name in enumerate(self.geometric_names):
            term, std = table[name]
            if name == "dy":
                continue  # dx and dy share one term (the shift)
            width = 2 if name == "dx" else 1
            priors.append((term, slice(i, i + width), std))
        priors.append(("kl_content", slice(len(self.geometric_names), None), 1.0))
        return priors

    def _build_network(self) -> nn.Module:
        return InvariantNetwork(
            self._patch_shape(),
            self.latent_dim,
            self.geometric_names,
            self.hidden,
            self.decoder_layers,
            self.encoder,
            self.encoder_hidden,
        )

    def _full_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Content-only latents (``n x k``) get zero geometric latents; ``n x n_latents`` pass."""
        if z.shape[1] == self.latent_dim:
            return torch.cat([z.new_zeros(len(z), self.n_latents - self.latent_dim), z], dim=1)
        if z.shape[1] == self.n_latents:
            return z
        raise ValueError(
            f"z must have {self.latent_dim} columns (content only) or {self.n_latents} "
            f"({', '.join(self.latent_names)}); got shape {tuple(z.shape)}"
        )
