"""Shared machinery of aexp's VAE embedders: input checks, normalisation, training, save/load.

A model is an estimator in the scikit-learn sense: hyper-parameters go to ``__init__`` (which only
stores them), :meth:`BaseVAE.fit` learns, and learned state carries a trailing underscore
(``network_``, ``data_min_``, ``data_range_``, ``history_``). Hyper-parameters are dataclass fields
(:class:`Hyperparameters`): each is declared once, in the class that introduces it, and
``__init__``, :meth:`~Hyperparameters.get_params` and ``repr`` are made from the fields of the
class and its bases. A subclass declares the fields it adds (checked by its
``_validate_hyperparameters``, after ``super()``'s, when ``fit`` or ``load`` runs) and supplies

* ``_build_network()`` -> an ``nn.Module`` with ``encode(x) -> (mean, log_var)`` and
  ``decode(latents) -> raw`` (raw: the likelihood's natural parameter, ``N x C x h x w``);
* ``latent_names`` -> the names of the encoded columns, in order;
* ``_latent_priors()`` -> ``[(name, columns, prior_std), ...]``: one KL term per group of latents,
  ``KL(N(mean, var) || N(0, prior_std^2))``, reported in ``history_`` under ``name``;

and may override ``_loss_terms`` (e.g. for discrete latents), ``_penalty_terms`` (extra terms
of the default loss), ``_start_epoch`` (per-epoch schedules), ``_wrap_network`` (a module around
the built network), ``_encode_batch`` (what :meth:`encode` returns) or ``_full_latents`` (what
:meth:`decode` accepts). The training loss per patch is

    reconstruction + kl_weight(epoch) * sum of the KL terms + sum of the penalty terms

where KL terms are the loss terms named ``kl_*`` and penalty terms (already weighted, e.g. a
capacity constraint) those named ``penalty_*``.

with a Gaussian (fixed ``noise_std``) or Bernoulli reconstruction term on patches scaled per channel
to [0, 1] by the minimum and maximum seen in ``fit``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from numbers import Integral, Real
from pathlib import Path
from typing import Any, dataclass_transform

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from .decoders import CoordinateDecoder

__all__ = [
    "BaseVAE",
    "Hyperparameters",
    "CoordinateVAE",
    "PatchVAE",
    "GeometricPriors",
    "NotFittedError",
    "MLPEncoder",
    "ConvEncoder",
    "ENCODERS",
    "make_encoder",
    "GEOMETRIC_LATENTS",
    "SHIFT_SCALE",
    "LatentNetwork",
    "InvariantNetwork",
    "gaussian_kl",
    "kl_schedule",
    "check_int",
    "check_positive",
    "check_flags",
]

CHECKPOINT_FORMAT = "aexp.models"
CHECKPOINT_VERSION = 1
LIKELIHOODS = ("gaussian", "bernoulli")

KLWeight = float | Sequence[float] | Callable[[int], float]


class NotFittedError(ValueError, AttributeError):
    """The model is used before :meth:`BaseVAE.fit` (or :meth:`BaseVAE.load`)."""


def gaussian_kl(mean: torch.Tensor, log_var: torch.Tensor, prior_std: float = 1.0) -> torch.Tensor:
    """``KL(N(mean, exp(log_var)) || N(0, prior_std^2))`` summed over the last dim: ``N x d -> N``."""
    prior_var = prior_std**2
    kl = 0.5 * ((log_var.exp() + mean**2) / prior_var - 1.0 - log_var + math.log(prior_var))
    return kl.sum(dim=-1)


def kl_schedule(kl_weight: KLWeight, epochs: int) -> list[float]:
    """The KL weight of every epoch.

    ``kl_weight`` is a number (constant), a sequence (one value per epoch; the last value holds
    for later epochs) or a callable ``epoch -> weight`` (epochs count from 0). Weights must be
    finite and >= 0.

    Example:
        >>> kl_schedule([0.1, 0.5, 1.0], epochs=5)
        [0.1, 0.5, 1.0, 1.0, 1.0]
    """
    weights: list[Any]
    if callable(kl_weight):
        weights = [kl_weight(epoch) for epoch in range(epochs)]
    elif isinstance(kl_weight, Real) and not isinstance(kl_weight, bool):
        weights = [kl_weight] * epochs
    elif isinstance(kl_weight, (Sequence, np.ndarray, torch.Tensor)) and not isinstance(kl_weight, str):
        weights = list(kl_weight)
        if not weights:
            raise ValueError("kl_weight: the schedule is empty; give at least one weight")
        weights = (weights + weights[-1:] * epochs)[:epochs]
    else:
        raise ValueError(
            "kl_weight must be a number, a sequence of numbers or a callable epoch -> weight; "
            f"got {kl_weight!r}"
        )
    return [_schedule_value(w, epoch) for epoch, w in enumerate(weights)]


def _schedule_value(value: Any, epoch: int) -> float:
    try:
        weight = float(value)
    except (TypeError, ValueError):
        weight = math.nan
    if isinstance(value, (str, bool)) or not math.isfinite(weight) or weight < 0:
        raise ValueError(f"kl_weight of epoch {epoch} is {value!r}; it must be a finite number >= 0")
    return weight


def start_log_var(body: nn.Sequential, n_latents: int, initial_log_var: float) -> None:
    """Add ``initial_log_var`` to the log-variance half of the bias of ``body``'s last layer, a
    ``Linear`` with ``2 n_latents`` outputs ``[mean, log_var]``."""
    last = body[-1]
    if not isinstance(last, nn.Linear) or last.bias is None or last.out_features != 2 * n_latents:
        raise TypeError(f"the encoder must end in a Linear layer with bias and {2 * n_latents} outputs; got {last}")
    with torch.no_grad():
        last.bias[n_latents:] += initial_log_var


class MLPEncoder(nn.Module):
    """Patch -> mean and log-variance of a diagonal Gaussian over ``n_latents`` latents.

    ``Flatten -> Linear(in, H) -> tanh -> Linear(H, H) -> tanh -> Linear(H, 2 n_latents)``.
    Shapes: ``N x C x h x w -> (N x n_latents, N x n_latents)``.

    The log-variances start near ``initial_log_var``: with the usual start at 0 the sampled angle of
    an rVAE is spread over +-1 rad, the decoder first learns a rotation-blurred image, and content
    latents separate classes less often on small data sets.
    """

    def __init__(self, in_features: int, hidden: int, n_latents: int, initial_log_var: float = -3.0):
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, hidden),
            nn.Tanh(),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
            nn.Linear(hidden, 2 * n_latents),
        )
        start_log_var(self.body, n_latents, initial_log_var)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_var = self.body(x).chunk(2, dim=-1)
        return mean, log_var


class ConvEncoder(nn.Module):
    """Patch -> mean and log-variance, through three stride-2 3x3 convolutions (16, 32, 32
    channels, SiLU) and one hidden tanh layer of width ``hidden``.

    Shapes: ``N x C x h x w -> (N x n_latents, N x n_latents)``. Sees local shapes that an MLP on
    raw pixels has to learn position by position; costs more per patch than :class:`MLPEncoder`.
    """

    def __init__(self, shape: tuple[int, int, int], hidden: int, n_latents: int, initial_log_var: float = -3.0):
        super().__init__()
        channels, height, width = shape
        for _ in range(3):  # each stride-2 convolution with padding 1 halves the side, rounding up
            height, width = (height + 1) // 2, (width + 1) // 2
        self.body = nn.Sequential(
            nn.Conv2d(channels, 16, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Flatten(),
            nn.Linear(32 * height * width, hidden),
            nn.Tanh(),
            nn.Linear(hidden, 2 * n_latents),
        )
        start_log_var(self.body, n_latents, initial_log_var)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_var = self.body(x).chunk(2, dim=-1)
        return mean, log_var


ENCODERS = ("mlp", "conv")


def make_encoder(kind: str, shape: tuple[int, int, int], hidden: int, n_latents: int) -> nn.Module:
    """An encoder of ``kind`` (``"mlp"`` or ``"conv"``) for patches of ``shape`` = ``(C, h, w)``."""
    if kind == "conv":
        return ConvEncoder(shape, hidden, n_latents)
    if kind == "mlp":
        return MLPEncoder(shape[0] * shape[1] * shape[2], hidden, n_latents)
    raise ValueError(f"encoder must be one of {ENCODERS}; got {kind!r}")


GEOMETRIC_LATENTS = ("angle", "dx", "dy", "scale", "shear")
"""Geometric latents in the order they come first in every model's encoding."""

SHIFT_SCALE = 0.1
"""Grid shift per unit of the shift latents: shift = SHIFT_SCALE * (dx, dy)."""


def grid_transform(latents: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Keyword arguments of :class:`~aexp.models.decoders.CoordinateDecoder` for the geometric
    latents ``names`` (a subsequence of :data:`GEOMETRIC_LATENTS`), which are the first columns
    of ``latents`` (N x d).

    The grid point ``p`` goes to ``R(angle) Sh(shear) p / exp(scale) + 0.1 (dx, dy)`` with
    ``Sh(k) = [[1, k], [0, 1]]``: ``scale`` is the log-magnification of the decoded object and
    ``shear`` the shear factor (about the shear angle in radians, for small angles).
    """
    col = {name: i for i, name in enumerate(names)}
    out: dict[str, torch.Tensor] = {}
    if "dx" in col:
        out["shift"] = SHIFT_SCALE * latents[:, [col["dx"], col["dy"]]]
    angle = latents[:, col["angle"]] if "angle" in col else None
    if "scale" not in col and "shear" not in col:
        if angle is not None:
            out["angle"] = angle
        return out
    n = len(latents)
    eye = torch.eye(2, dtype=latents.dtype, device=latents.device).expand(n, 2, 2)
    matrix = eye
    if "shear" in col:
        shear = torch.zeros(n, 2, 2, dtype=latents.dtype, device=latents.device)
        shear[:, 0, 1] = latents[:, col["shear"]]
        matrix = eye + shear
    if angle is not None:
        c, s = torch.cos(angle), torch.sin(angle)
        rotation = torch.stack([torch.stack([c, -s], 1), torch.stack([s, c], 1)], 1)
        matrix = rotation @ matrix
    if "scale" in col:
        matrix = matrix * torch.exp(-latents[:, col["scale"]]).view(n, 1, 1)
    out["matrix"] = matrix
    return out


class LatentNetwork(nn.Module):
    """The network a model trains: patches -> latent Gaussian, latents -> raw patches.

    ``encode``: ``N x C x h x w -> (mean, log_var)``, each ``N x n_latents``; ``decode``:
    ``N x n_latents -> N x C x h x w`` raw outputs (the likelihood's natural parameter). Networks
    of models that decode with a condition (:class:`~aexp.models._conditional.PairedVAE`) leave
    ``decode`` out and are called through their own parts.

    Example:
        >>> network = InvariantNetwork((1, 8, 8), 2, ("angle",), hidden=16, decoder_layers=2)
        >>> mean, log_var = network.encode(torch.zeros(4, 1, 8, 8))
        >>> network.decode(mean).shape
        torch.Size([4, 1, 8, 8])
    """

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} has no encode(x)")

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no decode(latents)")


class InvariantNetwork(LatentNetwork):
    """Encoder + coordinate decoder whose first latents are geometric.

    ``encode``: ``N x C x h x w -> (mean, log_var)``, each ``N x (len(geometric) + latent_dim)``;
    ``decode``: latents in the same layout -> raw patches ``N x C x h x w``. With no geometric
    latents it is a plain VAE with a coordinate decoder.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        latent_dim: int,
        geometric: Sequence[str],
        hidden: int,
        decoder_layers: int,
        encoder: str = "mlp",
        encoder_hidden: int = 128,
        coordinate_scale: float = 1.0,
    ):
        super().__init__()
        self.geometric = tuple(geometric)
        self.encoder = make_encoder(encoder, shape, encoder_hidden, len(self.geometric) + latent_dim)
        self.decoder = CoordinateDecoder(shape, latent_dim, hidden, decoder_layers, coordinate_scale)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        transform = grid_transform(latents, self.geometric)
        return self.decoder(latents[:, len(self.geometric) :], **transform)


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int, or ValueError if it is not an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def check_positive(name: str, value: Any) -> float:
    """``value`` as a float, or ValueError if it is not a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, Real) or not (0 < float(value) < math.inf):
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
    return float(value)


def check_per_patch(values: Any, n: int, name: str, what: str = "value") -> np.ndarray | None:
    """``values`` as a 1-d numeric array of ``n`` entries (None stays None), or ValueError naming
    ``name`` and what is wrong with it."""
    if values is None:
        return None
    array = np.asarray(values)
    if array.ndim != 1 or len(array) != n:
        raise ValueError(f"{name} must hold one {what} per patch: shape ({n},); got {array.shape}")
    if array.dtype == object or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name} must hold numbers; got dtype {array.dtype}")
    return array


def _as_float_tensor(values: Any, what: str) -> torch.Tensor:
    """Numpy array, torch tensor or nested lists of real numbers -> float32 CPU tensor."""
    if isinstance(values, torch.Tensor):
        tensor = values.detach()
        if tensor.is_complex():
            raise ValueError(f"{what} is complex ({tensor.dtype}); give real-valued patches")
        return tensor.to(device="cpu", dtype=torch.float32)
    try:
        array = np.asarray(values)
    except ValueError as err:  # ragged nested lists
        raise ValueError(f"{what} is not a rectangular array: {err}") from None
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{what} must hold real numbers; got dtype {array.dtype}")
    if np.iscomplexobj(array):
        raise ValueError(f"{what} is complex ({array.dtype}); give real-valued patches")
    return torch.as_tensor(np.ascontiguousarray(array, dtype=np.float32))


def _check_finite(tensor: torch.Tensor, what: str) -> None:
    bad = ~torch.isfinite(tensor)
    if bad.any():
        rows = torch.nonzero(bad.reshape(len(tensor), -1).any(dim=1)).flatten()
        raise ValueError(
            f"{what} holds NaN or inf in {len(rows)} of {len(tensor)} rows "
            f"(first: row {int(rows[0])}); drop or repair those patches first"
        )


def _checkpoint_value(value: Any) -> Any:
    """A hyper-parameter in a form ``torch.load(weights_only=True)`` reads back as it was given:
    tuples stay tuples (so ``get_params()`` is the same after :meth:`BaseVAE.load`), arrays become
    lists, numpy scalars Python numbers and devices their names."""
    if isinstance(value, tuple):
        return tuple(_checkpoint_value(v) for v in value)
    if isinstance(value, (list, np.ndarray)):
        return [_checkpoint_value(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.device):
        return str(value)
    return value


@dataclass_transform(kw_only_default=True, eq_default=False, field_specifiers=(field,))
class Hyperparameters:
    """Base of classes whose hyper-parameters are keyword-only dataclass fields.

    Every subclass is made a dataclass when it is defined (``kw_only=True``, ``eq=False`` so models
    compare and hash by identity, ``repr=False`` so :meth:`__repr__` below is kept): a class lists
    the fields it adds, with their types and defaults, and inherits those of its bases, so each
    hyper-parameter is written once. ``field(kw_only=False)`` makes one positional (``input_shape``);
    ``field(init=False)`` declares learned state, which is no hyper-parameter. ``__init__`` only
    stores the values; checks belong where they are used (for a model: ``fit`` and ``load``).

    Example:
        >>> class Toy(Hyperparameters):
        ...     size: int = field(kw_only=False)
        ...     rate: float = 0.1
        >>> Toy(3, rate=0.5)
        Toy(size=3, rate=0.5)
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclass(kw_only=True, eq=False, repr=False)(cls)

    @classmethod
    def _parameter_names(cls) -> list[str]:
        """The names ``__init__`` takes, in its order: the positional fields, then the keywords as the
        classes of the MRO declare them (bases first)."""
        taken = [f for f in fields(cls) if f.init]  # type: ignore[arg-type]  # every subclass is a dataclass
        return [f.name for f in taken if not f.kw_only] + [f.name for f in taken if f.kw_only]

    def get_params(self) -> dict[str, Any]:
        """The hyper-parameters given to ``__init__``, by name."""
        return {name: getattr(self, name) for name in self._parameter_names()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


class BaseVAE(Hyperparameters):
    """Base class of the VAE embedders (see the module docstring for the subclass contract).

    Args:
        input_shape: ``(h, w)`` for single-channel patches or ``(C, h, w)``.
        latent_dim: number of content latents.
        likelihood: ``"gaussian"`` (squared error / ``2 noise_std^2``) or ``"bernoulli"``
            (binary cross-entropy; patches are scaled to [0, 1] anyway).
        noise_std: standard deviation of the Gaussian likelihood, in units of each channel's
            range in the training data. Smaller values weigh reconstruction more against the KL.
        device: torch device the network lives and trains on.
        epochs, batch_size, lr: Adam's passes over the patches, patches per step and step size;
            ``fit`` may override each.
        seed: seeds the network's initial weights, the shuffling and the sampling of training.
    """

    input_shape: Sequence[int] = field(kw_only=False)
    latent_dim: int = 2
    likelihood: str = "gaussian"
    noise_std: float = 0.1
    device: str = "cpu"
    epochs: int = 20
    batch_size: int = 128
    lr: float = 3e-3
    seed: int = 0

    # Learned in fit (or read by load); absent before.
    network_: LatentNetwork = field(init=False, repr=False)
    data_min_: np.ndarray = field(init=False, repr=False)
    data_range_: np.ndarray = field(init=False, repr=False)
    history_: dict[str, list[float]] = field(init=False, repr=False)

    # ----------------------------------------------------------------- subclass contract

    _min_latent_dim = 1
    """Fewest content latents the model works with (a model with a class latent can do with 0)."""

    def _build_network(self) -> LatentNetwork:
        raise NotImplementedError

    @property
    def latent_names(self) -> list[str]:
        """Names of the columns of :meth:`encode`, in order."""
        raise NotImplementedError

    @property
    def geometric_names(self) -> list[str]:
        """The geometric latents (a prefix of :attr:`latent_names`); none for a plain VAE."""
        return []

    def _latent_priors(self) -> list[tuple[str, slice, float]]:
        raise NotImplementedError

    def _validate_hyperparameters(self) -> None:
        """Raise ValueError for a bad hyper-parameter. Subclasses extend this."""
        self._patch_shape()
        check_int("latent_dim", self.latent_dim, self._min_latent_dim)
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}; got {self.likelihood!r}")
        check_positive("noise_std", self.noise_std)
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"device {self.device!r} is not a torch device: {err}") from None

    def _patch_shape(self) -> tuple[int, int, int]:
        """``input_shape`` as ``(C, h, w)``."""
        shape = self.input_shape
        if (
            not isinstance(shape, (Sequence, np.ndarray))
            or isinstance(shape, str)
            or len(shape) not in (2, 3)
            or any(isinstance(s, bool) or not isinstance(s, Integral) or s < 1 for s in shape)
        ):
            raise ValueError(f"input_shape must be (h, w) or (C, h, w) of positive integers; got {shape!r}")
        dims = [int(s) for s in shape]
        return (1, dims[0], dims[1]) if len(dims) == 2 else (dims[0], dims[1], dims[2])

    @property
    def n_latents(self) -> int:
        """Number of encoded columns (geometric + content latents)."""
        return len(self.latent_names)

    # ----------------------------------------------------------------- data

    def _check_patches(self, X: Any, min_samples: int) -> torch.Tensor:
        """X -> float32 CPU tensor ``N x C x h x w``, or ValueError naming the problem."""
        x = _as_float_tensor(X, "X")
        shape = self._patch_shape()
        expected = tuple(self.input_shape)
        if x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != tuple(int(s) for s in expected):
            wanted = ", ".join(["N", *map(str, expected)])
            raise ValueError(
                f"X must have shape ({wanted}) for input_shape={tuple(expected)}; got {tuple(x.shape)}"
            )
        if len(x) < min_samples:
            raise ValueError(f"X has {len(x)} patches; at least {min_samples} are needed")
        _check_finite(x, "X")
        return x.reshape(len(x), *shape)

    def _check_labels(self, y: Any, n: int) -> np.ndarray | None:
        """``y`` as a 1-d array of ``n`` finite labels (or None), or ValueError naming the problem.
        Subclasses that learn from labels narrow this (integer classes, NaN for unlabelled...)."""
        return check_per_patch(y, n, "y", "label")

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        lo = torch.as_tensor(self.data_min_, device=x.device).view(1, -1, 1, 1)
        span = torch.as_tensor(self.data_range_, device=x.device).view(1, -1, 1, 1)
        return (x - lo) / span

    def _denormalise(self, x: torch.Tensor) -> torch.Tensor:
        lo = torch.as_tensor(self.data_min_, device=x.device).view(1, -1, 1, 1)
        span = torch.as_tensor(self.data_range_, device=x.device).view(1, -1, 1, 1)
        return x * span + lo

    def _check_fitted(self) -> None:
        if not hasattr(self, "network_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(X) or load(path)")

    # ----------------------------------------------------------------- loss

    def _reconstruction(self, raw: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood per patch (constants dropped): ``N x C x h x w -> N``."""
        if self.likelihood == "bernoulli":
            nll = F.binary_cross_entropy_with_logits(raw, x, reduction="none")
        else:
            nll = (raw - x).square_().mul_(0.5 / self.noise_std**2)
        return nll.flatten(1).sum(dim=1)

    def _mean_image(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(raw) if self.likelihood == "bernoulli" else raw

    def _start_epoch(self, epoch: int, epochs: int) -> None:
        """Called before every training epoch (``epoch`` counts from 0). Models with their own
        schedules (temperature, capacity) update them here."""

    def _loss_terms(
        self, network: LatentNetwork, x: torch.Tensor, noise: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """Batch means of ``reconstruction`` and of every KL term (names starting ``kl_``)."""
        mean, log_var = network.encode(x)
        eps = torch.randn(mean.shape, generator=noise, device=mean.device, dtype=mean.dtype)
        sample = mean + eps * torch.exp(0.5 * log_var)
        terms = {"reconstruction": self._reconstruction(network.decode(sample), x).mean()}
        for name, columns, prior_std in self._latent_priors():
            terms[name] = gaussian_kl(mean[:, columns], log_var[:, columns], prior_std).mean()
        terms.update(self._penalty_terms(network, x, mean, noise))
        return terms

    def _penalty_terms(
        self, network: LatentNetwork, x: torch.Tensor, mean: torch.Tensor, noise: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """Extra, already weighted loss terms (names ``penalty_*``) given the batch ``x`` and its
        latent means ``mean`` (``N x n_latents``). Default: none."""
        return {}

    # ----------------------------------------------------------------- fit

    def _new_network(self, seed: int) -> LatentNetwork:
        # Module constructors draw their initial weights from torch's global CPU generator: seed
        # it for them and give the caller's state back afterwards.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            network = self._wrap_network(self._build_network())
        return network.to(self.device)

    def _wrap_network(self, network: LatentNetwork) -> LatentNetwork:
        """Hook for models that add a module around any ``_build_network()`` (default: none)."""
        return network

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
    ) -> BaseVAE:
        """Train on patches ``X`` (``N x h x w`` or ``N x C x h x w``) with Adam; returns self.

        ``y`` (one label per patch) is checked against ``X`` and passed to models that learn from
        labels; the unsupervised models here do not use it.

        ``epochs``, ``batch_size``, ``lr`` and ``seed`` are the constructor's unless given here.
        Every call starts from a fresh network seeded by ``seed``: the same seed and data give the
        same model on the same machine and torch build. ``kl_weight`` is a number, a per-epoch
        sequence (last value held) or a callable ``epoch -> weight``. ``history_`` holds the
        per-epoch means of each loss term per patch, the KL weight and the epoch's wall time.
        """
        self._validate_hyperparameters()
        epochs = check_int("epochs", self.epochs if epochs is None else epochs, 1)
        batch_size = check_int("batch_size", self.batch_size if batch_size is None else batch_size, 1)
        lr = check_positive("lr", self.lr if lr is None else lr)
        seed = check_int("seed", self.seed if seed is None else seed, 0)
        weights = kl_schedule(kl_weight, epochs)
        x = self._check_patches(X, min_samples=2)
        self._check_labels(y, len(x))

        lo = x.amin(dim=(0, 2, 3))
        span = x.amax(dim=(0, 2, 3)) - lo
        span = torch.where(span > 0, span, torch.ones_like(span))  # a constant channel maps to 0
        data = ((x - lo.view(1, -1, 1, 1)) / span.view(1, -1, 1, 1)).to(self.device)

        network = self._new_network(seed)
        optimiser = torch.optim.Adam(network.parameters(), lr=lr)
        shuffle = torch.Generator().manual_seed(seed)
        noise = torch.Generator(device=self.device).manual_seed(seed + 1)
        history: dict[str, list[float]] = {}
        network.train()
        bar = tqdm(range(epochs), desc=f"{type(self).__name__} fit", unit="epoch", disable=not progress)
        for epoch in bar:
            start = time.perf_counter()
            self._start_epoch(epoch, epochs)
            order = torch.randperm(len(data), generator=shuffle).to(self.device)
            means = self._train_epoch(network, optimiser, data, order, batch_size, weights[epoch], noise)
            if not math.isfinite(means["loss"]):
                raise FloatingPointError(
                    f"the training loss became {means['loss']} in epoch {epoch}; lower lr "
                    f"(now {lr}) or raise noise_std (now {self.noise_std})"
                )
            means["kl_weight"] = weights[epoch]
            means["seconds"] = time.perf_counter() - start
            for name, value in means.items():
                history.setdefault(name, []).append(value)
            bar.set_postfix(loss=f"{means['loss']:.4g}", rec=f"{means['reconstruction']:.4g}")
        network.eval()
        self.data_min_, self.data_range_ = lo.numpy(), span.numpy()
        self.network_ = network
        self.history_ = history
        return self

    def _train_epoch(
        self,
        network: LatentNetwork,
        optimiser: torch.optim.Optimizer,
        data: torch.Tensor,
        order: torch.Tensor,
        batch_size: int,
        kl_weight: float,
        noise: torch.Generator,
    ) -> dict[str, float]:
        """One pass over ``data`` in ``order``; the mean of each loss term per patch."""
        sums: dict[str, torch.Tensor] = {}
        for first in range(0, len(data), batch_size):
            batch = data[order[first : first + batch_size]]
            terms = self._loss_terms(network, batch, noise)
            kl = sum(value for name, value in terms.items() if name.startswith("kl_"))
            penalty = sum(value for name, value in terms.items() if name.startswith("penalty_"))
            terms["loss"] = terms["reconstruction"] + kl_weight * kl + penalty
            optimiser.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimiser.step()
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value.detach() * len(batch)
        return {name: float(total) / len(data) for name, total in sums.items()}

    # ----------------------------------------------------------------- use

    def encode(self, X: Any, *, batch_size: int = 1024, refine: int = 0, refine_lr: float = 3e-3) -> np.ndarray:
        """Latent means of patches ``X`` (``N x h x w`` or ``N x C x h x w``): ``N x n_latents``
        float32, columns as in :attr:`latent_names`.

        ``refine > 0`` takes each patch's latents on from the encoder's means by that many Adam
        steps (step size ``refine_lr``) towards the most probable latents under the trained
        decoder and the latent priors: the minimum over ``z`` of ``reconstruction(x | z) +
        sum_g |z_g / prior_std_g|^2 / 2``. The encoder is one network for every patch and
        answers only approximately (the amortisation gap); a small shift of a pattern is where
        that shows, and where the refined latents follow the shift more closely
        (docs/fourdstem.md). The decoder is not changed. Deterministic: no sampling. For models
        whose encoding is their Gaussian latent means under the default loss (``VAE``, ``RVAE``
        and its variants); others raise ``ValueError``.
        """
        self._check_fitted()
        batch_size = check_int("batch_size", batch_size, 1)
        refine, refine_lr = self._check_refine(refine, refine_lr)
        x = self._check_patches(X, min_samples=0)
        out = torch.empty(len(x), self.n_latents)
        for first in range(0, len(x), batch_size):
            batch = self._normalise(x[first : first + batch_size].to(self.device))
            with torch.inference_mode():
                z = self._encode_batch(batch)
            if refine:
                z = self._refine(batch, z.clone(), refine, refine_lr)
            out[first : first + batch_size] = z.cpu()
        return out.numpy()

    def _check_refine(self, refine: Any, refine_lr: Any) -> tuple[int, float]:
        """``refine`` and ``refine_lr`` checked, or ValueError: a model whose encoding is not the
        Gaussian latents of the default loss has no posterior to refine."""
        refine = check_int("refine", refine, 0)
        if not refine:
            return 0, float(refine_lr)
        cls = type(self)
        if cls._loss_terms is not BaseVAE._loss_terms or cls._encode_batch is not BaseVAE._encode_batch:
            raise ValueError(f"refine: {cls.__name__} does not encode to the Gaussian latents of the default "
                             f"loss, so it has no posterior to refine; use refine=0")
        return refine, check_positive("refine_lr", refine_lr)

    def _refine(self, x: torch.Tensor, z: torch.Tensor, steps: int, lr: float) -> torch.Tensor:
        """``steps`` Adam steps on latents ``z`` (``N x n_latents``) of normalised patches ``x``
        towards the maximum of ``log p(x | z) + log p(z)``; the network's weights are untouched."""
        z = z.detach().requires_grad_(True)
        priors = self._latent_priors()
        optimiser = torch.optim.Adam([z], lr=lr)
        for _ in range(steps):
            loss = self._reconstruction(self.network_.decode(self._full_latents(z)), x).sum()
            for _, columns, prior_std in priors:
                loss = loss + 0.5 * (z[:, columns] / prior_std).square().sum()
            (z.grad,) = torch.autograd.grad(loss, [z])
            optimiser.step()
        return z.detach()

    def _encode_batch(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised patches -> the columns of :meth:`encode` (default: the latent means)."""
        return self.network_.encode(x)[0]

    def _full_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Latents given to :meth:`decode` -> ``n x n_latents``. Subclasses may accept more."""
        if z.shape[1] != self.n_latents:
            raise ValueError(
                f"z must have shape (n, {self.n_latents}) {self.latent_names}; got {tuple(z.shape)}"
            )
        return z

    def decode(self, z: Any, *, batch_size: int = 1024) -> np.ndarray:
        """Mean patches for latents ``z`` (``n x d``), in the units of the training data:
        ``n x C x h x w``, or ``n x h x w`` when ``input_shape`` is ``(h, w)``."""
        self._check_fitted()
        batch_size = check_int("batch_size", batch_size, 1)
        latents = _as_float_tensor(z, "z")
        if latents.ndim != 2:
            raise ValueError(f"z must be a 2-d array (n, d); got shape {tuple(latents.shape)}")
        _check_finite(latents, "z")
        latents = self._full_latents(latents)
        out = torch.empty(len(latents), *self._patch_shape())
        with torch.inference_mode():
            for first in range(0, len(latents), batch_size):
                raw = self.network_.decode(latents[first : first + batch_size].to(self.device))
                out[first : first + batch_size] = self._denormalise(self._mean_image(raw)).cpu()
        if len(tuple(self.input_shape)) == 2:
            out = out[:, 0]
        return out.numpy()

    # ----------------------------------------------------------------- persistence

    def save(self, path: str | Path) -> None:
        """Write config, weights, normalisation and history to ``path`` (``torch.save``; readable
        with ``torch.load(path, weights_only=True)``). No optimiser state is stored."""
        self._check_fitted()
        config = {name: _checkpoint_value(value) for name, value in self.get_params().items()}
        checkpoint = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "model": type(self).__name__,
            "config": config,
            "state_dict": {k: v.detach().cpu() for k, v in self.network_.state_dict().items()},
            "data_min": torch.as_tensor(self.data_min_),
            "data_range": torch.as_tensor(self.data_range_),
            "history": self.history_,
        }
        torch.save(checkpoint, Path(path))

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> BaseVAE:
        """Rebuild a model written by :meth:`save`, on ``device`` (default: the saved one)."""
        checkpoint = torch.load(Path(path), map_location="cpu", weights_only=True)
        if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not an aexp model checkpoint")
        if checkpoint.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{path}: checkpoint version {checkpoint.get('version')} is not supported")
        if checkpoint["model"] != cls.__name__:
            raise ValueError(f"{path} holds a {checkpoint['model']}, not a {cls.__name__}")
        config = dict(checkpoint["config"])
        if device is not None:
            config["device"] = device
        model = cls(**config)
        model._validate_hyperparameters()
        network = model._new_network(seed=0)
        network.load_state_dict(checkpoint["state_dict"])
        network.eval()
        model.data_min_ = checkpoint["data_min"].numpy()
        model.data_range_ = checkpoint["data_range"].numpy()
        model.network_ = network
        model.history_ = checkpoint["history"]
        return model


class CoordinateVAE(BaseVAE):
    """A :class:`BaseVAE` whose decoder draws on a coordinate grid (per pixel, or per point of a
    spectrum) and whose encoder (and classifier, where there is one) has hidden layers of one width.
    Subclasses may give ``hidden`` another default (the conditional models' decoders are wider).

    Args:
        hidden: width of the decoder's per-pixel layers (the main cost, ~``hidden^2`` per pixel).
        decoder_layers: hidden ``hidden x hidden`` tanh layers after the decoder's first layer.
        encoder_hidden: width of the encoder's hidden layers.
    """

    hidden: int = 32
    decoder_layers: int = 2
    encoder_hidden: int = 128

    def _validate_hyperparameters(self) -> None:
        super()._validate_hyperparameters()
        check_int("hidden", self.hidden, 1)
        check_int("decoder_layers", self.decoder_layers, 0)
        check_int("encoder_hidden", self.encoder_hidden, 1)


class PatchVAE(CoordinateVAE):
    """A :class:`CoordinateVAE` of image patches whose encoder is chosen by name.

    Args:
        encoder: ``"mlp"`` or ``"conv"`` (see :func:`make_encoder`).
    """

    encoder: str = "mlp"

    def _validate_hyperparameters(self) -> None:
        super()._validate_hyperparameters()
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}; got {self.encoder!r}")


class GeometricPriors(BaseVAE):
    """A :class:`BaseVAE` with an angle and/or shift latent and the rVAE's Gaussian priors on them.

    Args:
        rotation_prior: standard deviation (radians) of the Gaussian prior on the angle.
        translation_prior: standard deviation of the prior on the shift ``0.1 * (dx, dy)``, in
            units of the patch half-width (0.1 makes the shift latents standard normal).
    """

    rotation_prior: float = math.pi / 3
    translation_prior: float = 0.1

    def _validate_hyperparameters(self) -> None:
        super()._validate_hyperparameters()
        check_positive("rotation_prior", self.rotation_prior)
        check_positive("translation_prior", self.translation_prior)


def check_flags(model: Any, *names: str) -> None:
    """ValueError unless each attribute ``names`` of ``model`` is True or False."""
    for name in names:
        if not isinstance(getattr(model, name), bool):
            raise ValueError(f"{name} must be True or False; got {getattr(model, name)!r}")
