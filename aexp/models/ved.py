"""Variational encoder-decoder (VED): one kind of data in, another out, through a small code.

``im2spec`` reads a patch and draws the spectrum measured there; ``spec2im`` goes the other way.
Both are one model: an encoder ``q(z | input)`` (an MLP over the flattened input) and a decoder
``p(output | z)`` (an MLP to the flattened output), trained on pairs with the loss per pair

    reconstruction(output | z) + w(epoch) KL(q(z | input) || N(0, 1))

Inputs and outputs are each scaled per channel to [0, 1] by the minimum and maximum seen in
``fit``; :meth:`VED.decode` and :meth:`VED.predict` answer in the output's units. The code
(:meth:`VED.encode`) is a low-dimensional description of the input that is predictive of the
output, and can feed the surrogate model like any other embedding.

Shapes: a spectrum is ``(L,)``, a patch ``(h, w)`` or ``(C, h, w)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import field
from numbers import Integral
from typing import Any

import numpy as np
import torch

from ._conditional import MLPDecoder, PairedNetwork, PairedVAE
from .base import MLPEncoder, _as_float_tensor, _check_finite, check_int, gaussian_kl

__all__ = ["VED", "im2spec", "spec2im"]


def _as_chw(shape: Any, name: str) -> tuple[int, int, int]:
    """``(L,)``, ``(h, w)`` or ``(C, h, w)`` -> ``(C, h, w)`` (a spectrum is ``(1, 1, L)``)."""
    if (
        not isinstance(shape, (Sequence, np.ndarray))
        or isinstance(shape, str)
        or len(shape) not in (1, 2, 3)
        or any(isinstance(s, bool) or not isinstance(s, Integral) or s < 1 for s in shape)
    ):
        raise ValueError(f"{name} must be (L,), (h, w) or (C, h, w) of positive integers; got {shape!r}")
    dims = [1, 1, *(int(s) for s in shape)][-3:]
    return (dims[0], dims[1], dims[2])


class _VEDNetwork(PairedNetwork):
    output_min: torch.Tensor  # buffers, registered in __init__
    output_range: torch.Tensor

    def __init__(self, in_shape, out_shape, latent_dim, hidden, encoder_hidden):
        super().__init__()
        self.encoder = MLPEncoder(int(np.prod(in_shape)), encoder_hidden, latent_dim)
        self.decoder = MLPDecoder(latent_dim, out_shape, hidden)
        # Per-channel scaling of the outputs; saved with the weights.
        self.register_buffer("output_min", torch.zeros(out_shape[0]))
        self.register_buffer("output_range", torch.ones(out_shape[0]))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x)


class VED(PairedVAE):
    """Variational encoder-decoder from ``input_shape`` to ``output_shape`` (module docstring).

    Encoded columns: ``[z_1..z_k]``. ``fit(X, y)`` takes inputs ``X`` (``N x *input_shape``) and
    outputs ``y`` (``N x *output_shape``).

    Args:
        input_shape: ``(L,)`` (spectrum), ``(h, w)`` or ``(C, h, w)`` (patch).
        output_shape: the same choices, for the output.
        latent_dim: size ``k`` of the code.
        hidden: width of the decoder's two hidden layers.
        encoder_hidden: width of the encoder's two hidden layers.
        likelihood, noise_std, device: see :class:`~aexp.models.base.BaseVAE`; they apply to the
            output, scaled to [0, 1].

    Example:
        >>> m = im2spec(patch_shape=(16, 16), spectrum_length=64).fit(patches, spectra, epochs=30)
        >>> m.predict(new_patches).shape
        (100, 64)
    """

    network_: _VEDNetwork = field(init=False, repr=False)

    output_shape: Sequence[int] = field(kw_only=False)
    hidden: int = 128
    encoder_hidden: int = 128

    def _patch_shape(self) -> tuple[int, int, int]:
        return _as_chw(self.input_shape, "input_shape")

    def _validate_hyperparameters(self) -> None:
        super()._validate_hyperparameters()
        _as_chw(self.output_shape, "output_shape")
        check_int("hidden", self.hidden, 1)
        check_int("encoder_hidden", self.encoder_hidden, 1)

    @property
    def latent_names(self) -> list[str]:
        return [f"z{i + 1}" for i in range(self.latent_dim)]

    def _latent_priors(self) -> list[tuple[str, slice, float]]:
        return [("kl_content", slice(0, None), 1.0)]

    def _build_network(self) -> _VEDNetwork:
        return _VEDNetwork(
            self._patch_shape(),
            _as_chw(self.output_shape, "output_shape"),
            self.latent_dim,
            self.hidden,
            self.encoder_hidden,
        )

    # ----------------------------------------------------------------- outputs

    def _check_targets(self, y: Any, n: int) -> torch.Tensor:
        if y is None:
            raise ValueError(f"y is required: one output of shape {tuple(self.output_shape)} per input")
        out = _as_float_tensor(y, "y")
        expected = (n, *(int(s) for s in self.output_shape))
        if tuple(out.shape) != expected:
            raise ValueError(f"y must have shape {expected}, one output per row of X; got {tuple(out.shape)}")
        _check_finite(out, "y")
        out = out.reshape(n, *_as_chw(self.output_shape, "output_shape"))
        lo = out.amin(dim=(0, 2, 3))
        span = out.amax(dim=(0, 2, 3)) - lo
        span = torch.where(span > 0, span, torch.ones_like(span))
        self._fit_context["output_scaling"] = (lo, span)
        return (out - lo.view(1, -1, 1, 1)) / span.view(1, -1, 1, 1)

    def _after_fit(self, targets: torch.Tensor) -> None:
        lo, span = self._fit_context["output_scaling"]
        self.network_.output_min.copy_(lo)
        self.network_.output_range.copy_(span)

    def _paired_loss_terms(self, network, x, y, noise) -> dict[str, torch.Tensor]:
        mean, log_var = network.encoder(x)
        eps = torch.randn(mean.shape, generator=noise, device=mean.device, dtype=mean.dtype)
        raw = network.decoder(mean + eps * torch.exp(0.5 * log_var))
        rows = {"reconstruction": self._reconstruction(raw, y)}
        rows["kl_content"] = gaussian_kl(mean, log_var)
        return {name: value.mean() for name, value in rows.items()}

    # ----------------------------------------------------------------- use

    def decode(self, z: Any, *, batch_size: int = 1024) -> np.ndarray:
        """Mean outputs for codes ``z`` (``n x k``), in the output's units: ``n x *output_shape``."""
        self._check_fitted()
        batch_size = check_int("batch_size", batch_size, 1)
        latents = _as_float_tensor(z, "z")
        if latents.ndim != 2 or latents.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (n, {self.latent_dim}); got {tuple(latents.shape)}")
        _check_finite(latents, "z")
        lo = self.network_.output_min.view(1, -1, 1, 1)
        span = self.network_.output_range.view(1, -1, 1, 1)
        out = torch.empty(len(latents), *_as_chw(self.output_shape, "output_shape"))
        with torch.inference_mode():
            for first in range(0, len(latents), batch_size):
                raw = self.network_.decoder(latents[first : first + batch_size].to(self.device))
                out[first : first + batch_size] = (self._mean_image(raw) * span + lo).cpu()
        return out.reshape(len(latents), *(int(s) for s in self.output_shape)).numpy()

    def predict(self, X: Any, *, batch_size: int = 1024) -> np.ndarray:
        """The output drawn from each input's code mean: ``N x *output_shape``."""
        return self.decode(self.encode(X, batch_size=batch_size), batch_size=batch_size)


def im2spec(patch_shape: Sequence[int], spectrum_length: int, **params: Any) -> VED:
    """A :class:`VED` from patches ``(h, w)`` / ``(C, h, w)`` to spectra of ``spectrum_length``."""
    if len(tuple(patch_shape)) not in (2, 3):
        raise ValueError(f"patch_shape must be (h, w) or (C, h, w); got {patch_shape!r}")
    return VED(input_shape=tuple(patch_shape), output_shape=(spectrum_length,), **params)


def spec2im(spectrum_length: int, patch_shape: Sequence[int], **params: Any) -> VED:
    """A :class:`VED` from spectra of ``spectrum_length`` to patches ``(h, w)`` / ``(C, h, w)``."""
    if len(tuple(patch_shape)) not in (2, 3):
        raise ValueError(f"patch_shape must be (h, w) or (C, h, w); got {patch_shape!r}")
    return VED(input_shape=(spectrum_length,), output_shape=tuple(patch_shape), **params)
