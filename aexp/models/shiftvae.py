"""Shift-VAE for 1-D spectra: a shift latent of its own, so the content latents describe the
shape of the spectrum and not where along the axis it sits.

The encoder maps a spectrum to a diagonal Gaussian over ``[shift, z_1..z_k]``. The decoder draws
the spectrum on a coordinate grid ``t`` of ``L`` points in ``[-1, 1]`` moved by the shift:

    out(t) = MLP(tanh(w (t + shift) + b + V z)),     one output per channel

so a positive ``shift`` moves every feature of the decoded spectrum towards lower channel
indices by ``shift (L - 1) / 2`` channels. Loss per spectrum:

    reconstruction + w(epoch) [KL(z || N(0, 1)) + KL(shift || N(0, shift_prior^2))]

The shift is recovered up to a global offset and sign is fixed by the convention above (a
different "canonical" position of the spectrum's shape is an offset).
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral
from typing import Any

import numpy as np
import torch
from torch import nn

from .base import (
    CoordinateVAE,
    LatentNetwork,
    MLPEncoder,
    _as_float_tensor,
    _check_finite,
    check_int,
    check_positive,
)

__all__ = ["ShiftVAE", "ShiftDecoder1d"]


class ShiftDecoder1d(nn.Module):
    """Content latents + shift -> spectrum, drawn on a shifted 1-D coordinate grid.

    ``out(t) = L_out(tanh(L_m(... tanh(w (t + shift) + b + V z))))`` for ``t`` in
    ``linspace(-1, 1, length)``, ``m = layers`` hidden ``H x H`` layers.
    Shapes: ``z`` N x k, ``shift`` N -> N x C x length.

    Example:
        >>> ShiftDecoder1d(1, 64, latent_dim=2)(torch.zeros(3, 2), torch.zeros(3)).shape
        torch.Size([3, 1, 64])
    """

    grid: torch.Tensor  # buffer, registered in __init__

    def __init__(self, channels: int, length: int, latent_dim: int, hidden: int = 32, layers: int = 2):
        super().__init__()
        self.register_buffer("grid", torch.linspace(-1.0, 1.0, length), persistent=False)
        self.coordinate = nn.Linear(1, hidden)
        self.content = nn.Linear(latent_dim, hidden, bias=False)
        self.hidden = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.out = nn.Linear(hidden, channels)

    def forward(self, z: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        t = self.grid[None, :] + shift[:, None]  # N x L
        bias = self.coordinate.bias + self.content(z)  # N x H: one per spectrum
        h = torch.tanh(t[..., None] * self.coordinate.weight[:, 0] + bias[:, None, :])
        for layer in self.hidden:
            h = torch.tanh(layer(h))
        return self.out(h).transpose(1, 2)


class _ShiftVAENetwork(LatentNetwork):
    def __init__(self, channels, length, latent_dim, hidden, decoder_layers, encoder_hidden):
        super().__init__()
        self.encoder = MLPEncoder(channels * length, encoder_hidden, 1 + latent_dim)
        self.decoder = ShiftDecoder1d(channels, length, latent_dim, hidden, decoder_layers)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(latents[:, 1:], latents[:, 0]).unsqueeze(2)  # N x C x 1 x L


class ShiftVAE(CoordinateVAE):
    """Shift-invariant VAE for 1-D spectra (see the module docstring).

    Encoded columns: ``[shift, z_1..z_k]``; ``shift`` is in grid units (the spectrum spans 2).

    Args:
        input_shape: ``(L,)`` for single-channel spectra or ``(C, L)``.
        latent_dim: number of content latents ``k``.
        hidden: width of the decoder's per-point layers.
        decoder_layers: hidden ``hidden x hidden`` tanh layers after the decoder's first layer.
        encoder_hidden: width of the encoder's two hidden layers.
        shift_prior: standard deviation of the Gaussian prior on the shift, in grid units; it
            should cover the shifts expected in the data.
        likelihood, noise_std, device: see :class:`~aexp.models.base.BaseVAE`.

    Example:
        >>> m = ShiftVAE(input_shape=(128,), latent_dim=2).fit(spectra, epochs=30)
        >>> m.encode(spectra)[:, 0]            # the shift of each spectrum
    """

    shift_prior: float = 0.3

    def _patch_shape(self) -> tuple[int, int, int]:
        """``input_shape`` as ``(C, 1, L)``: a spectrum is a one-row patch."""
        shape = self.input_shape
        if (
            not isinstance(shape, (Sequence, np.ndarray))
            or isinstance(shape, str)
            or len(shape) not in (1, 2)
            or any(isinstance(s, bool) or not isinstance(s, Integral) or s < 1 for s in shape)
        ):
            raise ValueError(f"input_shape must be (L,) or (C, L) of positive integers; got {shape!r}")
        dims = tuple(int(s) for s in shape)
        return (1, 1, dims[0]) if len(dims) == 1 else (dims[0], 1, dims[1])

    def _validate_hyperparameters(self) -> None:
        super()._validate_hyperparameters()
        check_positive("shift_prior", self.shift_prior)

    @property
    def latent_names(self) -> list[str]:
        return ["shift"] + [f"z{i + 1}" for i in range(self.latent_dim)]

    def _latent_priors(self) -> list[tuple[str, slice, float]]:
        return [("kl_shift", slice(0, 1), float(self.shift_prior)), ("kl_content", slice(1, None), 1.0)]

    def _build_network(self) -> _ShiftVAENetwork:
        channels, _, length = self._patch_shape()
        return _ShiftVAENetwork(
            channels, length, self.latent_dim, self.hidden, self.decoder_layers, self.encoder_hidden
        )

    def decode(self, z: Any, *, batch_size: int = 1024) -> np.ndarray:
        """Mean spectra for latents ``z`` (``n x k`` content only, shift 0; or ``n x (1 + k)``), in
        the units of the training data: ``n x L`` or ``n x C x L``."""
        self._check_fitted()
        batch_size = check_int("batch_size", batch_size, 1)
        latents = _as_float_tensor(z, "z")
        if latents.ndim != 2 or latents.shape[1] not in (self.latent_dim, self.n_latents):
            raise ValueError(
                f"z must have shape (n, {self.latent_dim}) (content only) or (n, {self.n_latents}) "
                f"({', '.join(self.latent_names)}); got {tuple(latents.shape)}"
            )
        _check_finite(latents, "z")
        if latents.shape[1] == self.latent_dim:
            latents = torch.cat([latents.new_zeros(len(latents), 1), latents], dim=1)
        out = torch.empty(len(latents), *self._patch_shape())
        with torch.inference_mode():
            for first in range(0, len(latents), batch_size):
                raw = self.network_.decode(latents[first : first + batch_size].to(self.device))
                out[first : first + batch_size] = self._denormalise(self._mean_image(raw)).cpu()
        return out.reshape(len(latents), *(int(s) for s in self.input_shape)).numpy()
