"""Conditional VAE (cVAE): encoder and decoder both see a known condition of each patch.

The condition ``c`` is a class (one-hot of ``n`` classes) or a vector of continuous covariates
(standardised by their mean and standard deviation in ``fit``). The encoder is ``q(z | x, c)``,
the decoder ``p(x | z, c)``; the loss per patch is

    reconstruction(x | z, c) + w(epoch) KL(q(z | x, c) || N(0, 1))

Because the decoder is told ``c``, the latents ``z`` need not carry it: they describe what varies
*within* a condition, and decoding one ``z`` under different conditions draws "the same" patch
as each class (or at each covariate value). With ``rotation``/``translation`` the decoder is the
rVAE's coordinate decoder and the encoder adds ``angle``/``dx, dy`` latents.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from ._conditional import (
    ConditionalDecoder,
    ConditionalEncoder,
    GeometricPairedVAE,
    PairedNetwork,
    check_class_labels,
    check_values,
    geometric_names,
)
from .base import check_int

__all__ = ["CVAE"]

CONDITIONS = ("class", "continuous")


class _CVAENetwork(PairedNetwork):
    condition_mean: torch.Tensor  # buffers, registered in __init__
    condition_std: torch.Tensor

    def __init__(
        self, shape, latent_dim, condition_dim, rotation, translation, hidden, decoder_layers, encoder_hidden
    ):
        super().__init__()
        n_geometric = len(geometric_names(rotation, translation))
        self.encoder = ConditionalEncoder(
            int(np.prod(shape)), condition_dim, encoder_hidden, n_geometric + latent_dim
        )
        self.decoder = ConditionalDecoder(
            shape, latent_dim, condition_dim, rotation, translation, hidden, decoder_layers
        )
        # Scaling of continuous covariates; saved with the weights.
        self.register_buffer("condition_mean", torch.zeros(condition_dim))
        self.register_buffer("condition_std", torch.ones(condition_dim))


class CVAE(GeometricPairedVAE):
    """Conditional VAE (see the module docstring).

    Encoded columns: ``[angle, dx, dy, z_1..z_k]`` (geometric ones only where switched on).
    :meth:`encode` and :meth:`decode` take the condition ``y`` of every row.

    Args:
        input_shape: ``(h, w)`` or ``(C, h, w)``.
        latent_dim: number of content latents ``k``.
        condition: ``"class"`` (``y``: ``N`` ints in ``[0, condition_dim)``) or ``"continuous"``
            (``y``: ``N`` or ``N x condition_dim`` finite floats).
        condition_dim: number of classes, or of covariates.
        rotation, translation: add ``angle`` / ``(dx, dy)`` latents (coordinate decoder).
        hidden: width of the decoder's layers.
        decoder_layers: hidden layers of the coordinate decoder (with geometric latents).
        encoder_hidden: width of the encoder's hidden layers.
        rotation_prior, translation_prior: as in :class:`~aexp.models.rvae.RVAE`.
        likelihood, noise_std, device: see :class:`~aexp.models.base.BaseVAE`.

    Example:
        >>> m = CVAE(input_shape=(16, 16), condition_dim=2).fit(X, labels, epochs=20)
        >>> m.decode(np.zeros((2, 2)), [0, 1])     # one latent point drawn as class 0 and 1
    """

    network_: _CVAENetwork = field(init=False, repr=False)

    condition: str = "class"
    condition_dim: int = 2

    def _validate_hyperparameters(self) -> None:
        super()._validate_hyperparameters()
        if self.condition not in CONDITIONS:
            raise ValueError(f"condition must be one of {CONDITIONS}; got {self.condition!r}")
        check_int("condition_dim", self.condition_dim, 2 if self.condition == "class" else 1)

    def _build_network(self) -> _CVAENetwork:
        return _CVAENetwork(
            self._patch_shape(),
            self.latent_dim,
            self.condition_dim,
            self.rotation,
            self.translation,
            self.hidden,
            self.decoder_layers,
            self.encoder_hidden,
        )

    # ----------------------------------------------------------------- conditions

    def _check_targets(self, y: Any, n: int) -> torch.Tensor:
        if self.condition == "class":
            labels = check_class_labels(y, n, self.condition_dim, allow_unlabelled=False)
            return F.one_hot(labels, self.condition_dim).to(torch.float32)
        values = check_values(y, n, self.condition_dim, allow_unlabelled=False)
        std = values.std(dim=0)
        mean, std = values.mean(dim=0), torch.where(std > 0, std, torch.ones_like(std))
        self._fit_context["condition_scaling"] = (mean, std)
        return (values - mean) / std

    def _after_fit(self, targets: torch.Tensor) -> None:
        if self.condition == "continuous":
            mean, std = self._fit_context["condition_scaling"]
            self.network_.condition_mean.copy_(mean)
            self.network_.condition_std.copy_(std)

    def _conditions(self, y: Any, n: int) -> torch.Tensor:
        """``y`` of ``n`` rows -> the network's condition vectors ``n x condition_dim``."""
        if self.condition == "class":
            labels = check_class_labels(y, n, self.condition_dim, allow_unlabelled=False)
            return F.one_hot(labels, self.condition_dim).to(torch.float32)
        values = check_values(y, n, self.condition_dim, allow_unlabelled=False)
        return (values - self.network_.condition_mean.cpu()) / self.network_.condition_std.cpu()

    def _paired_loss_terms(self, network, x, y, noise) -> dict[str, torch.Tensor]:
        return {name: rows.mean() for name, rows in self._elbo_rows(network, x, y, noise).items()}

    # ----------------------------------------------------------------- use

    def encode(self, X: Any, y: Any = None, *, batch_size: int = 1024, refine: int = 0,
               refine_lr: float = 3e-3) -> np.ndarray:
        """Latent means of patches ``X`` under their conditions ``y``: ``N x n_latents`` float32,
        columns as in :attr:`latent_names`. ``refine`` must be 0 (no refinement of paired latents)."""
        self._check_fitted()
        batch_size = check_int("batch_size", batch_size, 1)
        self._check_refine(refine, refine_lr)
        x = self._check_patches(X, min_samples=0)
        c = self._conditions(y, len(x))
        out = torch.empty(len(x), self.n_latents)
        with torch.inference_mode():
            for first in range(0, len(x), batch_size):
                rows = slice(first, first + batch_size)
                batch = self._normalise(x[rows].to(self.device))
                out[rows] = self.network_.encoder(batch, c[rows].to(self.device))[0].cpu()
        return out.numpy()

    def decode(self, z: Any, y: Any = None, *, batch_size: int = 1024) -> np.ndarray:
        """Mean patches for latents ``z`` (``n x k`` content only, or ``n x n_latents``) under
        conditions ``y``: ``n x C x h x w`` (``n x h x w`` for 2-d ``input_shape``)."""
        self._check_fitted()
        latents = self._decoder_latents(z)
        return self._decode_conditioned(latents, self._conditions(y, len(latents)), batch_size)
