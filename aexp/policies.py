"""Acquisition policies: where to measure next, among the candidates not yet measured.

A policy looks at a :class:`SelectionContext` (all candidates, what has been measured, what must
not be chosen) and returns a :class:`Decision`. Four kinds:

- ``dkl``: :class:`SurrogatePolicy` over a :class:`~aexp.surrogates.dkl.DKLSurrogate` on the candidate
  features, scored by an acquisition function;
- ``gp-xy``: :class:`GPXYPolicy`, the same acquisitions with an exact GP on the probe positions
  only (the structure-blind baseline);
- ``random``: :class:`RandomPolicy`, uniform over the remaining candidates;
- ``raster``: :class:`RasterPolicy`, the microscopist's coarse serpentine grid;
- ``survey-rank``: :class:`SurveyRankPolicy`, the survey's value under the probe, brightest (or
  darkest) first: the baseline a microscopist tries first, which a structure-aware policy must beat.

Acquisitions (``acquisition=`` of the model-based policies), all maximised:

- ``ucb``: ``mu + sqrt(beta) * sigma`` (botorch ``UpperConfidenceBound`` convention);
- ``log_ei``: ``log E[max(f - best_f, 0)]`` with ``best_f`` the best observed target
  (botorch ``LogExpectedImprovement``);
- ``max_variance``: ``sigma`` (botorch ``PosteriorStandardDeviation``), pure exploration;
- ``thompson``: one joint posterior draw of ``f`` over all candidates, drawn pathwise (see
  :meth:`~aexp.surrogates.dkl.DKLSurrogate.posterior_sample`), so no ``M x M`` covariance is formed.

``mu`` and ``sigma`` are the posterior of the latent ``f`` (no observation noise), in target units.
Excluded candidates score ``-inf`` and are never chosen; ties go to the lowest index.

Example:
    >>> policy = make_policy(DKLPolicyConfig(acquisition={"kind": "ucb", "beta": 4.0}), input_dim=features.shape[1])
    >>> decision = policy.select(ctx)
    >>> instrument.measure(ctx.positions[decision.index])
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np
import torch
from botorch.acquisition.analytic import _log_ei_helper, _scaled_improvement
from botorch.acquisition.thompson_sampling import PathwiseThompsonSampling
from botorch.exceptions.warnings import InputDataWarning
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.model import Model
from botorch.models.transforms.outcome import Standardize
from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
from botorch.posteriors import GPyTorchPosterior
from gpytorch.kernels import AdditiveKernel, Kernel, ScaleKernel
from gpytorch.likelihoods import GaussianLikelihood
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.models import ExactGP
from linear_operator.utils.cholesky import psd_safe_cholesky

from aexp.surrogates.dkl import DKLSurrogate, check_groups, unit_columns

from .config import (
    KINDS,
    DKLNetwork,
    DKLPolicyConfig,
    DKLSurrogateConfig,
    GPXYPolicyConfig,
    GroupsSurrogateConfig,
    PolicyConfig,
    RandomPolicyConfig,
    RasterPolicyConfig,
    SurrogateConfig,
    UCBConfig,
)
from .errors import AexpError

__all__ = [
    "ACQUISITIONS",
    "POLICY_KINDS",
    "Decision",
    "GPXYPolicy",
    "NoCandidatesLeft",
    "Policy",
    "RandomPolicy",
    "RasterPolicy",
    "CandidateScores",
    "MemberMoments",
    "Rescore",
    "mixture_moments",
    "relabelled",
    "acquisition_spread",
    "SelectionContext",
    "Surrogate",
    "SurrogatePolicy",
    "SurveyRankPolicy",
    "feature_groups",
    "dkl_surrogate",
    "make_policy",
    "analytic_acquisition",
    "raster_plan",
    "score_and_predict",
    "score_candidates",
    "survey_values",
]

ACQUISITIONS = ("ucb", "log_ei", "max_variance", "thompson")
POLICY_KINDS = ("dkl", "gp-xy", "random", "raster")
#: Policies that never look at the candidates' features (so no embedder is trained for them).
FEATURELESS_KINDS = frozenset({"gp-xy", "random", "raster"})
_DTYPE = torch.float64


class NoCandidatesLeft(AexpError, RuntimeError):
    """Every candidate is measured or excluded: there is nowhere left to send the probe."""


@dataclass
class SelectionContext:
    """Everything a policy may look at to choose the next candidate.

    Attributes:
        features: ``M x D`` candidate features, standardised per column.
        positions: ``M x 2`` instrument ``(x, y)`` in metres.
        grid_shape: ``(rows, cols)`` if the candidates are a row-major grid, else ``None``.
        measured: indices of the successfully measured candidates, in measurement order.
        targets: the target of each measured candidate, same length as ``measured``.
        excluded: bool ``M``; measured or failed candidates, never to be chosen.
        budget_left: measurements still allowed, this one included.
        step: index of this decision in the experiment.
        rng: the policy's only source of randomness.
        want_maps: also return mean, std and acquisition over all candidates.
        penalty: ``M`` acquisition units to subtract before the argmax (travel, recency), or
            ``None``; model-free policies ignore it.
        penalty_in_spread: ``penalty`` is in units of the acquisition's spread over the allowed
            candidates at this step (:func:`acquisition_spread`), not in acquisition units.
        believed: candidates in flight among ``measured``, whose ``targets`` are believed values
            (posterior means); a policy that can, returns a :class:`Rescore` with its decision so
            the campaign can take it again on their outcomes.
    """

    features: torch.Tensor
    positions: np.ndarray
    grid_shape: tuple[int, int] | None
    measured: np.ndarray
    targets: np.ndarray
    excluded: np.ndarray
    budget_left: int
    step: int
    rng: np.random.Generator
    want_maps: bool = False
    penalty: np.ndarray | None = None
    penalty_in_spread: bool = False
    believed: tuple[int, ...] = ()


@dataclass
class Rescore:
    """What a decision taken on believed targets needs to be taken again once they are measured.

    The decision's fit saw candidates in flight with believed targets (their posterior means);
    when their outcomes arrive, :meth:`SurrogatePolicy.rescore` conditions the same fitted model on
    the measured values, with every parameter held, and takes the argmax again: no refit.

    Attributes:
        indices: the believed candidates, in the order of ``rows``.
        rows: their rows in the fit's training data.
        believed: their believed targets.
        mean, var: ``M`` posterior of the fit (believed targets), target units.
        weights: ``M x r``, ``d mean / d y`` of each believed target (the posterior mean is linear
            in the targets and the variance does not depend on them), or ``None`` when the model's
            posterior is not linear in its targets (a mixture): it is then scored again.
        penalty: the step's penalty as the context gave it (before any scaling to the spread).
        penalty_in_spread: as :attr:`SelectionContext.penalty_in_spread`.
        X: the surrogate's ``M x D`` inputs (for a model scored again).
        members: a mixture's members (:attr:`CandidateScores.members`): its posterior is rebuilt
            from their moved means, no pass of the model either.
    """

    indices: tuple[int, ...]
    rows: tuple[int, ...]
    believed: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    weights: np.ndarray | None
    penalty: np.ndarray | None
    penalty_in_spread: bool
    X: torch.Tensor
    members: list[MemberMoments] | None = None


@dataclass
class Decision:
    """The chosen candidate and what the policy knew about it.

    Attributes:
        index: chosen candidate.
        acquisition: its acquisition value (``None`` for model-free policies).
        predicted_mean, predicted_std: the surrogate's posterior of ``f`` there (target units).
        fit_s: seconds spent fitting the surrogate.
        select_s: seconds spent scoring candidates and choosing.
        maps: ``"mean"``, ``"std"``, ``"acquisition"`` over all ``M`` candidates when asked for
            and the policy has a model; ``None`` otherwise.
        weights: input group -> the weight it carried in the surrogate at this decision (a
            surrogate with ``weights_``, e.g. :class:`~aexp.surrogates.groups.GroupAverage`), or ``None``.
        rescore: what it takes to decide again on the outcomes of believed candidates (see
            :attr:`SelectionContext.believed`), or ``None``.
    """

    index: int
    acquisition: float | None
    predicted_mean: float | None
    predicted_std: float | None
    fit_s: float
    select_s: float
    maps: dict[str, np.ndarray] | None = None
    weights: dict[str, float] | None = None
    rescore: Rescore | None = None


class Policy(Protocol):
    name: str

    def select(self, ctx: SelectionContext) -> Decision: ...


class Surrogate(Protocol):
    """What :class:`SurrogatePolicy` needs from a model of the target over candidate inputs."""

    @property
    def model(self) -> Model: ...

    def fit(self, X: torch.Tensor, y: np.ndarray) -> Surrogate: ...

    def predict(self, X: torch.Tensor, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]: ...

    def posterior_sample(self, X: torch.Tensor, seed: int, chunk: int = 1024) -> np.ndarray: ...


def _allowed(ctx: SelectionContext) -> np.ndarray:
    """Indices that may be chosen; raises :class:`NoCandidatesLeft` when there are none."""
    excluded = np.asarray(ctx.excluded, dtype=bool)
    if excluded.shape != (len(ctx.positions),):
        raise ValueError(f"excluded must be a bool array of length M={len(ctx.positions)}, "
                         f"got shape {excluded.shape}")
    allowed = np.flatnonzero(~excluded)
    if len(allowed) == 0:
        raise NoCandidatesLeft(f"all {len(excluded)} candidates are measured or excluded")
    return allowed


def acquisition_spread(values: np.ndarray) -> float:
    """The acquisition's spread over candidates: ``1.4826 * median(|a - median(a)|)`` of the finite values.

    The median absolute deviation, scaled to equal the standard deviation of a normal sample: a
    unit for penalties that moves with the acquisition (``spread(c a + b) = |c| spread(a)``) and is
    not dragged by log-EI's long lower tail as a standard deviation would be. When over half of
    the values are equal (a MAD of 0) the standard deviation is used; when all are, 1 (any positive
    unit then makes the same choice).

    Example:
        >>> acquisition_spread(np.array([0.0, 1.0, 2.0, 3.0, 100.0]))  # 1.4826 * 1
        1.4826
    """
    a = np.asarray(values, dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return 1.0
    spread = 1.4826 * float(np.median(np.abs(a - np.median(a))))
    if not spread > 0:
        spread = float(a.std())
    return spread if spread > 0 else 1.0


def _argmax(scores: np.ndarray, allowed: np.ndarray) -> int:
    """Highest-scoring allowed index, lowest index on ties; NaN counts as ``-inf``."""
    s = np.nan_to_num(scores[allowed], nan=-np.inf)
    return int(allowed[int(np.argmax(s))])


#: One member of a mixture posterior: ``(weight, mean, var, W)``, ``M``, ``M`` and ``M x r``.
MemberMoments = tuple[float, np.ndarray, np.ndarray, np.ndarray]


def mixture_moments(members: Sequence[MemberMoments], shift: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The moment-matched mixture ``N(sum w mu, sum w (var + mu^2) - mu^2)`` of
    :class:`~aexp.surrogates.groups.MixtureModel`, each member's mean moved by ``W shift``."""
    mean = np.zeros_like(members[0][1])
    second = np.zeros_like(mean)
    for w, mu, var, W in members:
        if shift is not None:
            mu = mu + W @ shift
        mean = mean + w * mu
        second = second + w * (var + mu**2)
    return mean, np.maximum(second - mean**2, 1e-12)


@dataclass
class CandidateScores:
    """One scoring pass over the candidates: the acquisition and the posterior it was computed from.

    Attributes:
        acquisition: ``M`` acquisition values (before any penalty or exclusion).
        mean: ``M`` posterior mean of ``f`` (target units), or ``None`` (``thompson``: a draw,
            no posterior moments).
        var: ``M`` posterior variance of ``f``, or ``None`` likewise.
        weights: ``M x r``, how the mean moves with the training targets of ``rows`` when asked
            for (see :meth:`~aexp.surrogates.dkl.DeepKernelGP.moments_and_weights`), else ``None``.
        members: for a mixture of exact GPs asked for ``rows``, each member's weight, moments and
            ``weights`` (the mixture's variance depends on its members' means, so it is rebuilt
            from them), else ``None``.
    """

    acquisition: np.ndarray
    mean: np.ndarray | None = None
    var: np.ndarray | None = None
    weights: np.ndarray | None = None
    members: list[MemberMoments] | None = None


def analytic_acquisition(name: str, mean: torch.Tensor, var: torch.Tensor, *, beta: float,
                         best_f: float) -> torch.Tensor:
    """An analytic acquisition from the marginal posterior: ``b`` means and variances -> ``b``.

    ``ucb = mu + sqrt(beta) sigma``, ``log_ei = log(sigma h((mu - best_f) / sigma))`` with
    ``h(u) = phi(u) + u Phi(u)``, ``max_variance = sigma``; ``sigma = sqrt(max(var, 1e-12))``.
    Bit for bit what botorch's ``UpperConfidenceBound``, ``LogExpectedImprovement`` and
    ``PosteriorStandardDeviation`` return for the same posterior (a test holds it to that), so
    the mean and variance of one posterior pass serve both the decision and the live page's maps.

    Example:
        >>> post = model.posterior(X.unsqueeze(-2))
        >>> ucb = analytic_acquisition("ucb", post.mean.reshape(-1), post.variance.reshape(-1),
        ...                            beta=4.0, best_f=0.0)
    """
    sigma = var.clamp_min(1e-12).sqrt()
    if name == "ucb":
        return mean + _as_buffer(beta, mean).sqrt() * sigma
    if name == "log_ei":
        u = _scaled_improvement(mean, sigma, _as_buffer(best_f, mean), True)
        return _log_ei_helper(u) + sigma.log()
    if name == "max_variance":
        return sigma
    raise ValueError(f"no analytic acquisition {name!r}")


def _as_buffer(value: float, like: torch.Tensor) -> torch.Tensor:
    # botorch keeps beta and best_f as buffers made by torch.as_tensor (float32 for a Python
    # float) and casts them to the inputs' dtype; the same rounding keeps decisions identical
    return torch.as_tensor(value).to(like)


def score_candidates(surrogate: Surrogate, X: torch.Tensor, acquisition: str, *, beta: float,
                     best_f: float, seed: int | None = None, chunk: int = 1024) -> np.ndarray:
    """Acquisition value of every row of ``X`` (``M x D``) under a fitted surrogate -> ``M``.

    See :func:`score_and_predict`, which also returns the posterior mean and variance.
    """
    return score_and_predict(surrogate, X, acquisition, beta=beta, best_f=best_f, seed=seed,
                             chunk=chunk).acquisition


def score_and_predict(surrogate: Surrogate, X: torch.Tensor, acquisition: str, *, beta: float,
                      best_f: float, seed: int | None = None, chunk: int = 1024,
                      rows: Sequence[int] = ()) -> CandidateScores:
    """Score every row of ``X`` (``M x D``) and keep the posterior the scores came from.

    Analytic acquisitions: the model's marginal posterior of ``chunk x 1 x D`` t-batches (the
    route botorch's analytic acquisitions take), then :func:`analytic_acquisition` on its mean and
    variance. ``thompson`` evaluates one pathwise posterior draw (``seed`` picks it) and returns
    no moments. ``rows``: training rows whose targets may change; their ``weights`` (``d mean /
    d y``) come with the scores where the model's posterior is linear in its targets.
    """
    if acquisition == "thompson":
        if seed is None:
            raise ValueError("thompson sampling needs a seed")
        return CandidateScores(surrogate.posterior_sample(X, seed=seed, chunk=chunk))
    if acquisition not in ACQUISITIONS:
        raise ValueError(f"no analytic acquisition {acquisition!r}")
    model = surrogate.model
    device = torch.as_tensor(model.train_targets).device  # a gpytorch attribute torch cannot type
    rows = tuple(rows)
    mixture = cast(Any, model)
    members = getattr(mixture, "members", None)
    if rows and members is not None:
        routes = [_weights_route(m, rows) if float(w) != 0.0 else None for w, m in zip(mixture.weights, members)]
        parts: list[MemberMoments] = []
        for w, route, cols in zip(mixture.weights, routes, mixture.columns):
            if float(w) != 0.0 and route is not None:
                Xm = torch.as_tensor(X)[:, cols.to(torch.as_tensor(X).device)]
                parts.append((float(w), *_member_moments(route, Xm, chunk, device)))
        if len(parts) == sum(float(w) != 0.0 for w in mixture.weights):
            mix_mean, mix_var = mixture_moments(parts)
            mix_acq = analytic_acquisition(acquisition, torch.as_tensor(mix_mean), torch.as_tensor(mix_var),
                                           beta=beta, best_f=best_f)
            return CandidateScores(mix_acq.numpy(), mix_mean, mix_var, members=parts)
    route = _weights_route(model, rows) if rows and members is None else None
    acq, means, variances, weights = [], [], [], []
    with torch.no_grad():
        for start in range(0, len(X), chunk):
            # float64 on purpose: the models and botorch's buffers are float64
            Xc = torch.as_tensor(X[start:start + chunk]).to(device=device, dtype=_DTYPE)
            if route is not None:
                mean, var, W = route(Xc)
                weights.append(W)
            else:
                mean, var = _moments(model, Xc)
            acq.append(analytic_acquisition(acquisition, mean, var, beta=beta, best_f=best_f))
            means.append(mean)
            variances.append(var)
    if not acq:
        return CandidateScores(np.zeros(0), np.zeros(0), np.zeros(0))
    a, m, v = (torch.cat(t).cpu().numpy() for t in (acq, means, variances))
    return CandidateScores(a, m, v, weights=torch.cat(weights).cpu().numpy() if weights else None)


def _member_moments(route: _Route, X: torch.Tensor, chunk: int,
                    device: torch.device) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, variance and ``W`` (``d mean / d y[rows]``) of one mixture member at each row of ``X``."""
    with torch.no_grad():
        parts = [route(X[s:s + chunk].to(device=device, dtype=_DTYPE)) for s in range(0, len(X), chunk)]
    mean, var, W = (torch.cat([p[i] for p in parts]).cpu().numpy() for i in range(3))
    return mean, var, W


_Route = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def _weights_route(model: Model, rows: Sequence[int]) -> _Route | None:
    """``X -> (mean, var, W)`` in one pass where the model's form is known: the DKL's own, or an
    exact GP with a Gaussian likelihood and standardised targets (botorch's ``SingleTaskGP``);
    ``None`` for another model, which :meth:`SurrogatePolicy.rescore` then scores again."""
    if getattr(model, "moments_and_weights", None) is not None:
        return lambda X: cast(Any, model).moments_and_weights(X, rows)
    m = cast(Any, model)
    if (isinstance(model, ExactGP) and isinstance(m.likelihood, GaussianLikelihood)
            and isinstance(getattr(m, "outcome_transform", None), Standardize)
            and getattr(m, "input_transform", None) is None and m.train_inputs[0].dim() == 2):
        return _ExactWeights(m, rows)
    return None


class _ExactWeights:
    """Mean, variance and ``W = d mean / d y[rows]`` of an exact GP in one pass: the posterior
    ``mu = c + K_xZ alpha``, ``var = k(x, x) - |L^-1 K_Zx|^2``, ``W = K_xZ (K + noise I)^-1 E`` from one
    Cholesky factor (the DKL's direct route, on the model's own kernel), in target units."""

    def __init__(self, model: Any, rows: Sequence[int]) -> None:
        self.model = model
        with torch.no_grad():
            Z = model.train_inputs[0]
            K = model.covar_module(Z).to_dense()
            K = K + model.likelihood.noise * torch.eye(len(Z), dtype=K.dtype, device=K.device)
            self.L = psd_safe_cholesky(K)
            resid = (model.train_targets - model.mean_module(Z)).unsqueeze(-1)
            self.alpha = torch.cholesky_solve(resid, self.L).squeeze(-1)
            self.A = torch.cholesky_solve(unit_columns(len(Z), rows, K), self.L)
            self.Z = Z

    def __call__(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.model
        K_xZ = m.covar_module(X, self.Z).to_dense()
        mean = m.mean_module(X) + K_xZ @ self.alpha
        v = torch.linalg.solve_triangular(self.L, K_xZ.transpose(-1, -2), upper=False)
        var = (m.covar_module(X, diag=True) - v.square().sum(-2)).clamp_min(1e-12)
        s, c = m.outcome_transform.stdvs.reshape(-1), m.outcome_transform.means.reshape(-1)
        return c + s * mean, (s * var) * s, K_xZ @ self.A


def _moments(model: Model, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Marginal mean and variance at each row of ``X`` (``b x D``)."""
    # a model that gives its marginal moments directly (the DKL's, bit for bit its posterior's)
    # spares building a posterior object per chunk
    moments = getattr(model, "moments", None)
    if moments is not None:
        return cast(tuple[torch.Tensor, torch.Tensor], moments(X))
    post = cast(GPyTorchPosterior, model.posterior(X.unsqueeze(-2)))  # or another with moments
    return post.mean.reshape(-1), post.variance.reshape(-1)


def _standardised(model: Model, y: torch.Tensor) -> torch.Tensor:
    """Targets in the units the model keeps its training targets in (a ``Standardize`` transform's)."""
    transform = getattr(model, "outcome_transform", None)
    if isinstance(transform, Standardize):
        return (y - transform.means.reshape(-1)) / transform.stdvs.reshape(-1)
    return y


@contextmanager
def relabelled(model: Model, rows: Sequence[int], values: Sequence[float]) -> Iterator[Model]:
    """``model`` conditioned on ``values`` (target units) at training ``rows``, every parameter held;
    the targets it had are back on leaving. A mixture's members are each relabelled."""
    members = list(getattr(model, "members", [model]))
    saved = [torch.as_tensor(m.train_targets) for m in members]
    try:
        for m, targets in zip(members, saved):
            new = targets.clone()
            y = torch.as_tensor(np.asarray(values, dtype=np.float64), dtype=new.dtype, device=new.device)
            new[list(rows)] = _standardised(m, y)
            _set_targets(m, new)
        yield model
    finally:
        for m, targets in zip(members, saved):
            _set_targets(m, targets)


def _set_targets(model: Any, targets: torch.Tensor) -> None:
    if hasattr(model, "relabel"):
        model.relabel(targets)
    else:  # gpytorch's ExactGP: drops its cached prediction strategy
        model.set_train_data(targets=targets, strict=False)


class SurrogatePolicy:
    """Fit a surrogate on the measured candidates, then take the acquisition's argmax.

    Args:
        surrogate: e.g. a :class:`~aexp.surrogates.dkl.DKLSurrogate`; refitted (warm) at every ``select``.
        acquisition: one of :data:`ACQUISITIONS` (see the module docstring for the formulas).
        beta: UCB exploration weight, ``mu + sqrt(beta) * sigma``.
        chunk: candidates scored per batch.
        name: recorded with each decision.

    Example:
        >>> policy = SurrogatePolicy(DKLSurrogate(input_dim=5), "log_ei", beta=4.0)
        >>> policy.select(ctx).index
    """

    def __init__(self, surrogate: Surrogate, acquisition: str = "ucb", beta: float = 4.0,
                 chunk: int = 1024, name: str = "dkl") -> None:
        _check_acquisition(acquisition, beta)
        self.surrogate = surrogate
        self.acquisition = acquisition
        self.beta = float(beta)
        self.chunk = int(chunk)
        self.name = name

    def inputs(self, ctx: SelectionContext) -> torch.Tensor:
        """``M x D`` inputs of the surrogate: the candidate features."""
        return ctx.features

    def select(self, ctx: SelectionContext) -> Decision:
        allowed = _allowed(ctx)
        measured = np.asarray(ctx.measured, dtype=np.int64)
        targets = np.asarray(ctx.targets, dtype=np.float64)
        if len(measured) == 0:
            raise ValueError(f"policy {self.name!r} needs at least one measured candidate; "
                             "start the experiment with a few random measurements")
        if len(targets) != len(measured):
            raise ValueError(f"{len(measured)} measured candidates but {len(targets)} targets")
        X = torch.as_tensor(self.inputs(ctx))
        # believed targets may be taken again on their outcomes (ucb, log_ei: the mean matters)
        believed = tuple(int(i) for i in ctx.believed) if self.acquisition in ("ucb", "log_ei") else ()
        rows = tuple(int(np.flatnonzero(measured == i)[-1]) for i in believed)
        t0 = time.perf_counter()
        if rows and hasattr(self.surrogate, "condition"):
            # the parameters learn from measured targets only, as the sequential loop's do, one
            # step behind; the posterior holds the believed points too, until their outcomes come
            known = np.setdiff1d(np.arange(len(measured)), rows)
            self.surrogate.fit(X[torch.as_tensor(measured[known])], targets[known])
            cast(Any, self.surrogate).condition(X[torch.as_tensor(measured)], targets)
        else:
            self.surrogate.fit(X[torch.as_tensor(measured)], targets)
        t1 = time.perf_counter()
        seed = int(ctx.rng.integers(2**63)) if self.acquisition == "thompson" else None
        scored = score_and_predict(self.surrogate, X, self.acquisition, beta=self.beta,
                                   best_f=float(targets.max()), seed=seed, chunk=self.chunk, rows=rows)
        scores = _penalised(scored.acquisition, ctx.penalty, ctx.penalty_in_spread, allowed, ctx.excluded)
        index = _argmax(scores, allowed)
        maps = None
        if ctx.want_maps:  # the scoring pass's own posterior; a draw (thompson) has none: a pass of its own
            mean, var = scored.mean, scored.var
            if mean is None or var is None:
                mean, var = self.surrogate.predict(X, chunk=self.chunk)
            maps = {"mean": mean, "std": np.sqrt(var), "acquisition": scores}
        # the chosen point's own one-row posterior, as recorded since the first sessions: the same
        # with or without maps, and bit for bit what earlier versions recorded
        mean_i, var_i = (v[0] for v in self.surrogate.predict(X[index:index + 1]))
        rescore = None
        if rows and scored.mean is not None and scored.var is not None:
            rescore = Rescore(believed, rows, targets[list(rows)], scored.mean, scored.var, scored.weights,
                              ctx.penalty, ctx.penalty_in_spread, X, scored.members)
        t2 = time.perf_counter()
        weights = getattr(self.surrogate, "weights_", None)
        return Decision(index=index, acquisition=float(scores[index]),
                        predicted_mean=float(mean_i), predicted_std=float(math.sqrt(var_i)),
                        fit_s=t1 - t0, select_s=t2 - t1, maps=maps,
                        weights=dict(weights) if weights else None, rescore=rescore)

    def rescore(self, decision: Decision, outcomes: dict[int, float], best_f: float,
                excluded: np.ndarray) -> Decision:
        """Take ``decision`` again now that some of its believed candidates are measured.

        The fit of the decision is kept (no refit); its posterior is conditioned on the measured
        ``outcomes`` (candidate -> target) in place of their believed values, and the acquisition's
        argmax taken again over the candidates not ``excluded`` (``M`` bool). For an exact GP this
        is ``mean + W (y - y_believed)`` over all candidates, no pass of the model
        (:attr:`Rescore.weights`); another model is scored again on the new targets.

        Args:
            decision: from :meth:`select` with ``ctx.believed``; returned as it is without a
                :class:`Rescore` or when none of its believed candidates has an outcome.
            outcomes: measured targets of (some of) the believed candidates.
            best_f: the best measured target now (``log_ei``'s incumbent).
            excluded: candidates that may not be chosen now (measured, failed, in flight).

        Returns:
            A new :class:`Decision`: the argmax, its mean and standard deviation, the penalised
            acquisition there; ``fit_s`` of the original, ``select_s`` the original's plus this.
        """
        r = decision.rescore
        if r is None or not any(i in outcomes for i in r.indices):
            return decision
        t0 = time.perf_counter()
        y = np.array([outcomes.get(i, b) for i, b in zip(r.indices, r.believed)], dtype=np.float64)
        if r.weights is not None:
            mean, var = r.mean + r.weights @ (y - r.believed), r.var
        elif r.members is not None:
            mean, var = mixture_moments(r.members, y - r.believed)
        else:
            with relabelled(self.surrogate.model, r.rows, y.tolist()):
                scored = score_and_predict(self.surrogate, r.X, self.acquisition, beta=self.beta,
                                           best_f=best_f, chunk=self.chunk)
            mean, var = cast(np.ndarray, scored.mean), cast(np.ndarray, scored.var)
        acquisition = analytic_acquisition(self.acquisition, torch.as_tensor(mean), torch.as_tensor(var),
                                           beta=self.beta, best_f=best_f).numpy()
        allowed = np.flatnonzero(~np.asarray(excluded, dtype=bool))
        if len(allowed) == 0:
            raise NoCandidatesLeft(f"all {len(excluded)} candidates are measured or excluded")
        scores = _penalised(acquisition, r.penalty, r.penalty_in_spread, allowed, excluded)
        index = _argmax(scores, allowed)
        maps = None if decision.maps is None else {"mean": mean, "std": np.sqrt(var), "acquisition": scores}
        return Decision(index=index, acquisition=float(scores[index]), predicted_mean=float(mean[index]),
                        predicted_std=float(math.sqrt(var[index])), fit_s=decision.fit_s,
                        select_s=decision.select_s + time.perf_counter() - t0, maps=maps,
                        weights=decision.weights)


def _penalised(acquisition: np.ndarray, penalty: np.ndarray | None, in_spread: bool, allowed: np.ndarray,
               excluded: np.ndarray) -> np.ndarray:
    """Scores to take the argmax of: the acquisition less the penalty (travel, recency; additive,
    never a ratio; in spreads of the allowed candidates' acquisition when ``in_spread``), ``-inf``
    where excluded."""
    scores = acquisition
    if penalty is not None:
        p = np.asarray(penalty, dtype=np.float64)
        if in_spread:
            p = p * acquisition_spread(acquisition[allowed])
        scores = scores - p
    else:
        scores = scores.copy()
    scores[np.asarray(excluded, dtype=bool)] = -np.inf
    return scores


class PositionGP:
    """Exact GP (botorch ``SingleTaskGP``, RBF-ARD) on probe positions or any other inputs.

    Hyper-parameters are fitted by L-BFGS on the marginal likelihood (``fit_gpytorch_mll``),
    starting from the previous fit's values. Same interface as the DKL surrogate.

    Args:
        seed: seeds the hyper-parameter restarts that ``fit_gpytorch_mll`` may make.
        groups: ``None`` for one ARD kernel over all columns (botorch's default kernel and
            priors); or disjoint column groups, e.g. ``[(0, 1, 2, 3), (4, 5)]``, for a sum of one
            scaled ARD kernel per group, ``k = s1 k1(x_g1, x'_g1) + s2 k2(x_g2, x'_g2)``. Two
            points then correlate when they are alike in *any* group, not only in all of them:
            with the position as its own group, a structure seen at one particle informs the same
            structure at another, however far apart.
        warm_maxiter: L-BFGS iterations of a refit that starts from the previous fit (``None``: to
            convergence). A few suffice when one point was added, and the refit then stays a small
            part of a decision (a from-scratch-length L-BFGS cost 0.5-0.8 CPU s per step).
    """

    def __init__(self, seed: int = 0, groups: Sequence[Sequence[int]] | None = None,
                 warm_maxiter: int | None = None) -> None:
        self.seed = int(seed)
        self.groups = check_groups(groups)
        self.warm_maxiter = warm_maxiter
        self._model: SingleTaskGP | None = None

    @property
    def model(self) -> SingleTaskGP:
        if self._model is None:
            raise RuntimeError("PositionGP has not been fitted yet: call fit(X, y) first")
        return self._model

    def fit(self, X: torch.Tensor, y: np.ndarray) -> PositionGP:
        X = torch.as_tensor(X, dtype=_DTYPE)
        Y = torch.as_tensor(np.asarray(y), dtype=_DTYPE).reshape(-1, 1)
        covar = None if self.groups is None else additive_kernel(self.groups, X.shape[1])
        model = SingleTaskGP(X, Y, covar_module=covar, outcome_transform=Standardize(m=1))
        options = None
        if self._model is not None:
            state = {k: v for k, v in self._model.state_dict().items()
                     if not k.startswith("outcome_transform.")}
            model.load_state_dict(state, strict=False)
            if self.warm_maxiter is not None:  # botorch accepts a fit that stops at maxiter
                options = {"options": {"maxiter": int(self.warm_maxiter)}}
        with torch.random.fork_rng(devices=[]):  # fit_gpytorch_mll may resample on failure
            torch.manual_seed(self.seed)
            fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model), optimizer_kwargs=options)
        model.eval()
        self._model = model
        return self

    def condition(self, X: torch.Tensor, y: np.ndarray) -> PositionGP:
        """Condition the fitted GP on ``X``, ``y`` with its hyper-parameters and standardisation held."""
        model = self.model
        Y = torch.as_tensor(np.asarray(y), dtype=_DTYPE).reshape(-1)
        cast(Any, model).set_train_data(inputs=torch.as_tensor(X, dtype=_DTYPE), targets=_standardised(model, Y),
                                        strict=False)
        return self

    def predict(self, X: torch.Tensor, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        means, variances = [], []
        with torch.no_grad():
            for start in range(0, len(X), chunk):
                post = self.model.posterior(torch.as_tensor(X[start:start + chunk], dtype=_DTYPE))
                means.append(post.mean.reshape(-1))
                variances.append(post.variance.reshape(-1))
        return torch.cat(means).numpy(), torch.cat(variances).numpy()

    def posterior_sample(self, X: torch.Tensor, seed: int, chunk: int = 1024) -> np.ndarray:
        """One joint draw of ``f`` over ``X`` via botorch's pathwise (Matheron) sampling."""
        out = []
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(int(seed))
            acqf = PathwiseThompsonSampling(self.model)
            for start in range(0, len(X), chunk):
                Xc = torch.as_tensor(X[start:start + chunk], dtype=_DTYPE)
                out.append(acqf(Xc.unsqueeze(-2)).reshape(-1))
        return torch.cat(out).numpy()


def additive_kernel(groups: Sequence[Sequence[int]], n_columns: int) -> Kernel:
    """``sum_g s_g k_g``: one scaled RBF-ARD kernel per column group, with botorch's
    dimension-scaled lengthscale prior for the group's own dimension."""
    checked = check_groups(groups, n_columns) or ()
    parts = []
    for g in checked:
        scaled = ScaleKernel(get_covar_module_with_dim_scaled_prior(len(g), active_dims=tuple(g)))
        scaled.outputscale = 1.0 / len(checked)
        parts.append(scaled)
    return AdditiveKernel(*parts)


class StagedSurrogate:
    """An exact GP on the inputs while data are few, then deep kernel learning.

    A neural feature map fitted to a handful of points is poorly determined, while an ARD GP
    on the same inputs (here, the embedding) has a few hyper-parameters that L-BFGS fits well.
    Below ``switch_at`` measured points :class:`PositionGP` (it takes any inputs) is the
    surrogate; from then on the DKL surrogate. At the switch the DKL starts from the GP's kernel,
    noise and mean (:meth:`DKLSurrogate.start_from`), so it begins as that GP and learns a
    correction; later fits are warm-started as usual.

    Args:
        dkl: the surrogate used from ``switch_at`` points on.
        switch_at: number of measured points at which the DKL takes over.
        seed: seeds the GP's hyper-parameter restarts.
        groups: column groups of the GP stage's additive kernel (see :class:`PositionGP`); the
            DKL's base kernel should use the same, so that ``start_from`` can hand each over.
        gp_warm_maxiter: L-BFGS iterations of the GP stage's warm refits (``PositionGP.warm_maxiter``).
    """

    def __init__(self, dkl: DKLSurrogate, switch_at: int, seed: int = 0,
                 groups: Sequence[Sequence[int]] | None = None, gp_warm_maxiter: int | None = None) -> None:
        self.dkl = dkl
        self.gp = PositionGP(seed=seed, groups=groups, warm_maxiter=gp_warm_maxiter)
        self.switch_at = int(switch_at)
        self._active: Surrogate | None = None

    @property
    def active(self) -> Surrogate:
        if self._active is None:
            raise RuntimeError("StagedSurrogate has not been fitted yet: call fit(X, y) first")
        return self._active

    @property
    def model(self) -> Any:
        return self.active.model

    def fit(self, X: torch.Tensor, y: np.ndarray) -> StagedSurrogate:
        """``X``: ``n x D``, ``y``: ``n``; the GP below ``switch_at`` points, the DKL from then on."""
        if len(y) < self.switch_at:
            self._active = self.gp
            with warnings.catch_warnings():
                # the inputs are standardised features, not the unit cube botorch checks for; the
                # ARD lengthscales absorb the scale
                warnings.simplefilter("ignore", InputDataWarning)
                self.gp.fit(self._place(X), y)
            return self
        if self._active is self.gp:  # the switch: the DKL begins as the GP it replaces
            self.dkl.start_from(self.gp.model)
        self._active = self.dkl
        self.dkl.fit(X, y)
        return self

    def condition(self, X: torch.Tensor, y: np.ndarray) -> StagedSurrogate:
        """Condition the active stage on ``X``, ``y`` with its parameters held (see ``PositionGP.condition``)."""
        cast(Any, self.active).condition(self._place(X), y)
        return self

    def predict(self, X: torch.Tensor, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        return self.active.predict(self._place(X), chunk=chunk)

    def _place(self, X: torch.Tensor) -> torch.Tensor:
        """The GP stage runs on the CPU (it is small); the DKL on its own device."""
        return torch.as_tensor(X).cpu() if self._active is self.gp else X

    def posterior_sample(self, X: torch.Tensor, seed: int, chunk: int = 1024) -> np.ndarray:
        return self.active.posterior_sample(self._place(X), seed=seed, chunk=chunk)


class GPXYPolicy(SurrogatePolicy):
    """``gp-xy`` baseline: the acquisitions of :class:`SurrogatePolicy` on a GP over positions.

    Positions are scaled per axis to the unit square spanned by all candidates, so the GP sees
    where the probe would go and nothing of the local structure.
    """

    def __init__(self, acquisition: str = "ucb", beta: float = 4.0, seed: int = 0,
                 chunk: int = 1024) -> None:
        super().__init__(PositionGP(seed=seed), acquisition, beta, chunk, name="gp-xy")

    def inputs(self, ctx: SelectionContext) -> torch.Tensor:
        xy = torch.as_tensor(np.asarray(ctx.positions, dtype=np.float64))
        low, high = xy.min(0).values, xy.max(0).values
        span = torch.where(high > low, high - low, torch.ones_like(high))
        return (xy - low) / span


class RandomPolicy:
    """``random``: uniform over the candidates that are not excluded, drawn from ``ctx.rng``."""

    name = "random"

    def select(self, ctx: SelectionContext) -> Decision:
        t0 = time.perf_counter()
        allowed = _allowed(ctx)
        index = int(allowed[ctx.rng.integers(len(allowed))])
        return Decision(index, None, None, None, fit_s=0.0, select_s=time.perf_counter() - t0)


def raster_plan(grid_shape: tuple[int, int], budget: int) -> np.ndarray:
    """Serpentine visiting order of an evenly spaced sub-grid that fits in ``budget`` points.

    The sub-grid has ``r x c`` points at the centres of equal cells of the ``rows x cols`` grid,
    with ``r * c <= budget`` chosen to make the largest cell side (in grid steps) as small as
    possible, then to use as much of the budget as possible. Rows alternate direction.

    Returns:
        Row-major candidate indices in visiting order, ``min(budget, rows * cols)`` at most.
    """
    rows, cols = int(grid_shape[0]), int(grid_shape[1])
    budget = max(1, int(budget))
    best, best_key = (1, 1), (math.inf, 0)
    for r in range(1, min(rows, budget) + 1):
        c = min(cols, budget // r)
        key = (max(rows / r, cols / c), -r * c)
        if key < best_key:
            best, best_key = (r, c), key
    r, c = best
    row_idx = ((np.arange(r) + 0.5) * rows / r).astype(np.int64)
    col_idx = ((np.arange(c) + 0.5) * cols / c).astype(np.int64)
    return np.concatenate([row * cols + (col_idx if i % 2 == 0 else col_idx[::-1])
                           for i, row in enumerate(row_idx)])


class RasterPolicy:
    """``raster``: visit a coarse serpentine sub-grid that covers the field within the budget.

    The sub-grid (:func:`raster_plan`) is sized at the first ``select`` from ``ctx.budget_left``
    (or from ``budget`` when given, e.g. to resume an experiment with the original plan).
    Excluded sub-grid points are skipped; once the sub-grid is used up, the remaining candidates
    are taken in scan (index) order. Without ``grid_shape`` the candidates are one row, in order.
    """

    name = "raster"

    def __init__(self, budget: int | None = None) -> None:
        self.budget = budget
        self._plan: np.ndarray | None = None
        self._plan_key: tuple | None = None

    def select(self, ctx: SelectionContext) -> Decision:
        t0 = time.perf_counter()
        allowed = _allowed(ctx)
        excluded = np.asarray(ctx.excluded, dtype=bool)
        shape = (int(ctx.grid_shape[0]), int(ctx.grid_shape[1])) if ctx.grid_shape is not None else (1, len(excluded))
        if shape[0] * shape[1] != len(excluded):
            raise ValueError(f"grid_shape {shape} does not hold {len(excluded)} candidates")
        if self._plan is None or self._plan_key != shape:
            budget = self.budget if self.budget is not None else ctx.budget_left
            self._plan, self._plan_key = raster_plan(shape, budget), shape
        todo = self._plan[~excluded[self._plan]]
        index = int(todo[0]) if len(todo) else int(allowed[0])
        return Decision(index, None, None, None, fit_s=0.0, select_s=time.perf_counter() - t0)


def survey_values(patches: np.ndarray) -> np.ndarray:
    """The survey under the probe: each patch's centre pixel (index ``p // 2``), averaged over channels.

    ``patches``: ``M x C x p x p`` -> ``M``.
    """
    patches = np.asarray(patches)
    c = patches.shape[-1] // 2
    return patches[:, :, c, c].mean(axis=1).astype(np.float64)


class SurveyRankPolicy:
    """``survey-rank``: measure the candidates in order of the survey's value under the probe.

    Score ``s_i = v_i`` (``brightest=True``) or ``-v_i``, with ``v`` the survey value at each
    candidate (:func:`survey_values`); the best-scoring candidate not yet excluded is chosen, ties to
    the lowest index, NaN last. No model, no randomness.

    Args:
        values: ``M`` survey values, one per candidate.
        brightest: brightest first; ``False`` for darkest first.

    Example:
        >>> policy = SurveyRankPolicy(survey_values(candidates.patches), brightest=False)
        >>> policy.select(ctx).index   # the darkest candidate not yet measured
    """

    def __init__(self, values: np.ndarray, brightest: bool = True) -> None:
        self.values = np.asarray(values, dtype=np.float64)
        self.brightest = bool(brightest)
        self.name = "survey-rank-bright" if brightest else "survey-rank-dark"

    def select(self, ctx: SelectionContext) -> Decision:
        t0 = time.perf_counter()
        allowed = _allowed(ctx)
        if len(self.values) != len(ctx.positions):
            raise ValueError(f"{self.name}: {len(self.values)} survey values for {len(ctx.positions)} candidates")
        index = _argmax(self.values if self.brightest else -self.values, allowed)
        return Decision(index, None, None, None, fit_s=0.0, select_s=time.perf_counter() - t0)


def _check_acquisition(acquisition: str, beta: float) -> None:
    if acquisition not in ACQUISITIONS:
        raise ValueError(f"unknown acquisition {acquisition!r}; known: {', '.join(ACQUISITIONS)}")
    if not beta >= 0:
        raise ValueError(f"beta must be >= 0, got {beta}")


def feature_groups(input_dim: int, columns: dict[str, Any] | None = None) -> dict[str, tuple[int, ...]]:
    """The input groups of the surrogate's ``input_dim`` columns, from the counts
    :func:`aexp.features.with_surrogate_columns` records (``centre_columns``, ``gradient_columns``,
    ``neighbour_columns``, ``position_columns``): the embedding first, then the survey under the probe
    (centre pixels and gradient), the context (neighbour counts), the position last.
    Without the counts: the last two columns are the position, the rest the embedding."""
    columns = dict(columns) if columns else {"position_columns": 2}
    sizes = {
        "survey": int(columns.get("centre_columns", 0)) + int(columns.get("gradient_columns", 0)),
        "context": int(columns.get("neighbour_columns", 0)),
        "position": int(columns.get("position_columns", 0)),
    }
    embedding = input_dim - sum(sizes.values())
    if embedding < 0:
        raise ValueError(f"{input_dim} feature columns cannot hold the groups {sizes}")
    groups, start = {}, 0
    for name, size in {"embedding": embedding, **sizes}.items():
        groups[name] = tuple(range(start, start + size))
        start += size
    return {k: v for k, v in groups.items() if v}


def make_policy(policy: PolicyConfig | str, *, surrogate: SurrogateConfig | None = None,
                input_dim: int | None = None, seed: int = 0, device: str = "cpu",
                columns: dict[str, Any] | None = None) -> Policy:
    """The policy a config's ``policy`` section describes (with its ``surrogate`` section for ``dkl``).

    Args:
        policy: the section, one class per kind of :data:`POLICY_KINDS`; a kind's name stands for
            its section with the defaults.
        surrogate: the ``surrogate`` section, used by ``dkl`` only (``dkl`` kind with its defaults
            when omitted).
        input_dim: ``D`` of the candidate features; required for ``dkl``.
        seed: seeds the surrogate's initial weights / hyper-parameter restarts.
        device: torch device of the DKL surrogate.
        columns: counts of the feature columns by kind (the features record), which a ``groups``
            surrogate splits into input groups (:func:`feature_groups`); with its ``dkl_from`` the
            group average gains a DKL member built from the section's DKL settings (see
            :class:`~aexp.surrogates.groups.GroupAverage`).

    Example:
        >>> make_policy(DKLPolicyConfig(acquisition={"kind": "ucb", "beta": 2.0}), input_dim=5).beta
        2.0
    """
    if isinstance(policy, str) and policy not in KINDS["policy"].members:
        raise ValueError(f"unknown policy {policy!r}; known policies: {', '.join(POLICY_KINDS)}")
    section = KINDS["policy"].members[policy]() if isinstance(policy, str) else policy
    if isinstance(section, RandomPolicyConfig):
        return RandomPolicy()
    if isinstance(section, RasterPolicyConfig):
        return RasterPolicy()
    if not isinstance(section, (DKLPolicyConfig, GPXYPolicyConfig)):
        raise TypeError(f"make_policy takes a policy section, not {type(section).__name__}")
    acquisition = section.acquisition
    # beta weighs UCB only; the other acquisitions keep UCB's default for an operator's `set beta`
    beta = acquisition.beta if isinstance(acquisition, UCBConfig) else UCBConfig().beta
    if isinstance(section, GPXYPolicyConfig):
        return GPXYPolicy(acquisition.kind, beta, seed=seed)
    if input_dim is None:
        raise ValueError("policy 'dkl' needs input_dim (the number of feature columns)")
    model = surrogate if surrogate is not None else DKLSurrogateConfig()
    if isinstance(model, GroupsSurrogateConfig):
        from aexp.surrogates.groups import GroupAverage

        groups_of = feature_groups(input_dim, columns)
        member = None
        if model.dkl_from:  # the DKL member reads every column; its base kernel is split as the groups are
            starts = list(groups_of.values())
            member = _deep_kernel(model, input_dim, starts if len(starts) > 1 else None, seed=seed, device=device)
        average = GroupAverage(groups_of, seed=seed, dkl=member, dkl_from=model.dkl_from, joint=model.joint)
        return SurrogatePolicy(average, acquisition.kind, beta, name="dkl")
    return SurrogatePolicy(dkl_surrogate(model, input_dim, seed=seed, device=device), acquisition.kind, beta,
                           name="dkl")


def _deep_kernel(section: DKLNetwork, input_dim: int, groups: list[tuple[int, ...]] | None, *, seed: int,
                 device: str) -> DKLSurrogate:
    return DKLSurrogate(input_dim, feature_dim=section.feature_dim, hidden=tuple(section.hidden),
                        kernel=section.kernel, lr=section.lr, iterations=section.iterations,
                        warm_iterations=section.warm_iterations, base_kernel=section.base_kernel,
                        groups=groups, seed=seed, device=device)


def dkl_surrogate(section: DKLSurrogateConfig, input_dim: int, *, seed: int = 0, device: str = "cpu") -> Surrogate:
    """The surrogate a ``surrogate: {kind: dkl}`` section describes over ``input_dim`` feature columns:
    a :class:`~aexp.surrogates.dkl.DKLSurrogate`, behind an exact GP for the first ``gp_until`` points."""
    groups = None
    if section.position_kernel == "additive":  # the last two columns are the position (with_position)
        if input_dim < 3:
            raise ValueError("position_kernel: additive needs feature columns besides (x, y)")
        groups = [tuple(range(input_dim - 2)), (input_dim - 2, input_dim - 1)]
    dkl = _deep_kernel(section, input_dim, groups, seed=seed, device=device)
    if section.gp_until == 0:
        return dkl
    return StagedSurrogate(dkl, section.gp_until, seed=seed, groups=groups, gp_warm_maxiter=section.gp_warm_maxiter)
