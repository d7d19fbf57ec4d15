"""Joint VAEs: a discrete class latent next to the continuous ones (jVAE, and jrVAE with rotation).

The encoder gives a diagonal Gaussian over ``[geometric..., z_1..z_k]`` and a classifier gives
``q(y | x)`` over ``n_classes`` classes; the decoder draws the patch from ``z`` and the class
(one-hot, fed to the coordinate decoder's content input next to ``z``). Two ways to train the
discrete part:

* ``discrete="gumbel"``: one decoder pass on a Gumbel-softmax sample of ``y`` whose temperature
  falls geometrically from ``temperature[0]`` to ``temperature[1]`` over the epochs;
* ``discrete="enumerate"``: the exact expectation ``sum_y q(y | x) reconstruction(x | z, y)``,
  one decoder pass per class (``n_classes`` times the cost).

Loss per patch, with ``KL_y = KL(q(y | x) || uniform)``:

    reconstruction + w(epoch) * (KL of the continuous latents) + gamma * |KL_y - C(epoch)|
                   + balance_gamma * KL(mean of q(y | x) over the batch || uniform)

where the capacity ``C`` grows linearly from 0 to ``log(n_classes)`` over ``capacity_epochs``
(capacity annealing: the classes are forced into use gradually, which keeps the model from
putting everything in ``z``); the last term keeps all classes in use, since confident
assignments of every patch to one class would meet the capacity too. :meth:`encode` returns the continuous means followed by the class
probabilities; :meth:`predict` the most likely class.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .base import (
    CoordinateDecoder,
    LatentNetwork,
    PatchVAE,
    check_int,
    check_positive,
    gaussian_kl,
    grid_transform,
    make_encoder,
)
from .rvae import RotationLatents

__all__ = ["JVAE", "JRVAE", "DISCRETE_MODES"]

DISCRETE_MODES = ("gumbel", "enumerate")


class _JointNetwork(LatentNetwork):
    """Encoder + classifier + coordinate decoder fed ``[z, class weights]``."""

    def __init__(self, shape, latent_dim, n_classes, geometric, hidden, decoder_layers, encoder, encoder_hidden):
        super().__init__()
        self.geometric = tuple(geometric)
        self.n_classes = n_classes
        channels, height, width = shape
        with warnings.catch_warnings():  # a jVAE with latent_dim 0 has an encoder with no outputs
            warnings.filterwarnings("ignore", "Initializing zero-element tensors")
            self.encoder = make_encoder(encoder, shape, encoder_hidden, len(self.geometric) + latent_dim)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * height * width, encoder_hidden),
            nn.Tanh(),
            nn.Linear(encoder_hidden, encoder_hidden),
            nn.Tanh(),
            nn.Linear(encoder_hidden, n_classes),
        )
        self.decoder = CoordinateDecoder(shape, latent_dim + n_classes, hidden, decoder_layers)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``N x n_classes``."""
        return self.classifier(x)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """``latents``: ``N x (geometric + k + n_classes)``, class weights last."""
        transform = grid_transform(latents, self.geometric)
        return self.decoder(latents[:, len(self.geometric) :], **transform)


class JVAE(PatchVAE):
    """VAE with a discrete class latent; see the module docstring.

    Encoded columns: ``[z_1..z_k, p_class1..p_classK]`` (``p`` = ``q(y | x)``).

    Args:
        input_shape: ``(h, w)`` or ``(C, h, w)``.
        latent_dim: continuous content latents ``k`` (0 allowed: the class is then the only
            content, which forces the classes to carry what tells patches apart).
        n_classes: classes of the discrete latent.
        discrete: ``"gumbel"`` or ``"enumerate"``.
        temperature: ``(start, end)`` of the Gumbel-softmax temperature schedule.
        capacity_epochs: epochs over which the class capacity grows to ``log(n_classes)``.
        capacity_gamma: weight of the capacity penalty.
        balance_gamma: weight of the class-usage penalty (0 turns it off).
        hidden, decoder_layers, encoder, encoder_hidden: as :class:`~aexp.models.vae.VAE`.
        likelihood, noise_std, device: see :class:`~aexp.models.base.BaseVAE`.

    Example:
        >>> m = JVAE(input_shape=(24, 24), n_classes=4).fit(cards.images, epochs=30)
        >>> m.predict(cards.images)[:3]
        array([2, 2, 2])
    """

    _min_latent_dim = 0
    network_: _JointNetwork = field(init=False, repr=False)

    n_classes: int = 2
    discrete: str = "gumbel"
    temperature: Sequence[float] = (1.0, 0.67)
    capacity_epochs: int = 10
    capacity_gamma: float = 50.0
    balance_gamma: float = 200.0

    # ----------------------------------------------------------------- hyper-parameters

    def _validate_hyperparameters(self) -> None:
        super()._validate_hyperparameters()
        check_int("n_classes", self.n_classes, 2)
        if self.discrete not in DISCRETE_MODES:
            raise ValueError(f"discrete must be one of {DISCRETE_MODES}; got {self.discrete!r}")
        temps = self.temperature
        if isinstance(temps, (str, bytes)) or not isinstance(temps, (Sequence, np.ndarray)) or len(temps) != 2:
            raise ValueError(f"temperature must be a pair (start, end); got {temps!r}")
        check_positive("temperature start", temps[0])
        check_positive("temperature end", temps[1])
        check_int("capacity_epochs", self.capacity_epochs, 0)
        check_positive("capacity_gamma", self.capacity_gamma)
        if isinstance(self.balance_gamma, bool) or not isinstance(self.balance_gamma, (int, float)) or not (
            0 <= self.balance_gamma < math.inf
        ):
            raise ValueError(f"balance_gamma must be a finite number >= 0; got {self.balance_gamma!r}")

    @property
    def geometric_names(self) -> list[str]:
        return []

    @property
    def latent_names(self) -> list[str]:
        content = [f"z{i + 1}" for i in range(self.latent_dim)]
        return self.geometric_names + content + [f"p_class{k + 1}" for k in range(self.n_classes)]

    def _latent_priors(self) -> list[tuple[str, slice, float]]:
        return [("kl_content", slice(len(self.geometric_names), None), 1.0)]

    def _build_network(self) -> LatentNetwork:
        return _JointNetwork(
            self._patch_shape(), self.latent_dim, self.n_classes, self.geometric_names, self.hidden,
            self.decoder_layers, self.encoder, self.encoder_hidden,
        )

    # ----------------------------------------------------------------- training

    def _start_epoch(self, epoch: int, epochs: int) -> None:
        start, end = (float(t) for t in self.temperature)
        progress = epoch / max(epochs - 1, 1)
        self._temperature = start * (end / start) ** progress
        ramp = 1.0 if self.capacity_epochs == 0 else min(1.0, epoch / self.capacity_epochs)
        self._capacity = ramp * math.log(self.n_classes)

    def _loss_terms(self, network: LatentNetwork, x: torch.Tensor, noise: torch.Generator) -> dict[str, torch.Tensor]:
        if not isinstance(network, _JointNetwork):  # the network _build_network made, classifier included
            raise TypeError(f"{type(self).__name__} trains a _JointNetwork; got {type(network).__name__}")
        mean, log_var = network.encode(x)
        eps = torch.randn(mean.shape, generator=noise, device=mean.device, dtype=mean.dtype)
        sample = mean + eps * torch.exp(0.5 * log_var)
        logits = network.classify(x)
        log_q = F.log_softmax(logits, dim=1)
        q = log_q.exp()
        if self.discrete == "gumbel":
            u = torch.rand(logits.shape, generator=noise, device=logits.device, dtype=logits.dtype)
            gumbel = -torch.log(-torch.log(u.clamp_min(1e-10)))
            y = F.softmax((logits + gumbel) / self._temperature, dim=1)
            reconstruction = self._reconstruction(network.decode(torch.cat([sample, y], 1)), x)
        else:
            k, n = self.n_classes, len(x)
            onehot = torch.eye(k, device=x.device, dtype=x.dtype).repeat_interleave(n, dim=0)
            raw = network.decode(torch.cat([sample.repeat(k, 1), onehot], 1))
            per_class = self._reconstruction(raw, x.repeat(k, 1, 1, 1)).view(k, n).t()
            reconstruction = (q * per_class).sum(dim=1)
        kl_class = (q * (log_q + math.log(self.n_classes))).sum(dim=1).mean()
        terms = {"reconstruction": reconstruction.mean(), "class_kl": kl_class.detach()}
        for name, columns, prior_std in self._latent_priors():
            terms[name] = gaussian_kl(mean[:, columns], log_var[:, columns], prior_std).mean()
        terms["penalty_capacity"] = self.capacity_gamma * (kl_class - self._capacity).abs()
        # Confident per-patch assignments can all pick one class (the capacity is met, z does the
        # rest): the batch's class usage is held near uniform too.
        usage = q.mean(dim=0)
        terms["penalty_balance"] = self.balance_gamma * torch.special.xlogy(usage, usage * self.n_classes).sum()
        return terms

    # ----------------------------------------------------------------- use

    def _encode_batch(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.network_.encode(x)[0], F.softmax(self.network_.classify(x), dim=1)], 1)

    def predict_proba(self, X: Any, *, batch_size: int = 1024) -> np.ndarray:
        """``q(y | x)`` of patches ``X``: ``N x n_classes``."""
        return self.encode(X, batch_size=batch_size)[:, -self.n_classes :]

    def predict(self, X: Any, *, batch_size: int = 1024) -> np.ndarray:
        """Most likely class of each patch: ``N`` int64."""
        return self.predict_proba(X, batch_size=batch_size).argmax(axis=1)

    def _full_latents(self, z: torch.Tensor) -> torch.Tensor:
        """``n x (continuous + n_classes)`` pass; ``n x continuous`` latents plus an integer
        ``class`` column (``n x (continuous + 1)``) become a one-hot class."""
        n_cont = self.n_latents - self.n_classes
        if z.shape[1] == self.n_latents:
            return z
        if z.shape[1] == n_cont + 1:
            label = z[:, -1]
            if torch.any(label != label.round()) or torch.any((label < 0) | (label >= self.n_classes)):
                raise ValueError(f"the last column of z must be a class index in 0..{self.n_classes - 1}")
            return torch.cat([z[:, :-1], F.one_hot(label.long(), self.n_classes).to(z.dtype)], 1)
        raise ValueError(
            f"z must have {self.n_latents} columns ({', '.join(self.latent_names)}) or {n_cont + 1} "
            f"(continuous latents and a class index); got shape {tuple(z.shape)}"
        )


class JRVAE(RotationLatents, JVAE):
    """Joint VAE with rotation (and translation, optional scale) latents: ``[angle, dx, dy,
    (scale), z_1..z_k, p_class1..p_classK]``.

    Args:
        translation, rotation_prior, translation_prior, scale, scale_prior: as
            :class:`~aexp.models.rvae.RVAE` (declared by :class:`~aexp.models.rvae.RotationLatents`,
            which also gives the geometric latents and their priors).
        others: as :class:`JVAE`.
    """
