"""Deep kernel learning: an exact Gaussian process on a learned feature map of the candidates.

``f(x) ~ GP(c, s * k(g(x), g(x')))`` where ``g`` is an MLP squashed into ``[-1, 1]^d`` by
``tanh``, ``k`` is an ARD RBF or Matern-5/2 kernel and ``s`` an output scale. The feature map and
the GP hyper-parameters are trained together by maximising the exact marginal likelihood of the
measured targets (standardised internally) with Adam. Later fits warm-start from the previous
weights, which is what makes a decision per measurement affordable on a laptop.

Numbers: everything (feature map, kernel, likelihood) runs in float64. At ``n = 200`` the GP
algebra is tiny, and the feature map is evaluated on ``n`` points per training iteration, so the
double-precision cost is small; it buys Cholesky factorisations that do not need jitter.

Predictions for many candidates use one flat marginal posterior per chunk instead of gpytorch's
``b x 1 x D`` t-batches: in eval mode an exact GP concatenates the training inputs to every
t-batch, which would run the feature map over the ``n`` training points once per candidate.

Example:
    >>> surrogate = DKLSurrogate(input_dim=5).fit(X_measured, y_measured)
    >>> mean, var = surrogate.predict(X_all)              # original target units
    >>> ucb = UpperConfidenceBound(surrogate.model, beta=4.0)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from botorch.models.gpytorch import GPyTorchModel
from botorch.models.transforms.outcome import Standardize
from botorch.posteriors.gpytorch import GPyTorchPosterior
from botorch.posteriors.transformed import TransformedPosterior
from gpytorch import settings as gpytorch_settings
from gpytorch.distributions import MultivariateNormal
from gpytorch.kernels import AdditiveKernel, Kernel, MaternKernel, RBFKernel, ScaleKernel
from gpytorch.kernels.kernel import sq_dist
from gpytorch.kernels.rbf_kernel import postprocess_rbf
from gpytorch.likelihoods import GaussianLikelihood
from gpytorch.means import ConstantMean
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.models import ExactGP
from linear_operator.operators import DiagLinearOperator
from linear_operator.utils.cholesky import psd_safe_cholesky
from linear_operator.utils.errors import NotPSDError
from torch import Tensor, nn

__all__ = ["DKLSurrogate", "DeepKernelGP", "FeatureMap", "PosteriorPath", "KERNELS", "check_groups"]

DTYPE = torch.float64
KERNELS = ("rbf", "matern52")


class FeatureMap(nn.Module):
    """MLP ``D -> hidden... -> d`` followed by ``tanh``, so features lie in ``[-1, 1]^d``.

    With ``skip`` the raw input is passed on beside the learned features, so a kernel can also
    compare candidates directly (see :class:`DKLSurrogate`'s ``base_kernel``).

    ``tanh`` rather than a min/max rescaling of the training features: it has no state that
    depends on the batch, and candidates far from the measured ones are not clamped onto the edge
    of the training range.
    """

    def __init__(self, input_dim: int, feature_dim: int, hidden: Sequence[int],
                 skip: bool = False) -> None:
        super().__init__()
        self.skip = skip
        widths = [input_dim, *hidden]
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(fan_in, fan_out), nn.SiLU()]
        layers.append(nn.Linear(widths[-1], feature_dim))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """``... x D`` -> ``... x d`` (``... x (d + D)`` with ``skip``: ``[g(x), x]``)."""
        z = torch.tanh(self.mlp(x))
        return torch.cat([z, x], dim=-1) if self.skip else z


class DeepKernelGP(ExactGP, GPyTorchModel):
    r"""Exact GP on learned features, usable wherever botorch expects a ``Model``.

    Targets are standardised by a botorch ``Standardize`` outcome transform, so posteriors come
    out in the original units. ``posterior`` of ``batch x 1 x D`` inputs (the shape analytic
    acquisition functions use) is computed as one flat marginal posterior over all points from a
    cached Cholesky factor; ``q > 1`` joint posteriors go through gpytorch's exact route.

    Args:
        train_X: ``n x D`` inputs.
        train_Y: ``n x 1`` targets, original units.
        feature_map: the neural feature map ``g``.
        covar_module: kernel on the features (``ScaleKernel`` of an ARD base kernel).
    """

    _num_outputs = 1

    def __init__(self, train_X: Tensor, train_Y: Tensor, feature_map: FeatureMap,
                 covar_module: Kernel) -> None:
        outcome_transform = Standardize(m=1).to(train_Y)
        train_Y_std, _ = outcome_transform(train_Y)
        outcome_transform.eval()
        super().__init__(train_X, train_Y_std.squeeze(-1), GaussianLikelihood())
        self.feature_map = feature_map
        self.mean_module = ConstantMean()
        self.covar_module = covar_module
        self.outcome_transform = outcome_transform
        self._marginal_cache: tuple[Tensor, Tensor, Tensor, Tensor] | None = None
        self.to(train_X)

    def forward(self, X: Tensor) -> MultivariateNormal:
        z = self.feature_map(X)
        return MultivariateNormal(self.mean_module(z), self.covar_module(z))

    def train(self, mode: bool = True) -> DeepKernelGP:
        if mode:  # parameters may change: drop the cached factorisation
            self._marginal_cache = None
        return super().train(mode)

    def posterior(  # type: ignore[override]  # GPyTorchModel's own signature, which narrows Model's
        self, X: Tensor, observation_noise: bool | Tensor = False, posterior_transform: Any = None, **kwargs: Any
    ) -> GPyTorchPosterior | TransformedPosterior:
        """Posterior of ``f`` at ``X`` (``batch x q x D``) in original target units."""
        if X.dim() < 3 or X.shape[-2] != 1 or isinstance(observation_noise, Tensor) or kwargs:
            return super().posterior(X, observation_noise=observation_noise,
                                     posterior_transform=posterior_transform, **kwargs)
        if self.training:  # eval() walks every submodule: a millisecond per chunk when repeated
            self.eval()
        mean, var = self.marginal(X.reshape(-1, X.shape[-1]))
        if observation_noise:
            var = var + self.likelihood.noise
        shape = X.shape[:-1]
        mvn = MultivariateNormal(mean.view(shape), DiagLinearOperator(var.view(shape)))
        posterior = self.outcome_transform.untransform_posterior(GPyTorchPosterior(mvn))
        if posterior_transform is None:
            return posterior
        return cast(GPyTorchPosterior, posterior_transform(posterior))  # a scalarisation keeps the family

    def moments(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """Marginal mean and variance of ``f`` at each row of ``X`` (``b x D``), original units.

        The values of ``posterior(X.unsqueeze(-2))``, bit for bit (botorch's ``Standardize``
        order, ``m + s mu`` and ``(s var) s``, then gpytorch's floor on a variance), without
        building the posterior objects for each chunk of candidates.
        """
        if self.training:
            self.eval()
        mean, var = self.marginal(X)
        s, m = self.outcome_transform.stdvs.squeeze(-1), self.outcome_transform.means.squeeze(-1)
        # the posterior's variance is clamped by gpytorch's MultivariateNormal.variance
        return m + s * mean, ((s * var) * s).clamp_min(gpytorch_settings.min_variance.value(var.dtype))

    def moments_and_weights(self, X: Tensor, rows: Sequence[int]) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`moments`, and how the mean at each row of ``X`` moves with training targets ``rows``.

        The posterior mean is linear in the targets, ``mu(x) = c + k(x, Z) (K + noise I)^{-1} y``;
        with the kernel held, ``W[:, j] = d mu / d y[rows[j]] = K_xZ (K + noise I)^{-1} e_{rows[j]}``
        (unit-free: the standardisation cancels), and the variance does not depend on ``y`` at all.
        So the posterior after a believed target turns out to be ``y``: ``mu + W (y - y_believed)``.

        Returns:
            ``(mean, var, W)``: ``b``, ``b`` and ``b x len(rows)``.
        """
        mean, var, K_xZ = self._marginal(X)
        _, L, _ = self._cache()
        W = K_xZ @ torch.cholesky_solve(unit_columns(L.shape[0], rows, L), L)
        s, m = self.outcome_transform.stdvs.squeeze(-1), self.outcome_transform.means.squeeze(-1)
        return m + s * mean, ((s * var) * s).clamp_min(gpytorch_settings.min_variance.value(var.dtype)), W

    def marginal(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """Marginal mean and variance of ``f`` at each row of ``X`` (``b x D``), standardised units.

        ``mean = c + K_xZ alpha``, ``var = k(x, x) - |L^{-1} K_Zx|^2`` with
        ``L L^T = K_ZZ + noise I`` and ``Z`` the training features.
        """
        mean, var, _ = self._marginal(X)
        return mean, var

    def relabel(self, targets: Tensor, inputs: Tensor | None = None) -> None:
        """Condition on other targets (``n``, standardised units), and inputs when given, with every
        parameter held."""
        cast(Any, self).set_train_data(inputs=inputs, targets=targets, strict=False)  # gpytorch's, untyped
        self._marginal_cache = None

    def _marginal(self, X: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        Z, L, alpha = self._cache()
        z = self.feature_map(X)
        parts = _stationary_parts(self.covar_module)
        if parts is None:  # a kernel the direct route does not know: gpytorch's own evaluation
            K_xZ, prior_var = self.covar_module(z, Z).to_dense(), self.covar_module(z, diag=True)
        else:
            K_xZ, prior_var = _cross_covariance(parts, z, Z), _prior_variance(parts, z)
        mean = self.mean_module(z) + K_xZ @ alpha
        v = torch.linalg.solve_triangular(L, K_xZ.transpose(-1, -2), upper=False)
        var = prior_var - v.square().sum(-2)
        return mean, var.clamp_min(1e-12), K_xZ

    def training_inputs(self) -> Tensor:
        """The training inputs ``N x D`` (gpytorch keeps them as a tuple of one tensor)."""
        inputs = cast(tuple[Tensor, ...], self.train_inputs)  # an ExactGP attribute torch cannot type
        return inputs[0]

    def _cache(self) -> tuple[Tensor, Tensor, Tensor]:
        train_X = self.training_inputs()
        if self._marginal_cache is None or self._marginal_cache[0] is not train_X:
            if train_X.dim() != 2:
                raise ValueError("the flat posterior route needs non-batched training data")
            with torch.no_grad():
                Z = self.feature_map(train_X)
                K = self.covar_module(Z).to_dense()
                K = K + self.likelihood.noise * torch.eye(len(Z), dtype=K.dtype, device=K.device)
                L = psd_safe_cholesky(K)
                resid = (self.train_targets - self.mean_module(Z)).unsqueeze(-1)
                alpha = torch.cholesky_solve(resid, L).squeeze(-1)
            self._marginal_cache = (train_X, Z, L, alpha)
        _, Z, L, alpha = self._marginal_cache
        return Z, L, alpha


#: One term ``s * k_RBF((x[dims] - x'[dims]) / lengthscale)`` of a sum of scaled ARD RBF kernels:
#: ``(dims, lengthscale, outputscale)``.
_Term = tuple[Tensor | None, Tensor, Tensor]


def _stationary_parts(kernel: Kernel) -> list[_Term] | None:
    """The terms of ``kernel`` when it is a ``ScaleKernel`` of an ARD RBF (``ard_num_dims > 1``)
    or a sum of such (what :class:`DKLSurrogate` builds with ``kernel="rbf"``); else ``None``."""
    terms = kernel.kernels if isinstance(kernel, AdditiveKernel) else [kernel]
    out: list[_Term] = []
    for term in terms:
        if not isinstance(term, ScaleKernel):
            return None
        base = term.base_kernel
        # exactly RBFKernel: a subclass may compute something else; one dimension takes another
        # route in gpytorch. The columns are the ScaleKernel's (it calls its base's forward)
        if type(base) is not RBFKernel or (base.ard_num_dims or 0) <= 1:
            return None
        out.append((term.active_dims, base.lengthscale, term.outputscale))
    return out


def _cross_covariance(parts: list[_Term], x: Tensor, Z: Tensor) -> Tensor:
    """``sum_t s_t exp(-|(x - z) / l_t|^2 / 2)`` over the terms, ``b x d`` and ``n x d`` -> ``b x n``.

    The same operations in the same order as gpytorch's lazily evaluated kernel (its ``sq_dist``,
    ``postprocess_rbf``, the scale, the sum), so the values are bit for bit gpytorch's; only the
    lazy tensors' bookkeeping, a large part of the cost at ``b = 1024``, is skipped.
    """
    out: Tensor | None = None
    for dims, lengthscale, scale in parts:
        a = x if dims is None else x.index_select(-1, dims)
        b = Z if dims is None else Z.index_select(-1, dims)
        a, b = a.div(lengthscale), b.div(lengthscale)
        k = postprocess_rbf(sq_dist(a, b, torch.equal(a, b))).mul(scale.view(*scale.shape, 1, 1))
        out = k if out is None else out + k
    assert out is not None  # a kernel has at least one term
    return out


def _prior_variance(parts: list[_Term], x: Tensor) -> Tensor:
    """``k(x, x) = sum_t s_t`` for every row of ``x`` (``b x d`` -> ``b``): stationary terms."""
    out: Tensor | float = 0
    for _, _, scale in parts:  # gpytorch: exp(0) * s, summed from 0 in the terms' order
        out = out + torch.ones(x.shape[:-1], dtype=x.dtype, device=x.device) * scale.unsqueeze(-1)
    return cast(Tensor, out)


@dataclass(frozen=True, eq=False)
class PosteriorPath:
    """One joint draw of ``f`` from the posterior, as a function that can be evaluated anywhere.

    Pathwise conditioning (Matheron's rule): ``f(x) = f0(x) + K_xZ (K_ZZ + noise I)^{-1}
    (y - f0(Z) - eps)`` where ``f0`` is a prior draw approximated by ``num_features`` random
    Fourier features of the kernel in the learned feature space and ``eps ~ N(0, noise I)``. The
    update term is exact. Evaluate in chunks: the draw is the same function for every chunk.
    """

    model: DeepKernelGP
    frequencies: Tensor   # L x d, already divided by the lengthscales (zero off a term's dims)
    phases: Tensor        # L
    weights: Tensor       # L, times sqrt(2 s / L)
    update: Tensor        # n

    def __call__(self, X: Tensor) -> Tensor:
        """``b x D`` -> ``b`` sample values in original target units."""
        m = self.model
        Z = m._cache()[0]
        z = m.feature_map(X)
        prior = torch.cos(z @ self.frequencies.T + self.phases) @ self.weights
        f = m.mean_module(z) + prior + m.covar_module(z, Z).to_dense() @ self.update
        return f * m.outcome_transform.stdvs.squeeze() + m.outcome_transform.means.squeeze()


def draw_posterior_path(model: DeepKernelGP, generator: torch.Generator,
                        num_features: int = 1024) -> PosteriorPath:
    """Draw a :class:`PosteriorPath` from a fitted :class:`DeepKernelGP`.

    A sum of scaled kernels gets ``num_features`` random Fourier features per term, each acting
    on its own columns of the feature map's output (independent priors add up).
    """
    opts: dict[str, Any] = {"dtype": DTYPE, "device": model.train_targets.device, "generator": generator}
    Z, L, _ = model._cache()
    terms = getattr(model.covar_module, "kernels", [model.covar_module])
    freqs, weights = [], []
    with torch.no_grad():
        for scale_kernel in terms:
            base = scale_kernel.base_kernel
            dims = base.active_dims if base.active_dims is not None else torch.arange(Z.shape[-1])
            omega = torch.randn(num_features, len(dims), **opts)
            if isinstance(base, MaternKernel):  # spectral density: Student-t with 2 nu dof
                dof = int(round(2 * base.nu))
                chi2 = torch.randn(num_features, dof, **opts).square().sum(-1, keepdim=True)
                omega = omega * torch.sqrt(dof / chi2)
            f = torch.zeros(num_features, Z.shape[-1], dtype=DTYPE, device=Z.device)
            f[:, dims] = omega / base.lengthscale.reshape(1, -1)
            freqs.append(f)
            amplitude = torch.sqrt(2 * scale_kernel.outputscale / num_features)
            weights.append(amplitude * torch.randn(num_features, **opts))
        frequencies, w = torch.cat(freqs), torch.cat(weights)
        phases = 2 * math.pi * torch.rand(len(frequencies), **opts)
        prior_at_Z = torch.cos(Z @ frequencies.T + phases) @ w
        eps = model.likelihood.noise.sqrt() * torch.randn(len(Z), **opts)
        resid = model.train_targets - model.mean_module(Z) - prior_at_Z - eps
        update = torch.cholesky_solve(resid.unsqueeze(-1), L).squeeze(-1)
    return PosteriorPath(model, frequencies, phases, w, update)


class DKLSurrogate:
    """Deep kernel learning surrogate with warm-started refits.

    Args:
        input_dim: ``D``, columns of the candidate features.
        feature_dim: ``d``, dimension of the learned feature space (2 in the reference work).
        hidden: widths of the MLP's hidden layers.
        kernel: ``"rbf"`` or ``"matern52"`` (both ARD over the ``d`` features).
        lr: Adam learning rate.
        iterations: Adam steps of the first fit (from scratch).
        warm_iterations: Adam steps of every later fit, started from the previous weights.
        base_kernel: add an ARD kernel on the raw inputs to the deep kernel,
            ``k = s1 k(g(x), g(x')) + s2 k(x, x')``. With a handful of measurements the learned
            map ``g`` is poorly determined; the marginal likelihood can then lean on the base
            kernel, and shift weight to the deep part as data accumulate.
        groups: with ``base_kernel``, split the raw inputs into disjoint column groups with one
            scaled ARD kernel each, ``s2 k(x_g1, x'_g1) + s3 k(x_g2, x'_g2) + ...`` (e.g. the
            embedding and the position; see :class:`~aexp.policies.PositionGP`). ``None``: one
            kernel over all columns.
        seed: seeds the initial weights; the global torch RNG is left untouched.
        device: torch device for the model and the computations.

    Attributes (after ``fit``):
        loss_history_: negative marginal log-likelihood per data point at each Adam step of the
            last fit, before that step (``loss_history_[0]`` is the starting loss).
        n_fits_: number of fits so far.

    Example:
        >>> s = DKLSurrogate(input_dim=5, seed=0).fit(X[:20], y[:20])
        >>> s.fit(X[:25], y[:25])            # warm start, 15 Adam steps
        >>> mean, var = s.predict(X)
    """

    def __init__(self, input_dim: int, feature_dim: int = 2, hidden: Sequence[int] = (64, 32),
                 kernel: str = "rbf", lr: float = 0.01, iterations: int = 200,
                 warm_iterations: int = 15, base_kernel: bool = True,
                 groups: Sequence[Sequence[int]] | None = None, seed: int = 0,
                 device: str | torch.device = "cpu"):
        if kernel not in KERNELS:
            raise ValueError(f"unknown kernel {kernel!r}; known kernels: {', '.join(KERNELS)}")
        if input_dim < 1 or feature_dim < 1 or any(h < 1 for h in hidden):
            raise ValueError("input_dim, feature_dim and hidden widths must be positive")
        if iterations < 0 or warm_iterations < 0:
            raise ValueError("iterations and warm_iterations must be >= 0")
        self.input_dim = int(input_dim)
        self.feature_dim = int(feature_dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.kernel = kernel
        self.lr = float(lr)
        self.iterations = int(iterations)
        self.warm_iterations = int(warm_iterations)
        self.base_kernel = bool(base_kernel)
        self.groups = check_groups(groups, self.input_dim)
        if self.groups is not None and not self.base_kernel:
            raise ValueError("groups split the base kernel's inputs: they need base_kernel=True")
        self.seed = int(seed)
        self.device = torch.device(device)
        self._model: DeepKernelGP | None = None
        self._start: dict[str, Any] | None = None  # lengthscales / outputscales: a tensor per kernel part
        self.loss_history_: list[float] = []
        self.n_fits_ = 0
        self.n_restarts_ = 0  # warm fits that failed and were fitted again from the start

    def start_from(self, gp: Any) -> DKLSurrogate:
        """Begin the first fit where a fitted exact ARD GP on the same inputs left off.

        The base kernel takes the GP's lengthscales (and output scale), the likelihood its noise
        and the mean its constant; the deep term starts with a tenth of that output scale. The
        DKL then begins as that GP and learns a correction from there, instead of relearning the
        kernel from library defaults. Needs ``base_kernel=True``.
        """
        if not self.base_kernel:
            raise ValueError("start_from needs base_kernel=True: the GP's kernel becomes the base kernel")
        covar = gp.covar_module
        parts = list(covar.kernels) if isinstance(covar, AdditiveKernel) else [covar]
        sizes = [len(g) for g in self.groups] if self.groups is not None else [self.input_dim]
        if len(parts) != len(sizes):
            raise ValueError(f"the GP's kernel has {len(parts)} additive part(s); this DKL's base "
                             f"kernel has {len(sizes)} (groups={self.groups})")
        opts: dict[str, Any] = {"dtype": DTYPE, "device": self.device}
        lengthscales, scales = [], []
        for part, size in zip(parts, sizes):
            scale = getattr(part, "outputscale", None)
            kernel = part.base_kernel if scale is not None else part
            lengthscale = kernel.lengthscale.detach().reshape(-1)
            if lengthscale.numel() != size:
                raise ValueError(f"the GP's kernel part has {lengthscale.numel()} lengthscales "
                                 f"where this DKL's has {size} inputs")
            lengthscales.append(lengthscale.to(**opts))
            scales.append((scale.detach() if scale is not None else torch.tensor(1.0)).to(**opts))
        self._start = {
            "lengthscales": lengthscales,
            "outputscales": scales,
            "noise": gp.likelihood.noise.detach().reshape(-1).to(**opts),
            "constant": gp.mean_module.constant.detach().reshape(-1).to(**opts),
        }
        return self

    @property
    def model(self) -> DeepKernelGP:
        """The fitted botorch ``Model`` (a new object after every ``fit``)."""
        if self._model is None:
            raise RuntimeError("DKLSurrogate has not been fitted yet: call fit(X, y) first")
        return self._model

    def fit(self, X: Tensor | np.ndarray, y: Tensor | np.ndarray) -> DKLSurrogate:
        """Train on ``X`` (``n x D``) and ``y`` (``n``); warm-starts after the first call."""
        X = self._as_inputs(X, "X")
        y = torch.as_tensor(y).to(device=self.device, dtype=DTYPE)
        if y.dim() != 1 or len(y) != len(X):
            raise ValueError(f"y must hold one target per row of X ({len(X)}), got shape "
                             f"{tuple(y.shape)}")
        if len(X) == 0:
            raise ValueError("cannot fit on zero measured points")
        if not torch.isfinite(y).all():
            raise ValueError("y contains NaN or infinite targets")
        model = self._build(X, y.unsqueeze(-1))
        if self._model is None:
            self.loss_history_ = self._first_fit(model)
        else:
            state = {k: v for k, v in self._model.state_dict().items()
                     if not k.startswith("outcome_transform.")}
            model.load_state_dict(state, strict=False)
            try:
                self.loss_history_ = _train(model, self.warm_iterations, self.lr)
            except NotPSDError as exc:
                # The warm fit has walked into a kernel that no longer factorises: typically a
                # length-scale of the learned features collapsed towards zero (every point its
                # own island, the noise at its floor), where rounding in the squared distances
                # makes the kernel matrix indefinite. The campaign must go on: start this fit
                # again from scratch, as the first one was, on every measured point. A run that
                # never gets here is unchanged.
                warnings.warn(f"DKL: the warm fit on {len(X)} points failed ({exc}); fitted again from the "
                              f"start ({self.iterations} iterations)", RuntimeWarning, stacklevel=2)
                model = self._build(X, y.unsqueeze(-1))
                self.loss_history_ = self._first_fit(model)
                self.n_restarts_ += 1
        model.eval()
        self._model = model
        self.n_fits_ += 1
        return self

    def _first_fit(self, model: DeepKernelGP) -> list[float]:
        """``iterations`` Adam steps from the model as built (begun as the GP stage's GP when there is one)."""
        if self._start is not None:
            _begin_as_gp(model, self._start)
        return _train(model, self.iterations, self.lr)

    def condition(self, X: Tensor | np.ndarray, y: Tensor | np.ndarray) -> DKLSurrogate:
        """Condition the fitted model on ``X``, ``y`` (e.g. the fit's data and believed points in
        flight) with every parameter and the targets' standardisation held: no training."""
        X = self._as_inputs(X, "X")
        y = torch.as_tensor(y).to(device=self.device, dtype=DTYPE).reshape(-1)
        transform = self.model.outcome_transform
        self.model.relabel((y - transform.means.reshape(-1)) / transform.stdvs.reshape(-1), inputs=X)
        return self

    def predict(self, X: Tensor | np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and variance of ``f`` (no observation noise), original units.

        Args:
            X: ``M x D`` candidate features.
            chunk: rows per chunk; memory and time grow with it (1024 is a good size).

        Returns:
            ``(mean, var)``, two float64 arrays of length ``M``.
        """
        model = self.model
        means, variances = [], []
        with torch.no_grad():
            for start in range(0, len(X), chunk):
                Xc = self._as_inputs(X[start:start + chunk], "X")
                post = model.posterior(Xc.unsqueeze(-2))
                means.append(post.mean.reshape(-1))
                variances.append(post.variance.reshape(-1))
        if not means:
            return np.zeros(0), np.zeros(0)
        return torch.cat(means).cpu().numpy(), torch.cat(variances).cpu().numpy()

    def posterior_sample(self, X: Tensor | np.ndarray, seed: int, chunk: int = 1024,
                         num_features: int = 1024) -> np.ndarray:
        """One joint posterior draw of ``f`` at every row of ``X`` (``M x D``), original units.

        Pathwise sampling (see :class:`PosteriorPath`): cost ``O(M (num_features + n))``, no
        ``M x M`` covariance. The same seed gives the same draw.
        """
        generator = torch.Generator(device=self.device).manual_seed(int(seed))
        path = draw_posterior_path(self.model, generator, num_features)
        with torch.no_grad():
            values = [path(self._as_inputs(X[s:s + chunk], "X")) for s in range(0, len(X), chunk)]
        return torch.cat(values).cpu().numpy() if values else np.zeros(0)

    def _as_inputs(self, X: Tensor | np.ndarray, name: str) -> Tensor:
        X = torch.as_tensor(X).to(device=self.device, dtype=DTYPE)
        if X.dim() != 2 or X.shape[1] != self.input_dim:
            raise ValueError(f"{name} must be n x {self.input_dim} (input_dim), got shape "
                             f"{tuple(X.shape)}")
        if not torch.isfinite(X).all():
            raise ValueError(f"{name} contains NaN or infinite features")
        return X

    def _build(self, X: Tensor, Y: Tensor) -> DeepKernelGP:
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            d, D = self.feature_dim, self.input_dim
            feature_map = FeatureMap(D, d, self.hidden, skip=self.base_kernel)
            covar = ScaleKernel(self._ard(range(d)))
            if self.base_kernel:  # k(g(x), g(x')) + k(x, x') (per group), each with its own scale
                for g in self.groups if self.groups is not None else [range(D)]:
                    covar = covar + ScaleKernel(self._ard([d + c for c in g]))
            return DeepKernelGP(X, Y, feature_map, covar)

    def _ard(self, dims: Sequence[int]) -> Kernel:
        """ARD kernel of the configured kind acting on columns ``dims`` of the feature map's output."""
        if self.kernel == "rbf":
            return RBFKernel(ard_num_dims=len(dims), active_dims=tuple(dims))
        return MaternKernel(nu=2.5, ard_num_dims=len(dims), active_dims=tuple(dims))


def unit_columns(n: int, rows: Sequence[int], like: Tensor) -> Tensor:
    """``n x len(rows)``: column ``j`` is the unit vector of ``rows[j]`` (``like``'s dtype and device)."""
    E = torch.zeros(n, len(rows), dtype=like.dtype, device=like.device)
    E[list(rows), torch.arange(len(rows))] = 1.0
    return E


def check_groups(groups: Sequence[Sequence[int]] | None,
                 n_columns: int | None = None) -> tuple[tuple[int, ...], ...] | None:
    """``groups`` as tuples, checked: non-empty, disjoint column indices below ``n_columns``."""
    if groups is None:
        return None
    out = tuple(tuple(int(c) for c in g) for g in groups)
    flat = [c for g in out for c in g]
    if not out or any(not g for g in out) or any(c < 0 for c in flat) or len(set(flat)) != len(flat):
        raise ValueError(f"groups must be non-empty, disjoint lists of column indices, got {groups}")
    if n_columns is not None and max(flat) >= n_columns:
        raise ValueError(f"groups name column {max(flat)}, but the inputs have {n_columns} columns")
    return out


def _begin_as_gp(model: DeepKernelGP, start: dict[str, Any]) -> None:
    """Set a fresh model's base kernel(s), noise and mean to a fitted GP's (see ``start_from``)."""
    deep, *bases = model.covar_module.kernels
    for base, lengthscale, scale in zip(bases, start["lengthscales"], start["outputscales"]):
        base.base_kernel.lengthscale = lengthscale.reshape(1, -1)
        base.outputscale = scale
    deep.outputscale = 0.1 * max(start["outputscales"])
    model.likelihood.noise = start["noise"].clamp_min(1e-4)
    model.mean_module.constant = start["constant"]


def _train(model: DeepKernelGP, steps: int, lr: float) -> list[float]:
    """Adam on the exact negative marginal log-likelihood; returns the loss before each step."""
    model.train()
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    X, y = model.training_inputs(), model.train_targets
    history = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = -mll(model(X), y)
        loss.backward()
        optimizer.step()
        history.append(float(loss.detach()))
    return history
