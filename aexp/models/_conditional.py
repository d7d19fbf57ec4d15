"""Pieces shared by the models that train on a second array aligned with the patches.

The semi-supervised VAE (labels), the conditional VAE (conditions) and the encoder-decoders
(output spectra or patches) all learn from pairs ``(X[i], y[i])``. :class:`PairedVAE` extends
:class:`~aexp.models.base.BaseVAE`'s training loop so that every mini-batch carries the rows of
``y`` that belong to its patches; the rest (normalisation, the KL schedule, the progress bar,
save/load) is the base's.

Also here: checks for class labels and continuous values (with their "unlabelled" markers), an
encoder conditioned on a vector, and a decoder that renders a patch from content latents plus a
condition, either with the coordinate decoder (rotation and shift latents) or with a plain MLP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .base import (
    BaseVAE,
    CoordinateVAE,
    GeometricPriors,
    KLWeight,
    LatentNetwork,
    _as_float_tensor,
    _check_finite,
    check_flags,
    check_int,
    gaussian_kl,
    start_log_var,
)
from .decoders import CoordinateDecoder
from .rvae import SHIFT_SCALE

__all__ = [
    "PairedVAE",
    "GeometricPairedVAE",
    "ConditionalEncoder",
    "ConditionalDecoder",
    "MLPDecoder",
    "ResampledDecoder",
    "RENDERERS",
    "check_class_labels",
    "check_values",
    "geometric_names",
    "latent_priors",
]


def geometric_names(rotation: bool, translation: bool) -> list[str]:
    """Names of the geometric latents, in the order every model encodes them."""
    return (["angle"] if rotation else []) + (["dx", "dy"] if translation else [])


def latent_priors(
    rotation: bool, translation: bool, rotation_prior: float, translation_prior: float
) -> list[tuple[str, slice, float]]:
    """KL groups of ``[angle, dx, dy, z...]`` (geometric ones where switched on), as the rVAE's."""
    priors, first = [], 0
    if rotation:
        priors.append(("kl_angle", slice(0, 1), float(rotation_prior)))
        first = 1
    if translation:
        priors.append(("kl_shift", slice(first, first + 2), float(translation_prior) / SHIFT_SCALE))
        first += 2
    priors.append(("kl_content", slice(first, None), 1.0))
    return priors


def check_class_labels(y: Any, n: int, n_classes: int, *, allow_unlabelled: bool) -> torch.Tensor:
    """Class labels ``y`` (``N`` integers in ``[0, n_classes)``; ``-1`` marks an unlabelled patch
    where allowed) -> int64 tensor ``N``, or ValueError naming the problem."""
    if y is None:
        raise ValueError("y is required: one class label per patch")
    labels = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if labels.ndim != 1 or len(labels) != n:
        raise ValueError(f"y must have shape ({n},), one label per patch of X; got {labels.shape}")
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        if not (
            np.issubdtype(labels.dtype, np.floating)
            and np.all(np.isfinite(labels))
            and np.array_equal(labels, np.round(labels))
        ):
            raise ValueError(f"y must hold integer class labels; got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    low = -1 if allow_unlabelled else 0
    bad = (labels < low) | (labels >= n_classes)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        allowed = f"-1 (unlabelled) or 0..{n_classes - 1}" if allow_unlabelled else f"0..{n_classes - 1}"
        raise ValueError(f"y[{first}] = {labels[first]} is not a class label; allowed: {allowed}")
    return torch.from_numpy(labels)


def check_values(y: Any, n: int, dim: int, *, allow_unlabelled: bool, what: str = "y") -> torch.Tensor:
    """Continuous values ``y`` (``N`` or ``N x dim``; a row of NaN marks an unlabelled patch where
    allowed) -> float32 tensor ``N x dim``, or ValueError naming the problem."""
    if y is None:
        raise ValueError(f"{what} is required: {dim} value(s) per patch")
    values = _as_float_tensor(y, what)
    if values.ndim == 1 and dim == 1:
        values = values[:, None]
    if values.ndim != 2 or tuple(values.shape) != (n, dim):
        raise ValueError(
            f"{what} must have shape ({n}, {dim}) (or ({n},) for one value); got {tuple(values.shape)}"
        )
    missing = torch.isnan(values)
    partly = missing.any(dim=1) & ~missing.all(dim=1)
    bad = torch.isinf(values).any(dim=1) | partly | (missing.any(dim=1) & (not allow_unlabelled))
    if bad.any():
        first = int(torch.nonzero(bad)[0])
        hint = "a whole row of NaN marks an unlabelled patch" if allow_unlabelled else "all must be finite"
        raise ValueError(f"{what} row {first} holds NaN or inf ({hint})")
    return values


class ConditionalEncoder(nn.Module):
    """Patch and condition vector -> mean and log-variance over ``n_latents`` latents.

    ``h = tanh(W x + U c + b) -> tanh(Linear) -> Linear(2 n_latents)``; the patch projection
    ``W x`` is computed once per patch even when the same patch is paired with several conditions.
    Shapes: ``x`` N x C x h x w (or N x F), ``c`` (N*K) x m with ``repeats = K`` -> (N*K) x n_latents.
    """

    def __init__(
        self, in_features: int, condition_dim: int, hidden: int, n_latents: int, initial_log_var: float = -3.0
    ):
        super().__init__()
        self.patch = nn.Linear(in_features, hidden)
        self.condition = nn.Linear(condition_dim, hidden, bias=False)
        self.body = nn.Sequential(
            nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 2 * n_latents)
        )
        start_log_var(self.body, n_latents, initial_log_var)  # narrow start, as in MLPEncoder: see its docstring

    def forward(
        self, x: torch.Tensor, c: torch.Tensor, repeats: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.patch(x.flatten(1))
        if repeats > 1:
            h = h.repeat_interleave(repeats, dim=0)
        mean, log_var = self.body(h + self.condition(c)).chunk(2, dim=-1)
        return mean, log_var


class MLPDecoder(nn.Module):
    """Latents -> raw output of any shape: ``Linear -> tanh -> Linear -> tanh -> Linear``.

    Shapes: ``N x d -> N x *shape``.
    """

    def __init__(self, n_in: int, shape: Sequence[int], hidden: int):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.body = nn.Sequential(
            nn.Linear(n_in, hidden),
            nn.Tanh(),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
            nn.Linear(hidden, int(np.prod(self.shape))),
        )

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.body(latents).view(len(latents), *self.shape)


RENDERERS = ("coordinate", "resample")
"""How a decoder with geometric latents draws: per pixel (:class:`CoordinateDecoder`) or by
resampling an upright patch (:class:`ResampledDecoder`)."""


def transform_grid(
    angle: torch.Tensor | None, shift: torch.Tensor | None, shape: tuple[int, int, int], like: torch.Tensor
) -> torch.Tensor:
    """The ``grid_sample`` grid (``N x h x w x 2``) of the coordinate decoder's transform ``p ->
    R(angle) p + shift`` (see :func:`~aexp.models.decoders.coordinate_grid`); ``angle`` N and
    ``shift`` N x 2 default to 0, ``like`` (N x ...) gives N, dtype and device.

    ``grid_sample``'s frame ``(u, v)`` (u across the columns, v down the rows, both in [-1, 1] with
    ``align_corners=True``) is the coordinate grid's ``(x, y) = (v, -u)``, a quarter turn of it.
    A rotation commutes with that turn, so the matrix is ``R(angle)`` itself, and the shift
    ``(sx, sy)`` becomes ``(-sy, sx)``.
    """
    n = len(like)
    angle = like.new_zeros(n) if angle is None else angle
    shift = like.new_zeros(n, 2) if shift is None else shift
    c, s = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([c, -s, -shift[:, 1]], 1), torch.stack([s, c, shift[:, 0]], 1)], 1)
    return F.affine_grid(theta, [n, *shape], align_corners=True)


class ResampledDecoder(nn.Module):
    """Content latents + angle + shift -> patch: an :class:`MLPDecoder` draws the upright, centred
    patch, which ``grid_sample`` (bilinear, border padding) then turns and moves.

    The same transform as the :class:`CoordinateDecoder` (``out(p) = upright(R(angle) p +
    shift)``) at the cost of one MLP pass per patch instead of one per pixel: the choice where
    a decoder is enumerated over classes on large patches.
    Shapes: ``z`` N x k, ``angle`` N or None, ``shift`` N x 2 or None -> N x C x h x w.
    """

    def __init__(self, shape: tuple[int, int, int], latent_dim: int, hidden: int):
        super().__init__()
        channels, height, width = shape
        self.shape = (int(channels), int(height), int(width))
        self.upright = MLPDecoder(latent_dim, self.shape, hidden)

    def forward(
        self, z: torch.Tensor, angle: torch.Tensor | None = None, shift: torch.Tensor | None = None
    ) -> torch.Tensor:
        image = self.upright(z)
        if (angle is None and shift is None) or not len(z):  # affine_grid refuses an empty batch
            return image
        grid = transform_grid(angle, shift, self.shape, z)
        return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


class ConditionalDecoder(nn.Module):
    """``[geometric latents, content z]`` and condition ``c`` -> raw patch ``N x C x h x w``.

    With geometric latents the patch is drawn by a :class:`CoordinateDecoder` (``renderer=
    "coordinate"``) or a :class:`ResampledDecoder` (``"resample"``) whose content input is ``[z, c]``
    (grid turned by ``angle``, moved by ``0.1 (dx, dy)``, as in the rVAE); without them an
    :class:`MLPDecoder` maps ``[z, c]`` to the pixels, which costs far less per patch.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        latent_dim: int,
        condition_dim: int,
        rotation: bool,
        translation: bool,
        hidden: int,
        layers: int,
        renderer: str = "coordinate",
    ):
        super().__init__()
        self.rotation, self.translation = rotation, translation
        self.n_geometric = len(geometric_names(rotation, translation))
        self.render: nn.Module
        if self.n_geometric and renderer == "resample":
            self.render = ResampledDecoder(shape, latent_dim + condition_dim, hidden)
        elif self.n_geometric:
            self.render = CoordinateDecoder(shape, latent_dim + condition_dim, hidden, layers)
        else:
            self.render = MLPDecoder(latent_dim + condition_dim, shape, hidden)

    def forward(self, latents: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        content = torch.cat([latents[:, self.n_geometric :], c], dim=1)
        if not self.n_geometric:
            return self.render(content)
        angle = latents[:, 0] if self.rotation else None
        first = int(self.rotation)
        shift = SHIFT_SCALE * latents[:, first : first + 2] if self.translation else None
        return self.render(content, angle=angle, shift=shift)


class PairedNetwork(LatentNetwork):
    """The network of a :class:`PairedVAE`: an ``encoder`` and a ``decoder`` that the model calls
    with the condition its subclass defines (``decode`` without one is not defined)."""

    encoder: nn.Module
    decoder: nn.Module


class PairedVAE(BaseVAE):
    """A :class:`BaseVAE` trained on patches ``X`` and an aligned array ``y``.

    Subclasses implement ``_check_targets(y, n) -> tensor`` (validate and prepare ``y``, one row
    per patch) and ``_paired_loss_terms(network, x, y, noise) -> dict`` (batch means; names
    starting ``kl_`` are multiplied by the epoch's KL weight, every other term is added as is,
    ``reconstruction`` must be one of them).
    """

    network_: PairedNetwork = field(init=False, repr=False)

    def _check_targets(self, y: Any, n: int) -> torch.Tensor:
        raise NotImplementedError

    def _paired_loss_terms(
        self, network: nn.Module, x: torch.Tensor, y: torch.Tensor, noise: torch.Generator
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _after_fit(self, targets: torch.Tensor) -> None:
        """Store what the model learned about ``y`` (e.g. its scaling, kept in ``_fit_context``
        by ``_check_targets``) in ``network_``."""

    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        epochs: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
        seed: int | None = None,
        kl_weight: KLWeight = 1.0,
        progress: bool = True,
    ) -> PairedVAE:
        """Train on patches ``X`` and their ``y`` (see the subclass); otherwise as
        :meth:`BaseVAE.fit`."""
        self._validate_hyperparameters()
        n = len(self._check_patches(X, min_samples=2))
        # What _check_targets learns about y (its scaling, ...) lives in _fit_context until
        # _after_fit moves it into the network; the base loop hands each batch's row indices to
        # _train_epoch, and the targets ride along in _fit_targets. Neither outlives the call.
        self._fit_context: dict[str, Any] = {}
        try:
            targets = self._check_targets(y, n)
            self._fit_targets = targets
            super().fit(
                X,
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                seed=seed,
                kl_weight=kl_weight,
                progress=progress,
            )
            self._after_fit(targets)
        finally:
            del self._fit_context
            self.__dict__.pop("_fit_targets", None)
        return self

    def _train_epoch(self, network, optimiser, data, order, batch_size, kl_weight, noise) -> dict[str, float]:
        targets = self._fit_targets.to(data.device)
        sums: dict[str, torch.Tensor] = {}
        for first in range(0, len(data), batch_size):
            rows = order[first : first + batch_size]
            terms = self._paired_loss_terms(network, data[rows], targets[rows], noise)
            kl = sum(v for k, v in terms.items() if k.startswith("kl_"))
            rest = sum(v for k, v in terms.items() if not k.startswith("kl_"))
            terms["loss"] = rest + kl_weight * kl
            optimiser.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimiser.step()
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value.detach() * len(rows)
        return {name: float(total) / len(data) for name, total in sums.items()}

    def _elbo_rows(self, network, x, c, noise, repeats=1) -> dict[str, torch.Tensor]:
        """Reconstruction and KL terms per row for patches ``x`` (``N``) paired with conditions
        ``c`` (``N * repeats x m``, ``repeats`` consecutive rows per patch)."""
        mean, log_var = network.encoder(x, c, repeats)
        eps = torch.randn(mean.shape, generator=noise, device=mean.device, dtype=mean.dtype)
        raw = network.decoder(mean + eps * torch.exp(0.5 * log_var), c)
        target = x.repeat_interleave(repeats, dim=0) if repeats > 1 else x
        rows = {"reconstruction": self._reconstruction(raw, target)}
        for name, columns, prior_std in self._latent_priors():
            rows[name] = gaussian_kl(mean[:, columns], log_var[:, columns], prior_std)
        return rows

    def _decoder_latents(self, z: Any) -> torch.Tensor:
        """``z`` -> ``n x n_latents``: content-only rows (``n x latent_dim``) get zero geometric
        latents; full rows pass."""
        latents = _as_float_tensor(z, "z")
        if latents.ndim != 2:
            raise ValueError(f"z must be a 2-d array (n, d); got shape {tuple(latents.shape)}")
        _check_finite(latents, "z")
        n_geometric = self.n_latents - self.latent_dim
        if latents.shape[1] == self.latent_dim and n_geometric:
            return torch.cat([latents.new_zeros(len(latents), n_geometric), latents], dim=1)
        if latents.shape[1] == self.n_latents:
            return latents
        raise ValueError(
            f"z must have {self.latent_dim} columns (content only) or {self.n_latents} "
            f"({', '.join(self.latent_names)}); got shape {tuple(latents.shape)}"
        )

    def _decode_conditioned(self, latents: torch.Tensor, c: torch.Tensor, batch_size: int) -> np.ndarray:
        """Decoder means for ``latents`` (``n x n_latents``) under conditions ``c`` (``n x m``), in
        the data's units: ``n x C x h x w`` (``n x h x w`` for 2-d ``input_shape``)."""
        batch_size = check_int("batch_size", batch_size, 1)
        out = torch.empty(len(latents), *self._patch_shape())
        with torch.inference_mode():
            for first in range(0, len(latents), batch_size):
                rows = slice(first, first + batch_size)
                raw = self.network_.decoder(latents[rows].to(self.device), c[rows].to(self.device))
                out[rows] = self._denormalise(self._mean_image(raw)).cpu()
        if len(tuple(self.input_shape)) == 2:
            out = out[:, 0]
        return out.numpy()

    def _loss_terms(self, network, x, noise):
        raise TypeError(f"{type(self).__name__} trains on pairs (X, y); call fit(X, y)")


class GeometricPairedVAE(PairedVAE, CoordinateVAE, GeometricPriors):
    """A :class:`PairedVAE` whose latents are ``[angle, dx, dy, z...]`` like the rVAE's.

    The geometric latents are those switched on by ``rotation`` and ``translation``, each with the
    rVAE's prior (``rotation_prior``, ``translation_prior``: see
    :class:`~aexp.models.base.GeometricPriors`); then ``latent_dim`` content latents with a unit
    prior. The decoder's sizes are :class:`~aexp.models.base.CoordinateVAE`'s, with a wider
    default ``hidden`` (without geometric latents the decoder is an MLP of that width).

    Args:
        rotation, translation: add ``angle`` / ``(dx, dy)`` latents; the decoder turns / moves
            what it draws.
    """

    hidden: int = 128
    rotation: bool = False
    translation: bool = False

    def _validate_hyperparameters(self) -> None:
        super()._validate_hyperparameters()
        check_flags(self, "rotation", "translation")

    @property
    def geometric_names(self) -> list[str]:
        return geometric_names(self.rotation, self.translation)

    @property
    def latent_names(self) -> list[str]:
        return self.geometric_names + [f"z{i + 1}" for i in range(self.latent_dim)]

    def _latent_priors(self) -> list[tuple[str, slice, float]]:
        return latent_priors(self.rotation, self.translation, self.rotation_prior, self.translation_prior)
