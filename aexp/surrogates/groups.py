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

A joint member (``joint``, optional) is one more exact GP on all columns together, one RBF with a
lengthscale per column (``k(x, x') = s exp(-sum_c (x_c - x'_c)^2 / 2 l_c^2)``): a product over the
groups, so it can express what a sum cannot (the target high where the survey says "outline" *and*
the position says "this particle"), at the price of one lengthscale per column learned from few
points. It is exact like the others, so its leave-one-out likelihood weighs it fairly against them.

Weights per group (recorded at each step): a single-group member gives its weight to its group; the
additive member shares its weight among the groups by their output scales ``s_g / sum s``; the joint
member's weight is recorded as ``joint``.

A deep-kernel member (``dkl``, :class:`~aexp.surrogates.dkl.DKLSurrogate` on all columns, its base
kernel the additive member's groups) joins once ``dkl_from`` points are measured: it begins as the
additive GP (``start_from``) and learns a feature map over all inputs together, so it can express
what a sum of per-group kernels cannot (an edge mode where the survey says "outline" *and* the
position says "this particle"). Its leave-one-out likelihood would not be fair: its feature map was
trained on the point held out. So it is judged prequentially (Dawid 1984): every point told after it
joined is scored, before any member is refitted on it, by the one-step-ahead predictive density of
the DKL and of the exact members' average (``sum_m w_m p_m(y)``, their weights of that step), neither
of which has seen the point. The DKL's weight is the stacking weight of the two forecasters on that
record (Yao et al. 2018), with a Beta(2, 2) prior:

    ``w_dkl = argmax_w sum_i log(w p_dkl(y_i | y_<i) + (1 - w) p_avg(y_i | y_<i)) + log w(1 - w)``

(0 until it has forecast a point); the exact members share ``1 - w_dkl`` by their LOO weights.
Stacking, not the ratio of the two evidences: a DKL is often confidently wrong at a point (its
feature map collapses the variance), and under the evidence ratio one such miss outweighs any
number of better forecasts; in the stacked mixture it costs ``log(1 - w)``.

Example:
    >>> groups = {"position": (6, 7), "survey": (4, 5), "embedding": (0, 1, 2, 3)}
    >>> surrogate = GroupAverage(groups, seed=0).fit(X_measured, y_measured)
    >>> surrogate.weights_            # {'position': 0.71, 'survey': 0.22, 'embedding': 0.07}
    >>> dkl = DKLSurrogate(input_dim=8, groups=[(0, 1, 2, 3), (4, 5), (6, 7)], seed=0)
    >>> GroupAverage(groups, seed=0, dkl=dkl, dkl_from=20)   # + a DKL member from 20 points on
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

from .dkl import DeepKernelGP, DKLSurrogate

__all__ = ["ADDITIVE", "DKL", "GROUP_NAMES", "JOINT", "GroupAverage", "MixtureModel", "loo_log_likelihood",
           "predictive_log_density", "stacking_weight"]

DTYPE = torch.float64
#: The feature groups, in the order their columns appear in the surrogate's inputs.
GROUP_NAMES = ("embedding", "survey", "context", "position")
#: The name of the member that sums one kernel per group.
ADDITIVE = "additive"
#: The name of the member with one ARD kernel over all columns together (and its recorded weight).
JOINT = "joint"
#: The name of the deep-kernel member (and its entry in the recorded weights).
DKL = "dkl"


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


def predictive_log_density(model: Model, X: Tensor, y: Tensor) -> Tensor:
    """``log N(y_j; mu(x_j), var(x_j) + noise)`` of new targets under a fitted member -> ``b``.

    ``X``: ``b x D`` (the member's columns), ``y``: ``b``, original target units: every member
    untransforms its own standardisation, so densities of different members compare on one point.
    """
    with torch.no_grad():
        post = cast(GPyTorchPosterior, model.posterior(X.unsqueeze(-2), observation_noise=True))
        mu, var = post.mean.reshape(-1), post.variance.reshape(-1).clamp_min(1e-12)
    return -0.5 * torch.log(2 * math.pi * var) - 0.5 * (y - mu).square() / var


def stacking_weight(log_densities: Tensor, iterations: int = 60) -> float:
    """Weight ``w`` of forecaster ``a`` in the mixture ``w p_a + (1 - w) p_b`` that best predicted the
    record: ``argmax_w sum_i log(w p_a,i + (1 - w) p_b,i) + log w + log(1 - w)`` -> ``w`` in ``(0, 1)``.

    ``log_densities``: ``n x 2``, the two forecasters' log densities of each point. Stacking (Yao et
    al. 2018) rather than the ratio of their evidences: one confident miss costs ``log(1 - w)``,
    not the miss's whole log density. The ``log w + log(1 - w)`` term (a Beta(2, 2) prior, one
    pseudo-point for each side) keeps a record of one or two points from deciding alone. The
    objective is concave, so bisection on its derivative finds the optimum.
    """
    top = log_densities.max(dim=1, keepdim=True).values
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    p = torch.exp(log_densities - top)
    pa, pb = p[:, 0], p[:, 1]
    low, high = 0.0, 1.0
    for _ in range(iterations):
        w = 0.5 * (low + high)
        slope = float(((pa - pb) / (w * pa + (1 - w) * pb).clamp_min(1e-300)).sum()) + 1 / w - 1 / (1 - w)
        low, high = (w, high) if slope > 0 else (low, w)
    return 0.5 * (low + high)


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
            Xm = X[..., cols.to(X.device)]
            flat = isinstance(member, DeepKernelGP) and Xm.dim() < 3  # its marginal route wants b x 1 x D
            post = cast(GPyTorchPosterior, member.posterior(Xm.unsqueeze(-2) if flat else Xm,
                                                            observation_noise=observation_noise))
            mu, var = post.mean.reshape(mean.shape), post.variance.reshape(mean.shape)
            mean = mean + w * mu
            second = second + w * (var + mu.square())
        var = (second - mean.square()).clamp_min(1e-12)
        post = GPyTorchPosterior(MultivariateNormal(mean, DiagLinearOperator(var)))
        return post if posterior_transform is None else posterior_transform(post)


class GroupAverage:
    """Pseudo-BMA over exact GPs on the feature groups and an additive GP over all of them, with an
    optional deep-kernel member weighed by one-step-ahead (prequential) predictive likelihood.

    Args:
        groups: group name -> the input columns it holds (disjoint, e.g. ``{"position": (6, 7)}``);
            empty groups are left out.
        seed: seeds the hyper-parameter restarts ``fit_gpytorch_mll`` may make.
        additive: also fit the additive member ``sum_g s_g k_g`` (needs two groups or more).
        joint: also fit the joint member, one ARD kernel over all the groups' columns (needs two
            groups or more; with one it would be that group's GP).
        dkl: the deep-kernel member, on all the groups' columns in group order; its base kernel
            split as the groups are (one group: none), so that it can begin as the additive member
            (or the only one). ``None``: no DKL member.
        dkl_from: measured points from which ``dkl`` is fitted (0 or ``None``: never).

    Attributes (after ``fit``):
        member_weights_: model name -> weight (``dkl`` included when configured).
        weights_: group name -> the weight it carried, ``joint`` -> the joint member's and ``dkl`` ->
            the DKL member's, when configured (sums to one).
    """

    def __init__(self, groups: Mapping[str, Sequence[int]], seed: int = 0, additive: bool = True,
                 dkl: DKLSurrogate | None = None, dkl_from: int | None = None, joint: bool = False) -> None:
        from ..policies import PositionGP  # the exact GP the baselines use; policies imports us lazily

        self.groups = {name: tuple(int(c) for c in cols) for name, cols in groups.items() if len(cols)}
        if not self.groups:
            raise ValueError("GroupAverage needs at least one non-empty column group")
        seen: set[int] = set()
        for name, cols in self.groups.items():
            if seen & set(cols):
                raise ValueError(f"column groups overlap: group {name!r} repeats columns {sorted(seen & set(cols))}")
            seen |= set(cols)
        for member in (DKL, JOINT, ADDITIVE):
            if member in self.groups:
                raise ValueError(f"{member!r} names a member of the average; call the group something else")
        self.seed = int(seed)
        self.members: dict[str, tuple[tuple[int, ...], Any]] = {
            name: (cols, PositionGP(seed=seed)) for name, cols in self.groups.items()
        }
        self.every = tuple(c for cols in self.groups.values() for c in cols)
        if additive and len(self.groups) > 1:
            local = [tuple(self.every.index(c) for c in cols) for cols in self.groups.values()]
            self.members[ADDITIVE] = (self.every, PositionGP(seed=seed, groups=local))
        if joint and len(self.groups) > 1:
            self.members[JOINT] = (self.every, PositionGP(seed=seed))
        self.dkl = dkl if dkl_from else None
        self.dkl_from = int(dkl_from or 0)
        if self.dkl is not None and self.dkl.input_dim != len(self.every):
            raise ValueError(f"the DKL member reads all {len(self.every)} grouped columns; it was built "
                             f"for input_dim={self.dkl.input_dim}")
        self._model: MixtureModel | None = None
        self._told: tuple[Tensor, Tensor] | None = None  # the points of the last fit (X, y)
        self._exact_weights: Tensor | None = None        # the exact members' LOO weights of the last fit
        self.forecasts_: list[tuple[float, float]] = []  # per point told since the DKL joined: (dkl, average)
        self.member_weights_: dict[str, float] = {}
        self.weights_: dict[str, float] = {}

    @property
    def model(self) -> MixtureModel:
        if self._model is None:
            raise RuntimeError("GroupAverage has not been fitted yet: call fit(X, y) first")
        return self._model

    @property
    def dkl_active(self) -> bool:
        """Whether the DKL member has been fitted (it then stays in the average)."""
        return self.dkl is not None and self.dkl.n_fits_ > 0

    def fit(self, X: Tensor, y: np.ndarray) -> GroupAverage:
        """Fit every member on its columns of ``X`` (``n x D``) and ``y`` (``n``), warm-started from
        its previous hyper-parameters, then weigh the exact members by leave-one-out likelihood and
        the DKL member (from ``dkl_from`` points) by its one-step-ahead forecasts."""
        X = torch.as_tensor(X, dtype=DTYPE).cpu()
        yt = torch.as_tensor(np.asarray(y), dtype=DTYPE).reshape(-1)
        self._forecast(X, yt)
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
        self._exact_weights = w
        self._told = (X, yt)
        models = [gp.model for _, gp in self.members.values()]
        columns = [cols for cols, _ in self.members.values()]
        names = list(self.members)
        if self.dkl is not None and len(yt) >= self.dkl_from:
            if not self.dkl_active:  # it joins as the additive GP (or the only one) it extends
                self.dkl.start_from(self.members.get(ADDITIVE, next(iter(self.members.values())))[1].model)
            self.dkl.fit(X[:, list(self.every)], yt)
            w_dkl = self._dkl_weight()
            w = torch.cat([(1.0 - w_dkl) * w, torch.tensor([w_dkl], dtype=DTYPE)])
            models.append(self.dkl.model)
            columns.append(self.every)
            names.append(DKL)
        self.member_weights_ = {n: float(v) for n, v in zip(names, w)}
        if self.dkl is not None:
            self.member_weights_.setdefault(DKL, 0.0)
        self.weights_ = self._group_weights()
        self._model = MixtureModel(models, columns, w)
        return self

    def _forecast(self, X: Tensor, y: Tensor) -> None:
        """Score the points told since the last fit, before any member sees them: the DKL's
        predictive log density against the exact members' average (appended to ``forecasts_``)."""
        if self._told is None or not self.dkl_active or self._exact_weights is None:
            return
        X0, y0 = self._told
        n0 = len(y0)
        if len(y) < n0 or not (torch.equal(X[:n0], X0) and torch.equal(y[:n0], y0)):
            self.forecasts_ = []  # not the same experiment grown by new points: start the record again
            return
        if len(y) == n0:  # a refit on the same points (a decision while measurements are pending)
            return
        Xn, yn = X[n0:], y[n0:]
        exact = torch.stack([predictive_log_density(gp.model, Xn[:, list(cols)], yn)
                             for cols, gp in self.members.values()])
        average = torch.logsumexp(exact + torch.log(self._exact_weights).unsqueeze(-1), dim=0)
        assert self.dkl is not None
        deep = predictive_log_density(self.dkl.model, Xn[:, list(self.every)], yn)
        self.forecasts_ += [(float(a), float(b)) for a, b in zip(deep, average)]

    def _dkl_weight(self) -> float:
        """The stacking weight of the DKL's forecasts against the exact average's (0 without a record)."""
        if not self.forecasts_:
            return 0.0
        return stacking_weight(torch.tensor(self.forecasts_, dtype=DTYPE))

    def _group_weights(self) -> dict[str, float]:
        out = {name: self.member_weights_.get(name, 0.0) for name in self.groups}
        if ADDITIVE in self.members:
            kernels = self.members[ADDITIVE][1].model.covar_module.kernels
            scales = torch.stack([k.outputscale.detach().reshape(()) for k in kernels])
            share = scales / scales.sum()
            for name, s in zip(self.groups, share):
                out[name] += self.member_weights_[ADDITIVE] * float(s)
        if JOINT in self.member_weights_:
            out[JOINT] = self.member_weights_[JOINT]
        if DKL in self.member_weights_:
            out[DKL] = self.member_weights_[DKL]
        return out

    def condition(self, X: Tensor, y: np.ndarray) -> GroupAverage:
        """Condition every fitted member on ``X`` (``n x D``), ``y`` with its parameters, and the
        members' weights, held (e.g. the fit's data and believed points in flight)."""
        X = torch.as_tensor(X, dtype=DTYPE).cpu()
        for cols, gp in self.members.values():
            gp.condition(X[:, list(cols)], y)
        if self.dkl is not None and self.dkl_active and any(m is self.dkl.model for m in self.model.members):
            self.dkl.condition(X[:, list(self.every)], y)
        return self

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
        """One draw of ``f`` over ``X``: a group (or the joint or DKL member) drawn by its weight
        (:attr:`weights_`), then a pathwise sample of that model. (botorch has no pathwise prior for
        an additive kernel, so the additive member's weight goes to the groups it spreads it over.)"""
        rng = np.random.default_rng(int(seed))
        names = list(self.weights_)
        w = np.asarray(list(self.weights_.values()), dtype=np.float64)
        name = names[int(rng.choice(len(w), p=w / w.sum()))]
        Xt = torch.as_tensor(X, dtype=DTYPE).cpu()
        if name == DKL:
            assert self.dkl is not None
            return self.dkl.posterior_sample(Xt[:, list(self.every)], seed=int(rng.integers(2**62)), chunk=chunk)
        cols, gp = self.members[name]
        return gp.posterior_sample(Xt[:, list(cols)], seed=int(rng.integers(2**62)), chunk=chunk)
