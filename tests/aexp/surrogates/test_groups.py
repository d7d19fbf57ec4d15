"""The group average finds out from the measured points which inputs predict the target."""

import math

import numpy as np
import pytest
import torch
from botorch.acquisition import UpperConfidenceBound

from aexp.surrogates.groups import ADDITIVE, GroupAverage, loo_log_likelihood

GROUPS = {"embedding": (0, 1), "survey": (2,), "position": (3, 4)}


def _inputs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 5))


def _fit(y_of, n: int = 40, seed: int = 0) -> tuple[GroupAverage, np.ndarray]:
    X = _inputs(n, seed)
    noise = 0.02 * np.random.default_rng(seed + 1).standard_normal(n)
    return GroupAverage(GROUPS, seed=0).fit(torch.as_tensor(X), y_of(X) + noise), X


def test_position_only_target_puts_the_weight_on_position():
    sur, _ = _fit(lambda X: np.sin(2 * X[:, 3]) + np.cos(1.5 * X[:, 4]))
    w = sur.weights_
    assert set(w) == set(GROUPS)
    assert math.isclose(sum(w.values()), 1.0, rel_tol=1e-9)
    assert w["position"] > 0.8, w
    assert set(sur.member_weights_) == {*GROUPS, ADDITIVE}


def test_patch_only_target_puts_the_weight_on_the_features():
    sur, _ = _fit(lambda X: np.sin(2 * X[:, 0]) * X[:, 1] + 0.5 * X[:, 2])
    w = sur.weights_
    assert w["embedding"] + w["survey"] > 0.8, w
    assert w["position"] < 0.2, w


def test_mixture_posterior_is_the_moment_matched_average():
    sur, X = _fit(lambda X: X[:, 3], n=20)
    Xt = torch.as_tensor(_inputs(7, 5))
    mean, var = sur.predict(Xt)
    mus, seconds = np.zeros(7), np.zeros(7)
    for name, (cols, gp) in sur.members.items():
        m, v = gp.predict(Xt[:, list(cols)])
        mus += sur.member_weights_[name] * m
        seconds += sur.member_weights_[name] * (v + m**2)
    np.testing.assert_allclose(mean, mus, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(var, seconds - mus**2, rtol=1e-6, atol=1e-10)
    ucb = UpperConfidenceBound(sur.model, beta=4.0)(Xt.unsqueeze(-2)).detach().numpy()
    np.testing.assert_allclose(ucb, mean + 2 * np.sqrt(var), rtol=1e-6)


def test_loo_matches_refitting_without_each_point():
    sur, X = _fit(lambda X: np.sin(X[:, 3]), n=12)
    gp = sur.members["position"][1].model
    loo = loo_log_likelihood(gp).numpy()
    Xp, y = gp.train_inputs[0], gp.train_targets
    K = gp.covar_module(Xp).to_dense().detach() + gp.likelihood.noise.detach() * torch.eye(12, dtype=Xp.dtype)
    m = gp.mean_module(Xp).detach()
    for i in (0, 5, 11):
        keep = [j for j in range(12) if j != i]
        Kk = K[keep][:, keep]
        k = K[i, keep]
        mu = m[i] + k @ torch.linalg.solve(Kk, y[keep] - m[keep])
        v = K[i, i] - k @ torch.linalg.solve(Kk, k)
        expected = -0.5 * math.log(2 * math.pi * float(v)) - 0.5 * float((y[i] - mu) ** 2 / v)
        assert loo[i] == pytest.approx(expected, rel=1e-6)


def test_same_seed_same_thompson_draw_and_bad_groups_refused():
    sur, _ = _fit(lambda X: X[:, 0], n=15)
    Xt = torch.as_tensor(_inputs(9, 3))
    np.testing.assert_array_equal(sur.posterior_sample(Xt, seed=4), sur.posterior_sample(Xt, seed=4))
    with pytest.raises(ValueError, match="overlap"):
        GroupAverage({"a": (0, 1), "b": (1, 2)})
    with pytest.raises(ValueError, match="non-empty"):
        GroupAverage({"a": ()})


def test_feature_groups_follow_the_column_order_of_the_features_record():
    from aexp.config import GroupsSurrogateConfig
    from aexp.policies import SurrogatePolicy, feature_groups, make_policy

    info = {"kind": "rvae", "dim": 5, "centre_columns": 1, "gradient_columns": 1, "position_columns": 2}
    assert feature_groups(9, info) == {"embedding": (0, 1, 2, 3, 4), "survey": (5, 6), "position": (7, 8)}
    assert feature_groups(6) == {"embedding": (0, 1, 2, 3), "position": (4, 5)}
    assert feature_groups(4, {"neighbour_columns": 2, "position_columns": 2}) == {"context": (0, 1), "position": (2, 3)}
    with pytest.raises(ValueError, match="cannot hold"):
        feature_groups(3, info)
    policy = make_policy("dkl", input_dim=9, columns=info, surrogate=GroupsSurrogateConfig())
    assert isinstance(policy, SurrogatePolicy) and isinstance(policy.surrogate, GroupAverage)
    assert set(policy.surrogate.members) == {"embedding", "survey", "position", ADDITIVE}
