"""Behaviour of the acquisition policies and baselines (aexp.policies)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gpytorch.kernels import AdditiveKernel

from aexp.config import (
    KINDS,
    DKLPolicyConfig,
    DKLSurrogateConfig,
    GPXYPolicyConfig,
    RandomPolicyConfig,
    parse_config,
)
from aexp.policies import (
    ACQUISITIONS,
    POLICY_KINDS,
    GPXYPolicy,
    NoCandidatesLeft,
    PositionGP,
    RandomPolicy,
    RasterPolicy,
    SelectionContext,
    StagedSurrogate,
    SurrogatePolicy,
    make_policy,
)
from aexp.surrogates.dkl import DKLSurrogate

ROWS, COLS = 20, 20
M = ROWS * COLS
_rr, _cc = np.meshgrid(np.arange(ROWS), np.arange(COLS), indexing="ij")
POSITIONS = np.stack([_cc.ravel(), _rr.ravel()], 1) * 2e-9  # x along columns, metres
# a smooth field with its global maximum at (row 13, col 6) and a lower bump elsewhere
FIELD = (np.exp(-((_rr - 13) ** 2 + (_cc - 6) ** 2) / (2 * 3.0**2))
         + 0.6 * np.exp(-((_rr - 4) ** 2 + (_cc - 15) ** 2) / (2 * 4.0**2))).ravel()
FEATURES = torch.randn(M, 5, generator=torch.Generator().manual_seed(0))


def _target(idx: np.ndarray) -> np.ndarray:
    f = FEATURES[torch.as_tensor(idx)].double().numpy()
    return np.sin(2 * f[:, 0]) + f[:, 1] * f[:, 2]


def _context(measured, excluded=None, *, seed=0, targets=None, want_maps=False, budget=50,
             grid_shape=(ROWS, COLS)) -> SelectionContext:
    measured = np.asarray(measured, dtype=np.int64)
    if excluded is None:
        excluded = np.zeros(M, dtype=bool)
        excluded[measured] = True
    return SelectionContext(
        features=FEATURES, positions=POSITIONS, grid_shape=grid_shape, measured=measured,
        targets=_target(measured) if targets is None else targets, excluded=excluded,
        budget_left=budget, step=len(measured), rng=np.random.default_rng(seed),
        want_maps=want_maps)


def _dkl(**options) -> SurrogatePolicy:
    acquisition, seed = options.pop("acquisition", "ucb"), options.pop("seed", 0)
    surrogate = DKLSurrogateConfig(**(dict(iterations=40, warm_iterations=10) | options))
    policy = DKLPolicyConfig(acquisition={"kind": acquisition, **({"beta": 2.0} if acquisition == "ucb" else {})})
    return make_policy(policy, surrogate=surrogate, input_dim=5, seed=seed)


MEASURED = np.random.default_rng(1).choice(M, 30, replace=False)


def test_ucb_scores_are_mean_plus_sqrt_beta_sigma_from_predict():
    policy = _dkl()
    d = policy.select(_context(MEASURED, want_maps=True))
    mean, var = policy.surrogate.predict(FEATURES)
    acq, free = d.maps["acquisition"], ~_context(MEASURED).excluded
    np.testing.assert_allclose(acq[free], mean[free] + math.sqrt(2.0) * np.sqrt(var[free]),
                               rtol=1e-10)
    assert np.all(np.isneginf(acq[MEASURED]))
    assert d.index == int(np.argmax(acq)) and d.acquisition == acq[d.index]
    assert d.predicted_mean == pytest.approx(mean[d.index])
    assert d.predicted_std == pytest.approx(math.sqrt(var[d.index]))
    np.testing.assert_allclose(d.maps["std"] ** 2, var)


@pytest.mark.parametrize("surrogate", ["dkl", "gp"])
def test_acquisitions_from_the_kept_posterior_equal_botorchs_bit_for_bit(surrogate):
    from botorch.acquisition import LogExpectedImprovement, PosteriorStandardDeviation, UpperConfidenceBound

    from aexp.policies import analytic_acquisition

    y = _target(MEASURED)
    model = (DKLSurrogate(5, iterations=20) if surrogate == "dkl" else PositionGP()).fit(
        FEATURES[MEASURED].double(), y).model
    X = FEATURES[:64].double().unsqueeze(-2)
    # beta and best_f not representable in float32: botorch's buffers round them so
    botorch = {"ucb": UpperConfidenceBound(model, beta=0.1),
               "log_ei": LogExpectedImprovement(model, best_f=float(y.max()) + 0.1),
               "max_variance": PosteriorStandardDeviation(model)}
    with torch.no_grad():
        post = model.posterior(X)
        for name, acqf in botorch.items():
            ours = analytic_acquisition(name, post.mean.reshape(-1), post.variance.reshape(-1),
                                        beta=0.1, best_f=float(y.max()) + 0.1)
            assert torch.equal(ours, acqf(X)), name


@pytest.mark.parametrize("acquisition", ["ucb", "log_ei", "max_variance"])
def test_maps_are_the_decisions_own_posterior_and_asking_for_them_changes_nothing(acquisition):
    watched, plain = _dkl(acquisition=acquisition), _dkl(acquisition=acquisition)

    predict = watched.surrogate.predict

    def no_second_pass(X, chunk=1024):  # only the chosen point's own posterior, one row
        assert len(X) == 1, "the maps must come from the scoring pass"
        return predict(X, chunk)

    watched.surrogate.predict = no_second_pass
    rng = np.random.default_rng(3)
    measured = list(MEASURED[:8])
    for step in range(3):
        ctx = _context(measured, targets=_target(np.asarray(measured)))
        d_plain = plain.select(ctx)
        ctx.want_maps, ctx.rng = True, np.random.default_rng(0)
        d_watched = watched.select(ctx)
        for field in ("index", "acquisition", "predicted_mean", "predicted_std"):
            assert getattr(d_watched, field) == getattr(d_plain, field), (step, field)
        assert d_plain.maps is None
        mean, var = DKLSurrogate.predict(watched.surrogate, FEATURES)
        np.testing.assert_allclose(d_watched.maps["mean"], mean, rtol=1e-12)
        np.testing.assert_allclose(d_watched.maps["std"] ** 2, var, rtol=1e-12)
        assert d_watched.predicted_mean == pytest.approx(d_watched.maps["mean"][d_watched.index], rel=1e-12)
        measured.append(int(rng.choice(np.setdiff1d(np.arange(M), measured))))


def test_thompson_maps_take_a_pass_of_their_own():
    d = _dkl(acquisition="thompson").select(_context(MEASURED, want_maps=True))
    assert set(d.maps) == {"mean", "std", "acquisition"}
    assert d.predicted_mean == pytest.approx(d.maps["mean"][d.index], rel=1e-9)


def test_log_ei_argmax_matches_brute_force_expected_improvement():
    from scipy.stats import norm

    ctx = _context(MEASURED, want_maps=True)
    d = _dkl(acquisition="log_ei").select(ctx)
    mu, sigma = d.maps["mean"], d.maps["std"]
    z = (mu - ctx.targets.max()) / sigma
    ei = sigma * (z * norm.cdf(z) + norm.pdf(z))
    ei[ctx.excluded] = -np.inf
    assert d.index == int(np.argmax(ei))
    ok = np.isfinite(ei) & (ei > 1e-8)
    np.testing.assert_allclose(d.maps["acquisition"][ok], np.log(ei[ok]), rtol=1e-6)


@pytest.mark.parametrize("make", [
    lambda: RandomPolicy(),
    lambda: RasterPolicy(),
    lambda: _dkl(iterations=10, warm_iterations=2),
    lambda: _dkl(iterations=10, warm_iterations=2, acquisition="thompson"),
    lambda: GPXYPolicy("max_variance"),
], ids=["random", "raster", "dkl-ucb", "dkl-thompson", "gp-xy"])
def test_excluded_candidates_are_never_chosen(make):
    policy, rng = make(), np.random.default_rng(7)
    for trial in range(12):
        measured = rng.choice(M, 8, replace=False)
        excluded = rng.random(M) < rng.choice([0.2, 0.9, 0.995])
        excluded[measured] = True
        if excluded.all():
            excluded[rng.integers(M)] = False
        d = policy.select(_context(measured, excluded, seed=trial, budget=20))
        assert not excluded[d.index]


class _FlatSurrogate:
    """Every candidate looks the same (or is NaN): exercises ties and bad scores."""

    def __init__(self, value: float) -> None:
        self.value = value

    def fit(self, X, y):
        return self

    def predict(self, X, chunk=1024):
        return np.zeros(len(X)), np.ones(len(X))

    def posterior_sample(self, X, seed, chunk=1024):
        return np.full(len(X), self.value)


@pytest.mark.parametrize("value", [1.0, -np.inf, np.nan])
def test_ties_go_to_the_lowest_allowed_index(value):
    excluded = np.zeros(M, dtype=bool)
    excluded[:37] = True
    policy = SurrogatePolicy(_FlatSurrogate(value), "thompson")
    assert policy.select(_context([0, 1], excluded)).index == 37


@pytest.mark.parametrize("kind", ["dkl", "gp-xy", "random", "raster"])
def test_no_candidate_left_is_an_error(kind):
    policy = make_policy(kind, input_dim=5)
    with pytest.raises(NoCandidatesLeft):
        policy.select(_context(MEASURED, np.ones(M, dtype=bool)))


def test_surrogate_policies_need_a_measurement():
    with pytest.raises(ValueError, match="at least one measured"):
        make_policy("dkl", input_dim=5).select(_context([]))


def test_same_seed_same_decisions():
    def run(rng_seed):
        policy = _dkl(acquisition="thompson", seed=1)
        measured, picks = list(MEASURED[:10]), []
        for step in range(3):
            d = policy.select(_context(measured, seed=rng_seed + step, want_maps=True))
            measured.append(d.index)
            picks.append((d.index, d.acquisition, d.maps["acquisition"].copy()))
        return picks

    a, b, c = run(0), run(0), run(100)
    for (ia, va, ma), (ib, vb, mb) in zip(a, b):
        assert ia == ib and va == vb
        np.testing.assert_array_equal(ma, mb)
    assert not np.array_equal(a[0][2], c[0][2])  # another draw for another rng


def test_gp_xy_finds_the_maximum_far_sooner_than_random():
    best = int(np.argmax(FIELD))

    def steps_to_best(policy, seed, cap):
        rng = np.random.default_rng(seed)
        measured = list(rng.choice(M, 3, replace=False))
        for step in range(cap):
            if best in measured:
                return step
            excluded = np.zeros(M, dtype=bool)
            excluded[measured] = True
            ctx = SelectionContext(FEATURES, POSITIONS, (ROWS, COLS), np.array(measured),
                                   FIELD[measured], excluded, cap - step, step, rng)
            measured.append(policy.select(ctx).index)
        return cap

    gp = np.mean([steps_to_best(GPXYPolicy("ucb", beta=4.0), s, cap=60) for s in range(4)])
    rand = np.mean([steps_to_best(RandomPolicy(), s, cap=M) for s in range(40)])
    assert gp < 0.3 * rand, (gp, rand)


def _run_raster(policy, budget, n, excluded=None, grid_shape=(ROWS, COLS)):
    excluded = np.zeros(M, dtype=bool) if excluded is None else excluded.copy()
    picks = []
    for step in range(n):
        ctx = SelectionContext(FEATURES, POSITIONS, grid_shape, np.flatnonzero(excluded),
                               np.zeros(int(excluded.sum())), excluded.copy(), budget - step,
                               step, np.random.default_rng(0))
        i = policy.select(ctx).index
        picks.append(i)
        excluded[i] = True
    return np.array(picks)


def test_raster_covers_the_field_in_serpentine_order():
    picks = _run_raster(RasterPolicy(), budget=16, n=16)
    rows, cols = picks // COLS, picks % COLS
    assert len(set(picks)) == 16
    quadrant = (rows >= ROWS // 2) * 2 + (cols >= COLS // 2)
    assert np.bincount(quadrant, minlength=4).min() >= 3
    assert len(set(rows)) == 4 and len(set(cols)) == 4  # an evenly spaced 4 x 4 sub-grid
    assert rows.min() > 0 and rows.max() < ROWS - 1 and cols.min() > 0 and cols.max() < COLS - 1
    assert np.all(np.diff(cols[:4]) > 0) and np.all(np.diff(cols[4:8]) < 0)  # boustrophedon
    assert np.all(np.diff(rows[::4]) > 0)


def test_raster_skips_excluded_and_falls_back_to_scan_order_without_repeats():
    first_pass = _run_raster(RasterPolicy(), budget=16, n=2)
    excluded = np.zeros(M, dtype=bool)
    excluded[first_pass[0]] = True
    picks = _run_raster(RasterPolicy(), budget=16, n=M - 1, excluded=excluded)
    assert picks[0] == first_pass[1]
    assert sorted(picks) == sorted(set(range(M)) - {first_pass[0]})
    assert picks[15] == 0 and picks[16] == 1  # sub-grid done: scan order


def test_raster_without_grid_shape_walks_the_candidates_in_order():
    picks = _run_raster(RasterPolicy(), budget=10, n=10, grid_shape=None)
    np.testing.assert_array_equal(picks, np.arange(10) * 40 + 20)


def test_random_policy_draws_from_the_context_rng():
    a = RandomPolicy().select(_context(MEASURED, seed=3)).index
    b = RandomPolicy().select(_context(MEASURED, seed=3)).index
    picks = {RandomPolicy().select(_context(MEASURED, seed=s)).index for s in range(20)}
    assert a == b and len(picks) > 10


def test_gp_xy_thompson_is_a_reproducible_draw():
    ctx_a, ctx_b = _context(MEASURED, seed=5), _context(MEASURED, seed=5)
    a = GPXYPolicy("thompson").select(ctx_a)
    b = GPXYPolicy("thompson").select(ctx_b)
    assert a.index == b.index and a.acquisition == b.acquisition
    assert not ctx_a.excluded[a.index]


def test_make_policy_builds_each_kind_and_rejects_bad_requests():
    assert make_policy("random").name == "random"
    assert make_policy("raster").name == "raster"
    assert isinstance(make_policy(GPXYPolicyConfig(acquisition="log_ei")), GPXYPolicy)
    dkl = make_policy("dkl", input_dim=7, surrogate=DKLSurrogateConfig(kernel="matern52"), seed=4)
    assert isinstance(dkl.surrogate, DKLSurrogate) and dkl.surrogate.kernel == "matern52"
    assert dkl.surrogate.seed == 4 and dkl.name == "dkl"
    with pytest.raises(ValueError, match="dkl, gp-xy, random, raster"):
        make_policy("bayes")
    with pytest.raises(ValueError, match=", ".join(ACQUISITIONS)):
        DKLPolicyConfig(acquisition="ei")
    with pytest.raises(ValueError, match="input_dim"):
        make_policy("dkl")
    with pytest.raises(ValueError, match="learning_rate"):
        DKLSurrogateConfig(learning_rate=0.1)
    minimal = {"instrument": {"driver": "plasmonic"}, "target": {"name": "band_intensity", "window": [2.0, 2.6]}}
    with pytest.raises(ValueError, match="learning_rate"):  # the surrogate section is checked for every policy
        parse_config({**minimal, "policy": {"kind": "random"}, "surrogate": {"learning_rate": 0.1}})
    assert make_policy("random", surrogate=DKLSurrogateConfig(lr=0.1)).name == "random"  # dkl-only
    with pytest.raises(ValueError, match="beta"):
        GPXYPolicyConfig(beta=-1.0)
    with pytest.raises(ValueError, match="'beta' .* not an option of acquisition kind 'log_ei'"):
        GPXYPolicyConfig(acquisition="log_ei", beta=1.0)


def test_every_policy_kind_of_the_config_builds_its_policy():
    assert tuple(KINDS["policy"].members) == POLICY_KINDS
    assert tuple(KINDS["acquisition"].members) == ACQUISITIONS
    built = {kind: make_policy(cls(), input_dim=5) for kind, cls in KINDS["policy"].members.items()}
    assert {kind: type(p) for kind, p in built.items()} == {
        "dkl": SurrogatePolicy, "gp-xy": GPXYPolicy, "random": RandomPolicy, "raster": RasterPolicy}
    for acquisition in ACQUISITIONS:
        policy = make_policy(DKLPolicyConfig(acquisition=acquisition), input_dim=5)
        assert policy.acquisition == acquisition
    assert make_policy(DKLPolicyConfig(acquisition={"kind": "ucb", "beta": 0.5}), input_dim=5).beta == 0.5
    # the flat form of every config written before acquisitions had their own section
    assert make_policy(GPXYPolicyConfig(acquisition="ucb", beta=0.25)).beta == 0.25
    assert make_policy(RandomPolicyConfig(n_initial=3)).name == "random"


@pytest.mark.parametrize("acquisition", ["ucb", "thompson"])
def test_staged_surrogate_is_a_gp_on_the_inputs_until_the_switch_then_the_dkl(acquisition):
    policy = _dkl(gp_until=20, acquisition=acquisition)
    staged = policy.surrogate
    assert isinstance(staged, StagedSurrogate) and staged.switch_at == 20
    few = MEASURED[:12]
    early = policy.select(_context(few))
    assert staged.active is staged.gp and isinstance(staged.gp, PositionGP)
    assert torch.equal(staged.model.train_inputs[0], FEATURES[torch.as_tensor(few)].double())
    late = policy.select(_context(MEASURED))
    assert staged.active is staged.dkl and staged.model is staged.dkl.model
    for decision, measured in ((early, few), (late, MEASURED)):
        assert decision.index not in set(measured.tolist())
        assert math.isfinite(decision.predicted_mean) and decision.predicted_std > 0


def test_gp_until_zero_is_the_plain_dkl_and_negative_is_refused():
    assert isinstance(_dkl(gp_until=0).surrogate, DKLSurrogate)
    with pytest.raises(ValueError, match="gp_until"):
        DKLSurrogateConfig(gp_until=-1)


def _additive_problem(seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """Four inputs; the target is a sum of a function of columns (0, 1) and one of (2, 3)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(460, 4, generator=g, dtype=torch.float64) * 4 - 2
    y = torch.sin(2 * X[:, 0]) + X[:, 1] + torch.cos(1.5 * X[:, 2]) * torch.cos(1.5 * X[:, 3])
    return X, y.numpy()


def _r2(surrogate, X: torch.Tensor, y: np.ndarray) -> float:
    mean, _ = surrogate.predict(X)
    return float(1 - np.mean((mean - y) ** 2) / np.var(y))


@pytest.mark.filterwarnings("ignore::botorch.exceptions.warnings.InputDataWarning")
def test_grouped_gp_learns_an_additive_target_from_few_points_where_one_joint_kernel_does_not():
    X, y = _additive_problem(0)
    joint = PositionGP(seed=0).fit(X[:60], y[:60])
    grouped = PositionGP(seed=0, groups=[(0, 1), (2, 3)]).fit(X[:60], y[:60])
    assert isinstance(grouped.model.covar_module, AdditiveKernel)
    assert len(grouped.model.covar_module.kernels) == 2
    assert _r2(grouped, X[60:], y[60:]) > 0.99
    assert _r2(joint, X[60:], y[60:]) < 0.95


def test_groups_must_be_disjoint_non_empty_columns_of_the_inputs():
    for bad in ([], [(0, 1), ()], [(0, 1), (1, 2)], [(-1,)]):
        with pytest.raises(ValueError, match="groups"):
            PositionGP(groups=bad)
    with pytest.raises(ValueError, match="column 7"):
        PositionGP(groups=[(0,), (7,)]).fit(FEATURES[:10], np.zeros(10))
    with pytest.raises(ValueError, match="column 5"):
        DKLSurrogate(input_dim=5, groups=[(0, 1), (5,)])
    with pytest.raises(ValueError, match="base_kernel"):
        DKLSurrogate(input_dim=5, groups=[(0, 1), (2, 3, 4)], base_kernel=False)


@pytest.mark.filterwarnings("ignore::botorch.exceptions.warnings.InputDataWarning")
def test_additive_position_kernel_splits_off_the_last_two_columns_in_both_stages():
    policy = _dkl(gp_until=20, position_kernel="additive")
    staged = policy.surrogate
    assert staged.gp.groups == staged.dkl.groups == ((0, 1, 2), (3, 4))
    policy.select(_context(MEASURED[:12]))
    gp_parts = staged.model.covar_module.kernels
    assert [p.base_kernel.active_dims.tolist() for p in gp_parts] == [[0, 1, 2], [3, 4]]
    policy.select(_context(MEASURED))  # the switch: the DKL's base kernels begin as the GP's
    deep, *bases = staged.model.covar_module.kernels
    assert [b.base_kernel.active_dims.tolist() for b in bases] == [[2, 3, 4], [5, 6]]  # after g(x)
    plain = _dkl(position_kernel="additive").surrogate
    assert isinstance(plain, DKLSurrogate) and plain.groups == ((0, 1, 2), (3, 4))
    with pytest.raises(ValueError, match="besides"):
        make_policy("dkl", input_dim=2, surrogate=DKLSurrogateConfig(position_kernel="additive"))


def test_additive_position_kernel_needs_the_position_columns_in_the_config():
    assert DKLSurrogateConfig(position_kernel="additive").position_kernel == "additive"
    with pytest.raises(ValueError, match="position: true"):
        DKLSurrogateConfig(position_kernel="additive", position=False)
    with pytest.raises(ValueError, match="base_kernel"):
        DKLSurrogateConfig(position_kernel="additive", base_kernel=False)
    with pytest.raises(ValueError, match="position_kernel"):
        DKLSurrogateConfig(position_kernel="sum")
    with pytest.raises(ValueError, match="'position_kernel' .* not an option of surrogate kind 'groups'"):
        parse_config({"instrument": {"driver": "plasmonic"}, "target": {"name": "band_intensity", "window": [2.0, 2.6]},
                      "surrogate": {"kind": "groups", "position_kernel": "additive"}})


@pytest.mark.filterwarnings("ignore::botorch.exceptions.warnings.InputDataWarning")
def test_a_capped_warm_refit_of_the_gp_stage_stays_close_to_the_converged_one():
    X, y = _additive_problem(1)
    full, capped = PositionGP(seed=0), PositionGP(seed=0, warm_maxiter=3)
    full.fit(X[:40], y[:40])
    capped.fit(X[:40], y[:40])  # the first fit converges in both
    assert torch.equal(full.model.covar_module.lengthscale, capped.model.covar_module.lengthscale)
    full.fit(X[:41], y[:41])
    capped.fit(X[:41], y[:41])  # one more point: a 3-iteration refit from the previous optimum
    assert not torch.equal(full.model.covar_module.lengthscale, capped.model.covar_module.lengthscale)
    (m_full, v_full), (m_cap, _) = full.predict(X[100:300]), capped.predict(X[100:300])
    # the two means differ by well under the model's own uncertainty (measured: rms 0.12 against a
    # mean posterior std of 0.43)
    assert np.sqrt(np.mean((m_full - m_cap) ** 2)) < 0.5 * np.sqrt(v_full).mean()
    staged = make_policy("dkl", input_dim=4, surrogate=DKLSurrogateConfig(gp_until=20, gp_warm_maxiter=5))
    assert staged.surrogate.gp.warm_maxiter == 5


# --- a decision taken again on the outcomes of the points it believed (policy.rescore) ---

def _surrogate(kind: str):
    if kind == "dkl":
        return DKLSurrogate(5, iterations=30, warm_iterations=10)
    if kind == "staged":  # the GP stage of the staged surrogate
        return StagedSurrogate(DKLSurrogate(5, iterations=30), switch_at=100)
    return PositionGP()


@pytest.mark.parametrize("kind", ["dkl", "gp", "staged"])
def test_the_weights_are_how_the_mean_moves_with_a_believed_target(kind):
    from aexp.policies import relabelled, score_and_predict

    y = _target(MEASURED)
    s = _surrogate(kind).fit(FEATURES[MEASURED].double(), y)
    rows = (7, 21)
    before = score_and_predict(s, FEATURES.double(), "ucb", beta=2.0, best_f=float(y.max()))
    scored = score_and_predict(s, FEATURES.double(), "ucb", beta=2.0, best_f=float(y.max()), rows=rows)
    np.testing.assert_allclose(scored.mean, before.mean, atol=1e-10)  # one pass, the same posterior
    np.testing.assert_allclose(scored.var, before.var, rtol=1e-8, atol=1e-12)
    assert scored.weights.shape == (M, 2)
    moved = y[list(rows)] + np.array([0.8, -1.5])
    with relabelled(s.model, rows, moved.tolist()):
        after = score_and_predict(s, FEATURES.double(), "ucb", beta=2.0, best_f=float(y.max()))
    np.testing.assert_allclose(after.mean, scored.mean + scored.weights @ np.array([0.8, -1.5]), atol=1e-8)
    np.testing.assert_allclose(after.var, scored.var, rtol=1e-9)  # the variance does not see the targets
    again = score_and_predict(s, FEATURES.double(), "ucb", beta=2.0, best_f=float(y.max()))
    np.testing.assert_array_equal(again.mean, before.mean)  # the targets are back


@pytest.mark.parametrize("kind", ["dkl", "gp", "staged"])
def test_condition_holds_the_fit_and_adds_the_believed_points(kind):
    y = _target(MEASURED)
    s = _surrogate(kind).fit(FEATURES[MEASURED[:-2]].double(), y[:-2])
    state = {k: v.clone() for k, v in s.model.state_dict().items()}
    s.condition(FEATURES[MEASURED].double(), y)
    assert all(torch.equal(v, state[k]) for k, v in s.model.state_dict().items())  # no training
    fitted = _surrogate(kind).fit(FEATURES[MEASURED[:-2]].double(), y[:-2]).predict(FEATURES.double())
    mean, var = s.predict(FEATURES.double())
    assert np.all(var[MEASURED[-2:]] < fitted[1][MEASURED[-2:]])  # the new points are known now
    s.condition(FEATURES[MEASURED[:-2]].double(), y[:-2])  # and on the fit's own data, the fit again
    np.testing.assert_allclose(s.predict(FEATURES.double())[0], fitted[0], atol=1e-9)
    np.testing.assert_allclose(s.predict(FEATURES.double())[1], fitted[1], rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("make", [_dkl, lambda: make_policy("gp-xy", seed=0)], ids=["dkl", "gp-xy"])
def test_rescore_is_the_argmax_of_the_fit_conditioned_on_the_measured_value(make):
    from aexp.policies import analytic_acquisition, relabelled

    policy = make()
    believed = int(np.argmax(FIELD))  # the field's maximum, believed unremarkable, turns out high
    measured = np.append(MEASURED[:20], believed)
    targets = np.append(_target(MEASURED[:20]), 0.0)
    ctx = _context(measured, targets=targets)
    ctx.believed = (believed,)
    decision = policy.select(ctx)
    r = decision.rescore
    assert r is not None and r.indices == (believed,) and r.rows == (20,)
    # the fit learnt from the 20 measured targets only; the believed one is in its posterior
    assert len(policy.surrogate.model.train_targets) == 21
    outcome = 5.0
    new = policy.rescore(decision, {believed: outcome}, best_f=outcome, excluded=ctx.excluded)
    X = policy.inputs(ctx)
    with relabelled(policy.surrogate.model, (20,), [outcome]):
        mean, var = policy.surrogate.predict(X)
    acq = analytic_acquisition("ucb", torch.as_tensor(mean), torch.as_tensor(var), beta=policy.beta,
                               best_f=outcome).numpy()
    acq[ctx.excluded] = -np.inf
    assert new.index == int(np.argmax(acq)) and new.index not in set(measured.tolist())
    assert new.predicted_mean == pytest.approx(mean[new.index], abs=1e-8)
    assert new.predicted_std == pytest.approx(math.sqrt(var[new.index]), rel=1e-8)
    assert new.fit_s == decision.fit_s and new.rescore is None
    # nothing measured yet: the decision stands
    assert policy.rescore(decision, {}, best_f=1.0, excluded=ctx.excluded) is decision


@pytest.mark.parametrize("dkl_from", [None, 10])
def test_a_mixture_is_scored_again_on_the_measured_value(dkl_from):
    from aexp.config import GroupsSurrogateConfig

    surrogate = GroupsSurrogateConfig(dkl_from=dkl_from, iterations=20, warm_iterations=5)
    policy = make_policy(DKLPolicyConfig(), surrogate=surrogate, input_dim=5,
                         columns={"position_columns": 2}, seed=0)
    believed = int(MEASURED[25])
    ctx = _context(MEASURED[:26])
    ctx.believed = (believed,)
    decision = policy.select(ctx)
    assert decision.rescore is not None and decision.rescore.members is not None
    members = policy.surrogate.model.members
    assert len(members) == (4 if dkl_from else 3)  # the groups, the additive GP (and the DKL)
    assert all(len(m.train_targets) == 26 for m in members)  # fitted on 25, conditioned on the believed one too
    outcome = float(_target(np.array([believed]))[0]) + 3.0
    new = policy.rescore(decision, {believed: outcome}, best_f=5.0, excluded=ctx.excluded)
    assert new is not decision and not ctx.excluded[new.index]
    # the members' moved means give what relabelling the mixture and scoring it again gives
    from aexp.policies import analytic_acquisition, relabelled

    with relabelled(policy.surrogate.model, decision.rescore.rows, [outcome]):
        mean, var = policy.surrogate.predict(FEATURES.double())
    acq = analytic_acquisition("ucb", torch.as_tensor(mean), torch.as_tensor(var), beta=policy.beta,
                               best_f=5.0).numpy()
    acq[ctx.excluded] = -np.inf
    assert new.index == int(np.argmax(acq))
    assert new.predicted_mean == pytest.approx(mean[new.index], abs=1e-7)
    assert new.predicted_std == pytest.approx(math.sqrt(var[new.index]), rel=1e-6)


@pytest.mark.parametrize("kind", ["gp-xy", "groups"])
def test_a_model_of_unknown_form_is_scored_again_and_chooses_the_same(kind, monkeypatch):
    """Without a one-pass route to its weights (a lab's own model), the decision is taken again by
    scoring the model relabelled with the outcome: the same choice as the weights give."""
    import aexp.policies as policies
    from aexp.config import GroupsSurrogateConfig

    def make():
        if kind == "gp-xy":
            return make_policy("gp-xy", seed=0)
        return make_policy(DKLPolicyConfig(), surrogate=GroupsSurrogateConfig(dkl_from=None), input_dim=5,
                           columns={"position_columns": 2}, seed=0)

    believed = int(np.argmax(FIELD))  # believed unremarkable, turns out far above the rest
    measured = np.append(MEASURED[:20], believed)
    outcome = 5.0
    results = []
    for route in (True, False):
        if not route:
            monkeypatch.setattr(policies, "_weights_route", lambda model, rows: None)
        policy = make()
        ctx = _context(measured, targets=np.append(_target(MEASURED[:20]), 0.0))
        ctx.believed = (believed,)
        decision = policy.select(ctx)
        r = decision.rescore
        assert (r.weights is None and r.members is None) == (not route)
        results.append(policy.rescore(decision, {believed: outcome}, best_f=outcome, excluded=ctx.excluded))
        assert results[-1].index != decision.index  # the outcome moved the choice
    with_route, scored_again = results
    assert scored_again.index == with_route.index
    assert scored_again.predicted_mean == pytest.approx(with_route.predicted_mean, abs=1e-7)
    assert scored_again.predicted_std == pytest.approx(with_route.predicted_std, rel=1e-6)
