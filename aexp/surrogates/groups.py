"""Which inputs predict the target on *this* sample: an average of exact GPs over feature groups.

The surrogate's inputs come in groups (``features.with_surrogate_columns``): the embedding of the
patch, the survey under the probe (centre pixels and gradient), the context (neighbour counts) and
the position. Which of them predicts the target differs from sample to sample: an edge plasmon
follows the outline in the survey, a dopant map on a real spectrum image may be smooth in space and
blind to the HAADF. Rather than fix the answer in the recipe, :class:`GroupAverage` fits one exact
GP (botorch ``SingleTaskGP``, ARD RBF) per group and one additive GP over all groups
(``sum_g s_g k_g``), and averages them with pseudo-BMA weights

    ``w_m ∝ exp(sum_i log p_m(y_i | y_{-i}))``

the leave-one-out predictive likelihood of each model (Geisser & Eddy 1979; Yao et al. 2018), in
closed form for a GP (Rasmussen & Williams eq. 5.10-5.12). Leave-one-out rather than the marginal
likelihood: with 5-60 points the marginal likelihood of a many-lengthscale ARD model is maximised on
the same points it judges, and rewards it for fitting them; the held-out likelihood asks each model
to predict points it did not see, which is what the acquisition relies on. All members see the same
standardised targets, so their likelihoods compare.

The acquisition is taken on the mixture's posterior, moment-matched to a Gaussian per point
(``mu = sum_m w_m mu_m``, ``var = sum_m w_m (var_m + mu_m^2) - mu^2``), exposed as a botorch
``Model`` so the analytic acquisitions (UCB, LogEI, posterior std) apply unchanged; Thompson sampling
draws a group by its weight, then a pathwise sample of that group's GP.

Weights per group (recorded at each step): a single-group member gives its weight to its group; the
additive member shares its weight among the groups by their output scales ``s_g / sum s``.

Example:
    >>> groups = {"position": (6, 7), "survey": (4, 5), "embedding": (0, 1, 2, 3)}
    >>> surrogate = GroupAverage(groups, seed=0).fit(X_measured, y_measured)
    >>> surrogate.weights_            # {'position': 0.71, 'survey': 0.22, 'embedding': 0.07}
    >>> ucb = UpperConfidenceBound(surrogate.model, beta=4.0)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch
from botorch.exceptions.warnings import InputDataWarning
from botorch.models import SingleTaskGP
from botorch.models.model import Model
from botorch.posteriors.gpytorch import GPyTorchPosterior
from gpytorch.distributions import MultivariateNormal
from linear_operator.operators import DiagLinearOperator
from linear_operator.utils.cholesky import psd_safe_cholesky
from torch import Tensor

__all__ = ["ADDITIVE", "GROUP_NAMES", "GroupAverage", "MixtureModel", "loo_log_likelihood"]

DTYPE = torch.float64
#: The feature groups, in the order their columns appear in the surrogate's inputs.
GROUP_NAMES = ("embedding", "survey", "context", "position")
#: The name of the member that sums one kernel per group.
ADDITIVE = "additive"


def loo_log_likelihood(model: SingleTaskGP) -> Tensor:
    """Leave-one-out predictive log density of each training target under a fitted exact GP -> ``n``.

    ``log p(y_i | y_{-i}) = -log(2 pi v_i) / 2 - r_i^2 / (2 v_i)`` with ``v_i = 1 / [K^-1]_ii`` and
    ``r_i = [K^-1 (y - m)]_i / [K^-1]_ii``, ``K`` the kernel matrix plus noise (Rasmussen & Williams
    eq. 5.12), in the model's (standardised) target units, at its fitted hyper-parameters.
    """
    X = model.train_inputs[0]
    y = model.train_targets
    with torch.no_grad():
        K = model.covar_module(X).to_dense()
        K = K + model.likelihood.noise * torch.eye(len(X), dtype=K.dtype, device=K.device)
        K_inv = torch.cholesky_inverse(psd_safe_cholesky(K))
        alpha = K_inv @ (y - model.mean_module(X))
        diag = torch.diagonal(K_inv).clamp_min(1e-12)
        var, resid = 1.0 / diag, alpha / diag
        return -0.5 * torch.log(2 * math.pi * var) - 0.5 * resid.square() / var


class MixtureModel(Model):
    """A weighted mixture of GP members on column subsets, moment-matched per point.

    Args:
        members: fitted botorch models, each on its own columns of the full inputs.
        columns: the column indices each member reads, same order.
        weights: ``len(members)`` non-negative weights summing to one.
    """

    _num_outputs = 1

    def __init__(self, members: Sequence[Model], columns: Sequence[Sequence[int]], weights: Tensor) -> None:
        super().__init__()
        self.members = list(members)
        self.columns = [torch.as_tensor(list(c), dtype=torch.long) for c in columns]
        self.weights = weights

    @property
    def num_outputs(self) -> int:
        return 1

    @property
    def train_targets(self) -> Tensor:
        """The first member's (standardised) targets: where the data live (device, dtype)."""
        return torch.as_tensor(self.members[0].train_targets)  # a gpytorch attribute torch cannot type

    def posterior(self, X: Tensor, output_indices: Any = None, observation_noise: bool | Tensor = False,
                  posterior_transform: Any = None, **kwargs: Any) -> GPyTorchPosterior:
        """Marginal posterior of ``f`` at ``X`` (``batch x q x D``): independent over the ``q`` points,
        each the moment-matched mixture ``N(sum w mu, sum w (var + mu^2) - mu^2)``."""
        mean = torch.zeros(X.shape[:-1], dtype=X.dtype, device=X.device)
        second = torch.zeros_like(mean)
        for w, member, cols in zip(self.weights, self.members, self.columns):
            if float(w) == 0.0:
                continue
            post = cast(GPyTorchPosterior, member.posterior(X[..., cols.to(X.device)],
                                                            observation_noise=observation_noise))
            mu, var = post.mean.squeeze(-1), post.variance.squeeze(-1)
            mean = mean + w * mu
            second = second + w * (var + mu.square())
        var = (second - mean.square()).clamp_min(1e-12)
        post = GPyTorchPosterior(MultivariateNormal(mean, DiagLinearOperator(var)))
        return post if posterior_transform is None else posterior_transform(post)


class GroupAverage:
    """Pseudo-BMA over exact GPs on the feature groups and an additive GP over all of them.

    Args:
        groups: group name -> the input columns it holds (disjoint, e.g. ``{"position": (6, 7)}``);
            empty groups are left out.
        seed: seeds the hyper-parameter restarts ``fit_gpytorch_mll`` may make.
        additive: also fit the additive member ``sum_g s_g k_g`` (needs two groups or more).

    Attributes (after ``fit``):
        member_weights_: model name -> pseudo-BMA weight.
        weights_: group name -> the weight it carried (sums to one).
    """

    def __init__(self, groups: Mapping[str, Sequence[int]], seed: int = 0, additive: bool = True) -> None:
        from ..policies import PositionGP  # the exact GP the baselines use; policies imports us lazily

        self.groups = {name: tuple(int(c) for c in cols) for name, cols in groups.items() if len(cols)}
        if not self.groups:
            raise ValueError("GroupAverage needs at least one non-empty column group")
        seen: set[int] = set()
        for name, cols in self.groups.items():
            if seen & set(cols):
                raise ValueError(f"column groups overlap: group {name!r} repeats columns {sorted(seen & set(cols))}")
            seen |= set(cols)
        self.seed = int(seed)
        self.members: dict[str, tuple[tuple[int, ...], Any]] = {
            name: (cols, PositionGP(seed=seed)) for name, cols in self.groups.items()
        }
        if additive and len(self.groups) > 1:
            every = tuple(c for cols in self.groups.values() for c in cols)
            local = [tuple(every.index(c) for c in cols) for cols in self.groups.values()]
            self.members[ADDITIVE] = (every, PositionGP(seed=seed, groups=local))
        self._model: MixtureModel | None = None
        self.member_weights_: dict[str, float] = {}
        self.weights_: dict[str, float] = {}

    @property
    def model(self) -> MixtureModel:
        if self._model is None:
            raise RuntimeError("GroupAverage has not been fitted yet: call fit(X, y) first")
        return self._model

    def fit(self, X: Tensor, y: np.ndarray) -> GroupAverage:
        """Fit every member on its columns of ``X`` (``n x D``) and ``y`` (``n``), warm-started from
        its previous hyper-parameters, then weigh the members by leave-one-out likelihood."""
        X = torch.as_tensor(X, dtype=DTYPE).cpu()
        scores = []
        with warnings.catch_warnings():
            # standardised features, not the unit cube botorch checks for; lengthscales absorb it
            warnings.simplefilter("ignore", InputDataWarning)
            for cols, gp in self.members.values():
                gp.fit(X[:, list(cols)], y)
                scores.append(float(loo_log_likelihood(gp.model).sum()))
        s = torch.tensor(scores, dtype=DTYPE)
        s = torch.nan_to_num(s, nan=-math.inf)
        w = torch.softmax(s, dim=0) if torch.isfinite(s).any() else torch.full_like(s, 1 / len(s))
        names = list(self.members)
        self.member_weights_ = {n: float(v) for n, v in zip(names, w)}
        self.weights_ = self._group_weights()
        self._model = MixtureModel([gp.model for _, gp in self.members.values()],
                                   [cols for cols, _ in self.members.values()], w)
        return self

    def _group_weights(self) -> dict[str, float]:
        out = {name: self.member_weights_.get(name, 0.0) for name in self.groups}
        if ADDITIVE in self.members:
            kernels = self.members[ADDITIVE][1].model.covar_module.kernels
            scales = torch.stack([k.outputscale.detach().reshape(()) for k in kernels])
            share = scales / scales.sum()
            for name, s in zip(self.groups, share):
                out[name] += self.member_weights_[ADDITIVE] * float(s)
        return out

    def predict(self, X: Tensor, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """Mixture mean and variance of ``f`` at each row of ``X`` (``M x D``), target units."""
        means, variances = [], []
        with torch.no_grad():
            for start in range(0, len(X), chunk):
                post = self.model.posterior(torch.as_tensor(X[start:start + chunk], dtype=DTYPE).cpu())
                means.append(post.mean.reshape(-1))
                variances.append(post.variance.reshape(-1))
        return torch.cat(means).numpy(), torch.cat(variances).numpy()

    def posterior_sample(self, X: Tensor, seed: int, chunk: int = 1024) -> np.ndarray:
        """One draw of ``f`` over ``X``: a group drawn by its weight (:attr:`weights_`), then a
        pathwise sample of that group's GP. (botorch has no pathwise prior for an additive kernel,
        so the additive member's weight goes to the groups it spreads it over.)"""
        rng = np.random.default_rng(int(seed))
        w = np.asarray(list(self.weights_.values()), dtype=np.float64)
        name = list(self.groups)[int(rng.choice(len(w), p=w / w.sum()))]
        cols, gp = self.members[name]
        Xc = torch.as_tensor(X, dtype=DTYPE).cpu()[:, list(cols)]
        return gp.posterior_sample(Xc, seed=int(rng.integers(2**62)), chunk=chunk)
