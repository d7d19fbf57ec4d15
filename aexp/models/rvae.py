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
and may differ between classes of objects unless ``orientation=True``). For rotations beyond about
+-90 deg, ``equivariance`` and ``rotation_prior_warmup`` help the encoder find the angle; see
:mod:`aexp.models.orientation`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real

import torch

from .base import (
    SHIFT_SCALE,
    GeometricPriors,
    InvariantNetwork,
    LatentNetwork,
    PatchVAE,
    check_flags,
    check_int,
    check_positive,
)
from .orientation import OrientedNetwork, equivariance_penalty
from .shifts import shift_equivariance_penalty

__all__ = ["RVAE", "RotationLatents", "SHIFT_SCALE", "ROTATION_WARMUP_START", "warmup_factor"]

ROTATION_WARMUP_START = 0.05
"""Width of the angle prior at the first warm-up epoch, as a fraction of ``rotation_prior``."""


def warmup_factor(epoch: int, warmup: int) -> float:
    """Width factor of a prior in ``epoch`` of a ``warmup``-epoch geometric warm-up:
    ``ROTATION_WARMUP_START`` at epoch 0, 1 from epoch ``warmup`` on (always 1 if ``warmup`` is 0)."""
    if not warmup:
        return 1.0
    return ROTATION_WARMUP_START ** max(0.0, 1.0 - epoch / warmup)


def rotation_latent_names(translation: bool, scale: bool) -> list[str]:
    """The geometric latents of an rVAE, in the order they lead its encoding:
    ``angle``, then ``dx, dy`` with ``translation``, then ``scale`` with ``scale``."""
    names = ["angle"]
    if translation:
        names += ["dx", "dy"]
    if scale:
        names.append("scale")
    return names


def geometric_prior_table(
    rotation_prior: float, translation_prior: float, scale_prior: float, warmup: float = 1.0
) -> dict[str, tuple[str, float]]:
    """Geometric latent -> (KL term name, prior standard deviation in latent units); ``warmup``
    scales the angle's prior (see :func:`warmup_factor`)."""
    return {
        "angle": ("kl_angle", float(rotation_prior) * warmup),
        "dx": ("kl_shift", float(translation_prior) / SHIFT_SCALE),
        "dy": ("kl_shift", float(translation_prior) / SHIFT_SCALE),
        "scale": ("kl_scale", float(scale_prior)),
    }


def geometric_latent_priors(
    names: Sequence[str], table: dict[str, tuple[str, float]]
) -> list[tuple[str, slice, float]]:
    """The KL terms ``[(name, columns, prior_std), ...]`` of latents ``[geometric names..., content]``
    given each geometric latent's ``(term, prior_std)`` in ``table``; content has a unit prior."""
    priors: list[tuple[str, slice, float]] = []
    for i, name in enumerate(names):
        term, std = table[name]
        if name == "dy":
            continue  # dx and dy share one term (the shift)
        width = 2 if name == "dx" else 1
        priors.append((term, slice(i, i + width), std))
    priors.append(("kl_content", slice(len(names), None), 1.0))
    return priors


class RotationLatents(GeometricPriors):
    """A model whose encoding starts with the rVAE's geometric latents ``[angle, dx, dy, (scale)]``,
    with their priors (:class:`~aexp.models.base.GeometricPriors` and ``scale_prior``).

    Args:
        translation: learn shift latents ``(dx, dy)``.
        scale: learn a scale latent (log-magnification).
        scale_prior: standard deviation of the prior on the log-magnification.
    """

    translation: bool = True
    scale: bool = False
    scale_prior: float = 0.2

    def _validate_hyperparameters(self) -> None:
        super()._validate_hyperparameters()
        check_flags(self, "translation", "scale")
        check_positive("scale_prior", self.scale_prior)

    @property
    def geometric_names(self) -> list[str]:
        """The geometric latents, in the order they lead :meth:`encode`'s columns."""
        return rotation_latent_names(self.translation, self.scale)

    def _geometric_priors(self) -> dict[str, tuple[str, float]]:
        """Geometric latent -> (KL term name, prior standard deviation in latent units)."""
        return geometric_prior_table(
            self.rotation_prior, self.translation_prior, self.scale_prior, getattr(self, "_warmup_factor", 1.0)
        )

    def _latent_priors(self) -> list[tuple[str, slice, float]]:
        return geometric_latent_priors(self.geometric_names, self._geometric_priors())


class RVAE(RotationLatents, PatchVAE):
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
        orientation: learn each object's canonical orientation from its content latents, so the
            angle of every class is measured from that class's mean orientation (one offset for
            all classes). See :mod:`aexp.models.orientation`. Needs ``latent_dim >= 1``.
        equivariance: weight of the encoder-equivariance penalty (0: off). Turned copies of each
            batch must encode to the turned angle and the same content; needed for rotations
            beyond about +-90 deg. Costs one more encoder pass per batch. See
            :mod:`aexp.models.orientation`.
        rotation_prior_warmup: epochs over which the angle prior's width grows geometrically from
            ``ROTATION_WARMUP_START * rotation_prior`` to ``rotation_prior`` (0: no warm-up). The
            narrow prior holds the angles near zero while the decoder first learns each class, so
            the templates start at the classes' mean orientation rather than anywhere.
        coordinate_scale: factor on the decoder's initial coordinate weights (see
            :class:`~aexp.models.decoders.CoordinateDecoder`); raise it (e.g. 10) for patches with
            fine, sharp detail, such as diffraction disks, that the default decoder draws as a
            smooth blob.
        shift_equivariance: weight of the shift-equivariance penalty (0: off; needs
            ``translation``). Shifted copies of each batch must encode to the shifted ``(dx, dy)``
            and the same other latents, so the encoder learns both directions of shift even when
            the data shift much more along one of them. Costs one more encoder pass per batch.
            See :mod:`aexp.models.shifts`.

    Example:
        >>> m = RVAE(input_shape=(16, 16), latent_dim=2).fit(patches, epochs=20, progress=False)
        >>> m.encode(patches).shape          # N x (3 + 2): angle, dx, dy, z1, z2
        (4096, 5)
        >>> m.decode([[0.5, -1.0]]).shape    # content only: zero angle and shift
        (1, 16, 16)
    """

    orientation: bool = False
    equivariance: float = 0.0
    rotation_prior_warmup: int = 0
    coordinate_scale: float = 1.0
    shift_equivariance: float = 0.0

    def _validate_hyperparameters(self) -> None:
        super()._validate_hyperparameters()
        check_flags(self, "orientation")
        check_int("rotation_prior_warmup", self.rotation_prior_warmup, 0)
        check_positive("coordinate_scale", self.coordinate_scale)
        if self.orientation and self.latent_dim < 1:
            raise ValueError(
                "orientation=True needs latent_dim >= 1: the orientation is learned from the content"
            )
        if isinstance(self.equivariance, bool) or not isinstance(self.equivariance, Real) or not (
            0 <= self.equivariance < math.inf
        ):
            raise ValueError(f"equivariance must be a finite number >= 0; got {self.equivariance!r}")
        if isinstance(self.shift_equivariance, bool) or not isinstance(self.shift_equivariance, Real) or not (
            0 <= self.shift_equivariance < math.inf
        ):
            raise ValueError(f"shift_equivariance must be a finite number >= 0; got {self.shift_equivariance!r}")
        if self.shift_equivariance and not self.translation:
            raise ValueError("shift_equivariance needs translation=True: it trains the shift latents dx, dy")

    @property
    def latent_names(self) -> list[str]:
        return self.geometric_names + [f"z{i + 1}" for i in range(self.latent_dim)]

    def _build_network(self) -> LatentNetwork:
        return InvariantNetwork(
            self._patch_shape(),
            self.latent_dim,
            self.geometric_names,
            self.hidden,
            self.decoder_layers,
            self.encoder,
            self.encoder_hidden,
            self.coordinate_scale,
        )

    def _start_epoch(self, epoch: int, epochs: int) -> None:
        super()._start_epoch(epoch, epochs)
        self._warmup_factor = warmup_factor(epoch, self.rotation_prior_warmup)

    def _wrap_network(self, network: LatentNetwork) -> LatentNetwork:
        if not self.orientation:
            return network
        return OrientedNetwork(network, len(self.geometric_names), self.latent_dim)

    def _penalty_terms(
        self, network: LatentNetwork, x: torch.Tensor, mean: torch.Tensor, noise: torch.Generator
    ) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        if self.equivariance:
            # dx, dy turn with the patch; every other geometric latent (scale, shear) does not.
            invariant = [i for i, name in enumerate(self.latent_names) if name not in ("angle", "dx", "dy")]
            penalty = equivariance_penalty(network, x, mean, invariant, noise)
            terms["penalty_equivariance"] = float(self.equivariance) * penalty.mean()
        if self.shift_equivariance:
            decoder_latents = mean
            if isinstance(network, OrientedNetwork):  # the decoder turns by angle + h(z)
                n_geometric = len(self.geometric_names)
                offset = network.canonical_angle(mean[:, n_geometric:])
                decoder_latents = torch.cat([(mean[:, 0] + offset)[:, None], mean[:, 1:]], dim=1)
            penalty = shift_equivariance_penalty(
                network, x, decoder_latents, mean, self.geometric_names, float(self.translation_prior), noise
            )
            terms["penalty_shift_equivariance"] = float(self.shift_equivariance) * penalty.mean()
        return terms

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
