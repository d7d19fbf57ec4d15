"""The group average finds out from the measured points which inputs predict the target."""

import math

import numpy as np
import pytest
import torch
from botorch.acquisition import UpperConfidenceBound

from aexp.surrogates.groups import ADDITIVE, JOINT, GroupAverage, loo_log_likelihood

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


def test_stacking_weight_maximises_the_mixtures_record():
    from aexp.surrogates.groups import stacking_weight

    rng = np.random.default_rng(0)
    record = torch.as_tensor(rng.normal(-1.0, 2.0, (25, 2)))
    grid = torch.linspace(1e-4, 1 - 1e-4, 20001, dtype=torch.float64)
    pa, pb = record.exp().T
    objective = (torch.log(grid[:, None] * pa + (1 - grid[:, None]) * pb).sum(1)
                 + torch.log(grid) + torch.log(1 - grid))
    assert stacking_weight(record) == pytest.approx(float(grid[objective.argmax()]), abs=1e-4)
    # one point that only the first forecaster saw coming: 1/w + 1/w - 1/(1 - w) = 0 -> w = 2/3
    assert stacking_weight(torch.tensor([[0.0, -800.0]], dtype=torch.float64)) == pytest.approx(2 / 3, abs=1e-9)
    # a confident miss costs log(1 - w), not the miss: many better forecasts keep the weight high
    many = torch.tensor([[1.0, 0.0]] * 30 + [[-1e4, -1.0]], dtype=torch.float64)
    assert stacking_weight(many) > 0.5


def _dkl_average(dkl_from: int, groups=None):
    from aexp.surrogates.dkl import DKLSurrogate

    groups = groups or GROUPS
    dkl = DKLSurrogate(sum(len(c) for c in groups.values()), groups=list(groups.values()), seed=0,
                       iterations=60, warm_iterations=20)
    return GroupAverage(groups, seed=0, dkl=dkl, dkl_from=dkl_from)


def test_dkl_member_is_scored_on_points_it_had_not_seen():
    from aexp.surrogates.groups import DKL, predictive_log_density

    X = torch.as_tensor(_inputs(14, 0))
    y = np.sin(X[:, 0].numpy()) + X[:, 3].numpy()
    sur = _dkl_average(dkl_from=10)
    sur.fit(X[:9], y[:9])
    assert sur.weights_[DKL] == 0 and not sur.dkl_active and sur.forecasts_ == []
    sur.fit(X[:10], y[:10])
    assert sur.dkl_active and sur.weights_[DKL] == 0  # joined, no record yet
    weights = torch.tensor([sur.member_weights_[n] for n in sur.members], dtype=torch.float64)
    exact = torch.stack([predictive_log_density(gp.model, X[10:, list(c)], torch.as_tensor(y[10:]))
                         for c, gp in sur.members.values()])
    deep = predictive_log_density(sur.dkl.model, X[10:], torch.as_tensor(y[10:]))
    average = torch.logsumexp(exact + weights.log()[:, None], dim=0)  # before the refit
    sur.fit(X, y)
    np.testing.assert_allclose(np.array(sur.forecasts_), torch.stack([deep, average], 1).numpy(), rtol=1e-9)
    assert 0 < sur.weights_[DKL] < 1
    assert math.isclose(sum(sur.weights_.values()), 1.0, rel_tol=1e-9)
    mean, var = sur.predict(X[:3])  # the DKL enters the moment-matched posterior
    mus = sum(sur.member_weights_[n] * gp.predict(X[:3, list(c)])[0] for n, (c, gp) in sur.members.items())
    np.testing.assert_allclose(mean, mus + sur.member_weights_[DKL] * sur.dkl.predict(X[:3])[0], rtol=1e-8)
    record = list(sur.forecasts_)
    sur.fit(X, y)  # the same points again (a decision while measurements are pending): nothing to score
    assert sur.forecasts_ == record
    sur.fit(X[:12] + 1.0, y[:12])  # not the same points grown: the record starts again
    assert sur.forecasts_ == []


@pytest.mark.slow
def test_an_interaction_of_survey_and_position_gives_the_dkl_member_weight():
    groups = {"survey": (0,), "position": (1, 2)}
    rng = np.random.default_rng(0)
    X = torch.as_tensor(rng.uniform(-2, 2, (60, 3)))
    noise = 0.05 * rng.standard_normal(60)
    targets = {"interaction": np.tanh(3 * X[:, 0].numpy()) * X[:, 1].numpy(),
               "position": np.sin(2 * X[:, 1].numpy()) + np.cos(1.5 * X[:, 2].numpy())}
    weights = {}
    for name, y in targets.items():
        sur = _dkl_average(dkl_from=15, groups=groups)
        for n in (15, 30, 45, 60):
            sur.fit(X[:n], y[:n] + noise[:n])
        weights[name] = sur.weights_
    assert weights["interaction"]["dkl"] > 0.3, weights
    assert weights["position"]["position"] > 0.8 and weights["position"]["dkl"] < 0.15, weights


def _fit_joint(y_of, n: int = 40, seed: int = 0) -> GroupAverage:
    X = _inputs(n, seed)
    noise = 0.02 * np.random.default_rng(seed + 1).standard_normal(n)
    return GroupAverage(GROUPS, seed=0, joint=True).fit(torch.as_tensor(X), y_of(X) + noise)


def test_a_product_of_survey_and_position_gives_the_joint_member_weight():
    # high where the survey is high *and* at one place: a sum of per-group kernels cannot say "and"
    sur = _fit_joint(lambda X: np.exp(-X[:, 2] ** 2) * np.exp(-((X[:, 3] - 0.5) ** 2)) * 3.0)
    assert set(sur.member_weights_) == {*GROUPS, ADDITIVE, JOINT}
    assert math.isclose(sum(sur.weights_.values()), 1.0, rel_tol=1e-9)
    assert sur.weights_[JOINT] > 0.5, sur.weights_


def test_a_position_only_target_keeps_the_weight_on_position_beside_the_joint_member():
    sur = _fit_joint(lambda X: np.sin(2 * X[:, 3]) + np.cos(1.5 * X[:, 4]))
    assert sur.weights_["position"] > 0.8, sur.weights_
    assert sur.weights_[JOINT] < 0.2, sur.weights_


def test_one_group_has_no_joint_member_and_member_names_are_refused_as_groups():
    sur = GroupAverage({"position": (0, 1)}, joint=True).fit(torch.as_tensor(_inputs(8, 0)[:, :2]), np.arange(8.0))
    assert set(sur.member_weights_) == {"position"}
    with pytest.raises(ValueError, match="joint"):
        GroupAverage({"joint": (0,), "position": (1, 2)}, joint=True)
