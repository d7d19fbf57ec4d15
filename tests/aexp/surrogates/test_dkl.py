"""Behaviour of the deep kernel learning surrogate (aexp.surrogates.dkl)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from botorch.acquisition import UpperConfidenceBound, qLogExpectedImprovement
from botorch.models.gpytorch import GPyTorchModel

from aexp.surrogates.dkl import DKLSurrogate


def _nonlinear(X: torch.Tensor) -> torch.Tensor:
    return torch.sin(2 * X[:, 0]) + 0.5 * X[:, 1] ** 2 - X[:, 2] * X[:, 3]


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(400, 5, generator=g)
    y = _nonlinear(X) + 0.05 * torch.randn(400, generator=g)
    return X, y


@pytest.fixture(scope="module")
def fitted(data) -> DKLSurrogate:
    X, y = data
    return DKLSurrogate(input_dim=5, iterations=150, seed=0).fit(X[:150], y[:150])


def test_fits_a_nonlinear_function_better_than_a_constant(fitted, data):
    X, y = data
    mean, var = fitted.predict(X[200:])
    truth = y[200:].numpy()
    r2 = 1 - np.mean((mean - truth) ** 2) / np.var(truth)
    assert r2 > 0.7
    assert mean.shape == var.shape == (200,) and np.all(var > 0)


def test_warm_start_begins_lower_than_scratch_and_uses_warm_iterations(data):
    X, y = data
    warm = DKLSurrogate(input_dim=5, iterations=150, warm_iterations=20, seed=0)
    warm.fit(X[:60], y[:60])
    assert len(warm.loss_history_) == 150
    warm.fit(X[:65], y[:65])  # five new points
    scratch = DKLSurrogate(input_dim=5, iterations=150, seed=0).fit(X[:65], y[:65])
    assert len(warm.loss_history_) == 20 and warm.n_fits_ == 2
    assert warm.loss_history_[0] < scratch.loss_history_[0] - 0.3
    assert warm.loss_history_[-1] < scratch.loss_history_[0]


def test_same_seed_same_fit_without_global_side_effects(data):
    X, y = data
    rng_state, dtype = torch.get_rng_state(), torch.get_default_dtype()
    a = DKLSurrogate(input_dim=5, iterations=30, warm_iterations=5, seed=3)
    b = DKLSurrogate(input_dim=5, iterations=30, warm_iterations=5, seed=3)
    for s in (a, b):
        s.fit(X[:40], y[:40]).fit(X[:45], y[:45])
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert torch.get_default_dtype() == dtype
    assert a.loss_history_ == b.loss_history_
    np.testing.assert_array_equal(a.predict(X[300:])[0], b.predict(X[300:])[0])
    c = DKLSurrogate(input_dim=5, iterations=30, seed=4).fit(X[:40], y[:40])
    d = DKLSurrogate(input_dim=5, iterations=30, seed=3).fit(X[:40], y[:40])
    assert not np.allclose(c.predict(X[300:])[0], d.predict(X[300:])[0])


def test_predictions_are_in_original_target_units(data):
    X, y = data
    a = DKLSurrogate(input_dim=5, iterations=40, seed=0).fit(X[:50], y[:50])
    b = DKLSurrogate(input_dim=5, iterations=40, seed=0).fit(X[:50], 1000 * y[:50] + 7)
    (ma, va), (mb, vb) = a.predict(X[300:]), b.predict(X[300:])
    np.testing.assert_allclose(mb, 1000 * ma + 7, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(vb, 1e6 * va, rtol=1e-3)


def test_flat_posterior_matches_gpytorch_joint_posterior(fitted, data):
    X = data[0][300:340].double()
    mean, var = fitted.predict(X, chunk=16)
    model = fitted.model
    with torch.no_grad():
        joint = GPyTorchModel.posterior(model, X)  # gpytorch's own exact prediction, q = 40
        tbatch = model.posterior(X.unsqueeze(-2))  # 40 x 1 x D, the acquisition shape
    np.testing.assert_allclose(joint.mean.reshape(-1).numpy(), mean, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(joint.variance.reshape(-1).numpy(), var, rtol=1e-6, atol=1e-10)
    assert tbatch.mean.shape == (40, 1, 1)
    np.testing.assert_allclose(tbatch.variance.reshape(-1).numpy(), var, rtol=1e-12)


@pytest.mark.parametrize("groups", [None, [(0, 1, 2), (3, 4)]])
def test_direct_kernel_route_is_bit_for_bit_gpytorchs(data, monkeypatch, groups):
    from aexp.surrogates import dkl

    X, y = data
    model = DKLSurrogate(input_dim=5, iterations=20, seed=1, groups=groups).fit(X[:60], y[:60]).model
    assert dkl._stationary_parts(model.covar_module) is not None  # the default kernel takes it
    Xc = X[200:456].double()
    with torch.no_grad():
        direct = model.marginal(Xc)
        monkeypatch.setattr(dkl, "_stationary_parts", lambda kernel: None)
        lazy = model.marginal(Xc)
    assert torch.equal(direct[0], lazy[0]) and torch.equal(direct[1], lazy[1])


def test_moments_are_the_posteriors_bit_for_bit(fitted, data):
    X = data[0][200:456].double()
    with torch.no_grad():
        post = fitted.model.posterior(X.unsqueeze(-2))
        mean, var = fitted.model.moments(X)
    assert torch.equal(mean, post.mean.reshape(-1)) and torch.equal(var, post.variance.reshape(-1))


def test_kernels_the_direct_route_does_not_know_go_through_gpytorch(data):
    from aexp.surrogates import dkl

    model = DKLSurrogate(input_dim=5, iterations=2, kernel="matern52").fit(*[t[:20] for t in data]).model
    assert dkl._stationary_parts(model.covar_module) is None
    mean, var = model.marginal(data[0][:8].double())
    assert mean.shape == var.shape == (8,) and bool((var > 0).all())


def test_botorch_acquisitions_accept_the_model(fitted, data):
    X = data[0][300:].double()
    mean, var = fitted.predict(X)
    with torch.no_grad():
        ucb = UpperConfidenceBound(fitted.model, beta=2.0)(X.unsqueeze(-2)).numpy()
    np.testing.assert_allclose(ucb, mean + math.sqrt(2.0) * np.sqrt(var), rtol=1e-10)
    # q > 1 takes gpytorch's joint route (Monte Carlo acquisitions)
    with torch.no_grad():
        qlei = qLogExpectedImprovement(fitted.model, best_f=float(data[1][:150].max()))
        values = qlei(X[:8].reshape(4, 2, 5))
    assert values.shape == (4,) and torch.isfinite(values).all()


def test_float32_inputs_give_the_same_predictions(fitted, data):
    X = data[0][300:]
    np.testing.assert_array_equal(fitted.predict(X)[0], fitted.predict(X.double())[0])


@pytest.mark.parametrize("kernel", ["rbf", "matern52"])
def test_posterior_samples_have_the_posterior_moments(kernel, data):
    X, y = data
    s = DKLSurrogate(input_dim=5, kernel=kernel, iterations=60, seed=0).fit(X[:30], y[:30])
    points = torch.cat([X[:2], X[300:304]])  # two measured, four unmeasured
    mean, var = s.predict(points)
    draws = np.stack([s.posterior_sample(points, seed=k) for k in range(400)])
    se = np.sqrt(var / len(draws))
    assert np.all(np.abs(draws.mean(0) - mean) < 5 * se + 1e-6)
    ratio = draws.var(0) / var
    assert np.all((ratio > 0.7) & (ratio < 1.4)), ratio
    np.testing.assert_array_equal(s.posterior_sample(points, seed=5), draws[5])


def test_input_validation(data):
    X, y = data
    s = DKLSurrogate(input_dim=5, iterations=5)
    with pytest.raises(RuntimeError, match="fit"):
        s.predict(X[:3])
    with pytest.raises(ValueError, match="one target per row"):
        s.fit(X[:10], y[:9])
    with pytest.raises(ValueError, match="input_dim"):
        s.fit(X[:10, :4], y[:10])
    bad_X = X[:10].clone()
    bad_X[3, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        s.fit(bad_X, y[:10])
    bad_y = y[:10].clone()
    bad_y[0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        s.fit(X[:10], bad_y)
    s.fit(X[:10], y[:10])
    with pytest.raises(ValueError, match="input_dim"):
        s.predict(X[:10, :3])
    with pytest.raises(ValueError, match="NaN"):
        s.predict(bad_X)
    with pytest.raises(ValueError, match="unknown kernel"):
        DKLSurrogate(input_dim=5, kernel="periodic")


def test_start_from_a_gp_begins_the_dkl_as_that_gp(data):
    from aexp.policies import PositionGP

    X, y = data
    gp = PositionGP(seed=0).fit(X, y.numpy())
    dkl = DKLSurrogate(input_dim=X.shape[1], iterations=0, seed=0).start_from(gp.model).fit(X, y)
    deep, base = dkl.model.covar_module.kernels
    torch.testing.assert_close(base.base_kernel.lengthscale.reshape(-1),
                               gp.model.covar_module.lengthscale.reshape(-1).double())
    assert float(deep.outputscale.detach()) == pytest.approx(0.1 * float(base.outputscale.detach()), rel=1e-6)
    torch.testing.assert_close(dkl.model.likelihood.noise, gp.model.likelihood.noise.double().clamp_min(1e-4))
    gp_mean, _ = gp.predict(X)
    dkl_mean, _ = dkl.predict(X)
    assert np.corrcoef(gp_mean, dkl_mean)[0, 1] > 0.95  # the small deep term barely moves it


def test_start_from_needs_the_base_kernel_and_matching_inputs(data):
    from aexp.policies import PositionGP

    X, y = data
    gp = PositionGP(seed=0).fit(X, y.numpy())
    with pytest.raises(ValueError, match="base_kernel"):
        DKLSurrogate(input_dim=X.shape[1], base_kernel=False).start_from(gp.model)
    with pytest.raises(ValueError, match="lengthscales"):
        DKLSurrogate(input_dim=X.shape[1] + 1).start_from(gp.model)


@pytest.mark.filterwarnings("ignore::botorch.exceptions.warnings.InputDataWarning")
def test_start_from_a_grouped_gp_begins_each_base_kernel_as_its_group(data):
    from aexp.policies import PositionGP

    X, y = data
    X, y = X[:60], y[:60]
    groups = [(0, 1, 2), (3, 4)]
    gp = PositionGP(seed=0, groups=groups).fit(X, y.numpy())
    dkl = DKLSurrogate(input_dim=5, iterations=0, groups=groups, seed=0).start_from(gp.model).fit(X, y)
    deep, *bases = dkl.model.covar_module.kernels
    for base, part in zip(bases, gp.model.covar_module.kernels, strict=True):
        torch.testing.assert_close(base.base_kernel.lengthscale, part.base_kernel.lengthscale.double())
        torch.testing.assert_close(base.outputscale, part.outputscale.double())
    gp_mean, _ = gp.predict(X)
    dkl_mean, _ = dkl.predict(X)
    assert np.corrcoef(gp_mean, dkl_mean)[0, 1] > 0.95
    with pytest.raises(ValueError, match="additive part"):
        DKLSurrogate(input_dim=5).start_from(gp.model)


def test_a_warm_fit_whose_kernel_stops_factorising_is_fitted_again_from_the_start():
    """A long run's warm fit can walk into a collapsed length-scale of the learned features (noise at
    its floor), where rounding in the squared distances of near-duplicate points makes the kernel
    matrix indefinite and no jitter helps. The fit starts again from scratch instead of stopping
    the campaign; it says so, counts it, and predicts."""
    g = torch.Generator().manual_seed(0)
    X = (50 * torch.randn(20, 5, generator=g)).repeat(8, 1) + 1e-9 * torch.randn(160, 5, generator=g)
    y = torch.randn(160, generator=g)
    surrogate = DKLSurrogate(input_dim=5, iterations=30, warm_iterations=5, seed=0, base_kernel=False)
    surrogate.fit(X[:150], y[:150])
    with torch.no_grad():  # the collapse, as a warm fit left it at 357 points in a 428-step run
        for name, p in surrogate.model.named_parameters():
            if "raw_lengthscale" in name or "raw_noise" in name:
                p.fill_(-17.0 if "lengthscale" in name else -20.0)
    with pytest.warns(RuntimeWarning, match="warm fit on 160 points failed .* fitted again from the start"):
        surrogate.fit(X, y)
    assert surrogate.n_restarts_ == 1 and surrogate.n_fits_ == 2
    assert len(surrogate.loss_history_) == 30  # the first fit's iterations
    mean, var = surrogate.predict(X)
    assert np.isfinite(mean).all() and np.all(var > 0)
