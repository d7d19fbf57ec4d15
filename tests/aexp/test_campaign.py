"""The campaign object: ask/tell for every policy, the budget, pending points, batches, travel, outage."""

import itertools
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from aexp.campaign import (
    Budget,
    Campaign,
    InstrumentOutage,
    Outcome,
    Problem,
    Schedule,
    TravelCost,
    as_ask_tell,
    short_tour,
)
from aexp.config import DKLSurrogateConfig
from aexp.instrument import InstrumentUnreachable, MeasurementFailed, check_position
from aexp.patches import grid_candidates
from aexp.policies import POLICY_KINDS, make_policy
from aexp.session.store import MemoryRecorder
from aexp.targets import make_target
from aexp.types import Bounds, InstrumentDescription, Measurement, PixelTransform, SpectrumAxis, Survey

AXIS = SpectrumAxis("energy_loss", "eV", 0.0, 4.0, 41)
TARGET = make_target("band_intensity", window=(1.0, 2.0))


class Fake:
    """A 16 x 16 survey; the spectrum is flat at the survey value under the probe (target = value).

    ``fail``: pixels that fail; ``down``: measure calls (by count) that raise InstrumentUnreachable;
    ``gate``: an event each measure waits for (to hold a measurement in flight)."""

    def __init__(self, fail=(), down=(), gate=None, field=None):
        rng = np.random.default_rng(0)
        self.image = rng.uniform(size=(1, 16, 16)).astype(np.float32) if field is None else field
        self.transform = PixelTransform.square(1e-9)
        self._bounds = Bounds(0.0, 15e-9, 0.0, 15e-9)
        self.fail, self.down, self.gate = set(fail), set(down), gate
        self.calls, self.sent, self.threads = 0, [], set()

    @property
    def bounds(self):
        return self._bounds

    def describe(self):
        return InstrumentDescription("fake", self._bounds, (1, 16, 16), ("haadf",), AXIS)

    def survey(self):
        return Survey(self.image, self.transform, ("haadf",))

    def measure(self, position, command_id=""):
        check_position(self._bounds, position)
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        if self.calls in self.down:
            raise InstrumentUnreachable("no reply from tcp://127.0.0.1:1")
        if self.gate is not None:
            assert self.gate.wait(10)
        self.sent.append((tuple(position), command_id))
        r, c = np.rint(self.transform.to_pixel(np.array(position))).astype(int)
        if (r, c) in self.fail:
            raise MeasurementFailed("detector saturated")
        return Measurement(np.full(AXIS.n, self.image[0, r, c]), AXIS, tuple(position), duration_s=0.01)


class FakeClock:
    """A simulated clock: sleep advances it at once."""

    def __init__(self):
        self.t = 0.0
        self.slept = []

    def monotonic(self):
        return self.t

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.t += seconds


def _setup(inst):
    cands = grid_candidates(inst.survey(), stride=2, patch_size=4)
    feats = torch.as_tensor(cands.patches.reshape(len(cands), -1), dtype=torch.float64)
    return cands, feats


def _run(inst, policy="random", n_initial=3, steps=10, seed=0, **kw):
    cands, feats = _setup(inst)
    options = kw.pop("options", None)
    surrogate = DKLSurrogateConfig(**options) if options is not None else None
    pol = make_policy(policy, input_dim=feats.shape[1], seed=seed, surrogate=surrogate)
    rec = MemoryRecorder()
    res = Campaign(instrument=inst, candidates=cands, features=feats, target=TARGET, policy=pol,
                   n_initial=n_initial, budget=kw.pop("budget", Budget(n_initial + steps)), recorder=rec,
                   seed=seed, **kw).run()
    return cands, res, rec


# --- ask / tell ---

@pytest.mark.parametrize("kind", POLICY_KINDS)
def test_every_policy_answers_ask_and_tell(kind):
    inst = Fake()
    cands, feats = _setup(inst)
    options = DKLSurrogateConfig(iterations=5, warm_iterations=2)
    allowed = np.ones(len(cands), bool)
    allowed[:4] = False  # outside the bounds, say
    problem = Problem(feats, cands.positions, cands.grid_shape, allowed, budget=12, seed=0)

    def asked():
        policy = as_ask_tell(make_policy(kind, input_dim=feats.shape[1], surrogate=options))
        policy.start(problem)
        told = [10, 20, 30, 40]
        policy.tell([Outcome(k, i, float(k) if k != 1 else None) for k, i in enumerate(told)])
        decisions = policy.ask(3, pending=[50, 51], step=6)
        return told, [d.index for d in decisions]

    told, chosen = asked()
    assert len(chosen) == len(set(chosen)) == 3
    assert not set(chosen) & ({50, 51} | set(told) | {0, 1, 2, 3})
    assert chosen == asked()[1]  # same seed and data, same answer


def test_budget_stops_for_the_first_reason_that_holds():
    b = Budget(measurements=10, wall_time_s=5.0, failures=3)
    assert b.stop_reason(steps=4, failed=2, elapsed_s=1.0) is None
    assert b.stop_reason(steps=10, failed=0, elapsed_s=1.0) == "budget"
    assert b.stop_reason(steps=4, failed=0, elapsed_s=5.5) == "wall_time"
    assert b.stop_reason(steps=4, failed=3, elapsed_s=1.0) == "failures"


def test_failure_budget_ends_the_campaign():
    probe = Fake()
    cands, _ = _setup(probe)
    from aexp.loop import initial_indices

    first = initial_indices(3, 0, np.ones(len(cands), bool))
    bad = [tuple(int(v) for v in cands.pixels[i]) for i in first[:2]]
    _, res, _ = _run(Fake(fail=bad), budget=Budget(13, failures=2))
    assert res.stop_reason == "failures"
    assert [s.status for s in res.steps] == ["failed", "failed"]


def test_travel_distance_is_recorded_per_step():
    _, res, _ = _run(Fake(), steps=4)
    assert res.steps[0].travel_m is None
    for a, b in itertools.pairwise(res.steps):
        assert b.travel_m == pytest.approx(np.hypot(b.position[0] - a.position[0], b.position[1] - a.position[1]))


# --- outage: the instrument cannot be reached ---

def test_a_short_outage_is_waited_out_on_the_same_step():
    clock = FakeClock()
    inst = Fake(down={5, 6, 7})
    _, res, _ = _run(inst, steps=7, clock=clock, schedule=Schedule(max_outage_s=60))
    assert len(res.steps) == 10 and all(s.status == "ok" for s in res.steps)
    assert clock.slept == [0.5, 1.0, 2.0]  # backing off between attempts
    assert [cid for _, cid in inst.sent] == [str(k) for k in range(10)]  # each command once


def test_a_long_outage_stops_the_campaign_with_every_completed_step():
    clock = FakeClock()
    rec_inst = Fake(down=set(range(5, 10_000)))
    with pytest.raises(InstrumentOutage, match="unreachable for 10 s") as info:
        _run(rec_inst, steps=7, clock=clock, schedule=Schedule(max_outage_s=10))
    assert clock.t == pytest.approx(10.0)
    steps = info.value.result.steps
    assert len(steps) == 4 and all(s.status == "ok" for s in steps)  # the attempts are not steps


OUTAGE_CFG = {
    "instrument": {"driver": "fake", "max_outage_s": 0.3}, "embedder": "none",
    "candidates": {"stride": 2, "patch_size": 4}, "policy": {"kind": "gp-xy", "n_initial": 3},
    "stopping": {"max_steps": 5}, "target": {"name": "band_intensity", "window": [1.0, 2.0]},
    "recording": {"figure": False},
}


def test_outage_interrupts_the_run_and_resume_continues(tmp_path):
    import json

    from aexp.config import parse_config
    from aexp.loop import run_experiment
    from aexp.session.replay import resume_session, verify_session
    from aexp.session.store import SessionReader

    cfg = parse_config(OUTAGE_CFG)
    assert cfg.instrument.max_outage_s == 0.3 and cfg.instrument.options == {}
    _, reference = run_experiment(cfg, Fake(), tmp_path / "ref", progress=False)
    with pytest.raises(InstrumentOutage):
        run_experiment(cfg, Fake(down=set(range(6, 10_000))), tmp_path / "run", progress=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "unreachable" in summary["reason"]
    assert len(SessionReader(tmp_path / "run").steps) == 5
    out = resume_session(tmp_path / "run", instrument=Fake())
    assert (out.replayed, out.new) == (5, 3)
    resumed = SessionReader(tmp_path / "run").steps
    assert [(s.index, s.target) for s in resumed] == [(s.index, s.target) for s in reference.steps]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "completed"
    assert verify_session(tmp_path / "run").steps == 8


def test_cli_names_resume_after_an_outage(tmp_path, monkeypatch, capsys):
    import importlib

    import yaml

    cli = importlib.import_module("aexp.cli.main")

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(OUTAGE_CFG))
    monkeypatch.setattr(cli, "_instrument", lambda cfg, seed: Fake(down=set(range(4, 10_000))))
    code = cli.main(["run", str(config), "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_OUTAGE != 0
    assert f"aexp resume {tmp_path / 'run'}" in err and "3 completed steps" in err


# --- decide while it measures ---

class Timeline:
    """A select policy wrapper and an instrument that log when they run."""

    def __init__(self, policy, inst):
        self.policy, self.inst, self.log, self.name = policy, inst, [], policy.name
        measure = inst.measure

        def logged(position, command_id=""):
            self.log.append(("start", command_id))
            import time

            time.sleep(0.05)
            out = measure(position, command_id)
            self.log.append(("end", command_id))
            return out

        inst.measure = logged

    def select(self, ctx):
        self.log.append(("select", ctx.step))
        return self.policy.select(ctx)


def test_pending_decides_the_next_point_while_the_instrument_measures():
    inst = Fake()
    cands, feats = _setup(inst)
    policy = Timeline(make_policy("gp-xy", seed=0), inst)
    res = Campaign(instrument=inst, candidates=cands, features=feats, target=TARGET, policy=policy,
                   n_initial=3, budget=Budget(9), recorder=MemoryRecorder(), seed=0,
                   schedule=Schedule(pending=True)).run()
    assert inst.threads == {"aexp-measure_0"}
    idx = [s.index for s in res.steps]
    assert len(set(idx)) == len(idx) == 9
    for prev, step in itertools.pairwise(res.steps):
        assert step.pending == [prev.index]  # one ahead: the previous step was in flight
    log = policy.log
    for k in range(3, 9):  # decision k came after command k-2 ended and before command k-1 ended
        assert log.index(("end", str(k - 2))) < log.index(("select", k)) < log.index(("end", str(k - 1)))


def test_pending_points_are_believed_at_their_predicted_mean():
    inst = Fake()
    cands, feats = _setup(inst)
    policy = as_ask_tell(make_policy("gp-xy", seed=0))
    policy.start(Problem(feats, cands.positions, cands.grid_shape, np.ones(len(cands), bool), 10, 0))
    policy.tell([Outcome(k, i, float(inst.image[0, 2 * (i // 8), 2 * (i % 8)])) for k, i in enumerate([0, 9, 27, 63])])
    first = policy.ask(1, step=4)[0]
    ctx = policy.context(5, pending=[first.index])
    assert ctx.excluded[first.index] and ctx.measured[-1] == first.index
    assert ctx.targets[-1] == pytest.approx(first.predicted_mean)
    assert policy.ask(1, pending=[first.index], step=5)[0].index != first.index


def test_max_in_flight_two_keeps_two_pending():
    _, res, _ = _run(Fake(), policy="gp-xy", steps=6, schedule=Schedule(pending=True, max_in_flight=2))
    assert [len(s.pending) for s in res.steps] == [0, 1, 2, 2, 2, 2, 2, 2, 2]
    assert len({s.index for s in res.steps}) == 9


def test_async_session_replays_exactly_and_a_changed_schedule_diverges(tiny_session):
    import json

    from aexp.session.replay import ReplayDivergence, verify_session

    folder, res = tiny_session(4, policy={"pending": True}, stopping={"max_steps": 4})
    assert res.steps[-1].pending == [res.steps[-2].index]
    assert verify_session(folder).steps == 7
    lines = (folder / "steps.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])
    last["pending"] = []
    (folder / "steps.jsonl").write_text("\n".join(lines[:-1] + [json.dumps(last)]) + "\n")
    with pytest.raises(ReplayDivergence, match="pending"):
        verify_session(folder)
    assert res.steps[-1].rescored == [res.steps[-2].index]  # taken again on the outcome in flight
    last["pending"], last["rescored"] = res.steps[-1].pending, []
    (folder / "steps.jsonl").write_text("\n".join(lines[:-1] + [json.dumps(last)]) + "\n")
    with pytest.raises(ReplayDivergence, match="rescored"):
        verify_session(folder)


# --- batches, tours, travel ---

def test_short_tour_is_the_shortest_open_path_for_small_batches():
    rng = np.random.default_rng(1)
    pts, start = rng.uniform(size=(6, 2)), np.array([0.0, 0.0])

    def length(order):
        path = np.vstack([start, pts[list(order)]])
        return np.linalg.norm(np.diff(path, axis=0), axis=1).sum()

    best = min(itertools.permutations(range(6)), key=length)
    assert length(short_tour(start, pts)) == pytest.approx(length(best))
    big = rng.uniform(size=(12, 2))
    order = short_tour(start, big)
    assert sorted(order) == list(range(12))
    identity = np.linalg.norm(np.diff(np.vstack([start, big]), axis=0), axis=1).sum()
    assert np.linalg.norm(np.diff(np.vstack([start, big[order]]), axis=0), axis=1).sum() < identity


def test_a_batch_is_chosen_jointly_and_visited_in_a_short_tour():
    inst = Fake()
    _, res, _ = _run(inst, policy="gp-xy", n_initial=4, steps=8, schedule=Schedule(batch=4))
    pol = res.steps[4:]
    assert len({s.index for s in res.steps}) == 12
    for b in (pol[:4], pol[4:]):
        start = np.array(res.steps[b[0].step - 1].position)
        pts = np.array([s.position for s in b])
        assert short_tour(start, pts) == [0, 1, 2, 3]  # recorded in tour order
        assert all(s.pending == [] for s in b)


def test_travel_penalty_closed_form():
    t = TravelCost(weight=2.0, stage_speed_m_s=1e-9, settle_s=0.5, recency_weight=3.0,
                   recency_radius_m=1e-9, recency_window=2)
    pos = np.array([[0.0, 0.0], [3e-9, 4e-9]])
    out = t.penalty(pos, probe=np.array([0.0, 0.0]), recent=np.array([[0.0, 0.0]]))
    assert out[0] == pytest.approx(3.0)  # no move; a just-measured site
    assert out[1] == pytest.approx(2.0 * (0.5 + 5.0) + 3.0 * np.exp(-25 / 2))


def test_travel_penalty_shortens_the_moves_on_a_toy_field():
    yy, xx = np.mgrid[0:16, 0:16]
    field = (np.sin(xx / 2.0) * np.cos(yy / 3.0))[None].astype(np.float32)  # many local maxima

    def mean_move(travel):
        _, res, _ = _run(Fake(field=field), policy="gp-xy", n_initial=4, steps=12, travel=travel)
        return np.mean([s.travel_m for s in res.steps[5:]])

    free = mean_move(None)
    slow = mean_move(TravelCost(weight=5.0, stage_speed_m_s=1e-9))
    assert slow < 0.6 * free


class KnownAcquisition:
    """A surrogate whose posterior is given: mean = the first feature column, no variance, so UCB
    with ``beta = 0`` is that column exactly."""

    train_targets = torch.zeros(1, dtype=torch.float64)

    @property
    def model(self):
        return self

    def fit(self, X, y):
        return self

    def moments(self, X):
        return X[:, 0].clone(), torch.zeros(len(X), dtype=X.dtype)

    def predict(self, X, chunk=1024):
        return np.asarray(X[:, 0]), np.zeros(len(X))


def _choose(acquisition, positions, travel, probe=0):
    """The index a UCB policy over ``acquisition`` (``M``) picks after measuring ``probe``."""
    from aexp.campaign import SelectAskTell
    from aexp.policies import SurrogatePolicy

    feats = torch.as_tensor(np.asarray(acquisition, dtype=np.float64)[:, None])
    policy = SelectAskTell(SurrogatePolicy(KnownAcquisition(), "ucb", beta=0.0), travel=travel)
    policy.start(Problem(feats, np.asarray(positions, dtype=np.float64), None, np.ones(len(feats), bool),
                         budget=10, seed=0))
    policy.tell([Outcome(0, probe, 1.0)])
    return policy.ask(1, step=1)[0]


def test_a_far_site_loses_to_a_near_one_of_slightly_lower_acquisition():
    # the probe at candidate 0; candidate 1 is 1 nm away, candidate 2 200 nm; 20 others set the spread
    rng = np.random.default_rng(3)
    acq = np.concatenate([[0.0, 0.95, 1.0], rng.uniform(0.0, 0.5, 20)])
    pos = np.concatenate([[[0.0, 0.0], [1e-9, 0.0], [200e-9, 0.0]], rng.uniform(20e-9, 60e-9, (20, 2))])
    assert _choose(acq, pos, None).index == 2  # no travel cost: the best acquisition
    cost = TravelCost(weight=1.0, stage_speed_m_s=1e-6, settle_s=0.02, units="spread", dwell_s=0.5)
    near = _choose(acq, pos, cost)
    assert near.index == 1
    from aexp.policies import acquisition_spread

    spread = acquisition_spread(acq[1:])  # over the candidates still allowed
    assert near.acquisition == pytest.approx(0.95 - spread * (0.02 + 1e-3) / 0.5)  # recorded: penalised
    # the far one's penalty, (0.02 + 0.2) / 0.5 = 0.44 spreads, is above the 0.05 it leads by
    assert 0.44 * spread - 0.042 * spread > 0.05


def test_the_spread_penalty_chooses_the_same_whatever_the_acquisitions_scale():
    rng = np.random.default_rng(7)
    acq = rng.normal(size=80)
    pos = rng.uniform(0.0, 100e-9, (80, 2))
    cost = TravelCost(weight=5.0, stage_speed_m_s=1e-6, settle_s=0.02, units="spread", dwell_s=0.5,
                      recency_weight=0.5, recency_radius_m=5e-9)
    free = _choose(acq, pos, None).index
    chosen = {_choose(c * acq + b, pos, cost).index for c, b in ((1, 0), (1000, 0), (1e-3, 0), (1, -40), (50, 7))}
    assert len(chosen) == 1 and chosen != {free}  # the penalty moved the choice, by the same at every scale
    # the field's own scale too: positions and stage speed x 1000 take the same seconds per move
    big = TravelCost(weight=5.0, stage_speed_m_s=1e-3, settle_s=0.02, units="spread", dwell_s=0.5,
                     recency_weight=0.5, recency_radius_m=5e-6)
    assert _choose(acq, 1000 * pos, big).index in chosen
    # the first form (acquisition units) is not: the same weight means less on a larger scale
    old = TravelCost(weight=10.0, stage_speed_m_s=1e-6, settle_s=0.02)
    assert _choose(acq, pos, old).index != _choose(1000 * acq, pos, old).index == free


def test_acquisition_spread_closed_form_and_equivariance():
    from aexp.policies import acquisition_spread

    assert acquisition_spread(np.array([0.0, 1.0, 2.0, 3.0, 100.0])) == pytest.approx(1.4826)
    a = np.random.default_rng(0).normal(size=501)
    assert acquisition_spread(-3.0 * a + 11.0) == pytest.approx(3.0 * acquisition_spread(a))
    assert acquisition_spread(np.array([1.0, 1.0, 1.0, 4.0, -np.inf])) == pytest.approx(np.std([1, 1, 1, 4]))
    assert acquisition_spread(np.full(4, 2.0)) == 1.0  # all equal: any unit makes the same choice


def test_travel_units_spread_takes_the_instruments_dwell_and_needs_one():
    from aexp.config import ConfigError, load_config
    from aexp.loop import travel_cost
    from aexp.types import InstrumentDescription

    cfg = load_config(Path(__file__).parents[2] / "configs" / "plasmonic-travel.yaml")
    desc = InstrumentDescription("twin", Bounds(0, 1e-7, 0, 1e-7), (1, 8, 8), ("haadf",), AXIS,
                                 measurement_time_s=0.5, extra={"stage_speed_m_s": 1e-6, "settle_s": 0.02})
    cost = travel_cost(cfg, desc)
    assert (cost.units, cost.dwell_s, cost.stage_speed_m_s, cost.settle_s) == ("spread", 0.5, 1e-6, 0.02)
    with pytest.raises(ConfigError, match="dwell_s"):
        travel_cost(cfg, InstrumentDescription("twin", desc.bounds, (1, 8, 8), ("haadf",), AXIS,
                                               extra=desc.extra))
    explicit = cfg.with_overrides(**{"policy.travel.dwell_s": 2.0})
    assert travel_cost(explicit, InstrumentDescription("twin", desc.bounds, (1, 8, 8), ("haadf",), AXIS,
                                                       extra=desc.extra)).dwell_s == 2.0
    with pytest.raises(ValueError, match="units"):
        TravelCost(units="metres")


def test_the_tour_shortens_a_batchs_path(monkeypatch):
    yy, xx = np.mgrid[0:16, 0:16]
    field = (np.sin(xx / 2.0) * np.cos(yy / 3.0))[None].astype(np.float32)

    def travel():
        _, res, _ = _run(Fake(field=field), policy="gp-xy", n_initial=4, steps=8, schedule=Schedule(batch=4))
        return res.extra["travel_m"]

    toured = travel()
    monkeypatch.setattr("aexp.campaign.short_tour", lambda start, pts: list(range(len(pts))))
    assert toured < 0.9 * travel()  # against each batch visited in the order it was chosen


def test_a_policy_error_while_measuring_still_records_the_command_in_flight():
    class Broken:
        name = "broken"

        def __init__(self):
            self.inner = make_policy("random")

        def select(self, ctx):
            if ctx.step == 5:
                raise RuntimeError("policy bug")
            return self.inner.select(ctx)

    inst = Fake()
    cands, feats = _setup(inst)
    rec = MemoryRecorder()
    with pytest.raises(RuntimeError, match="policy bug"):
        Campaign(instrument=inst, candidates=cands, features=feats, target=TARGET, policy=Broken(),
                 n_initial=3, budget=Budget(9), recorder=rec, seed=0, schedule=Schedule(pending=True)).run()
    assert [s.step for s in rec.steps] == [0, 1, 2, 3, 4]  # step 4 was in flight when 5 was decided
    assert len(inst.sent) == 5


def test_a_run_uses_one_torch_thread_unless_the_config_says_otherwise(tmp_path):
    import json

    from aexp.config import parse_config
    from aexp.loop import run_experiment

    before = torch.get_num_threads()
    for threads, want in ((None, 1), (2, 2)):
        cfg = parse_config({**OUTAGE_CFG, "stopping": {"max_steps": 0}}
                           | ({} if threads is None else {"threads": threads}))
        folder, _ = run_experiment(cfg, Fake(), tmp_path / f"t{want}", progress=False)
        assert json.loads((folder / "manifest.json").read_text())["torch"]["num_threads"] == want
    assert torch.get_num_threads() == before  # restored afterwards


def test_the_instrument_pace_is_measured_and_summarised(tiny_session) -> None:
    # a twin on the real clock sleeps its 20 ms dwell; the decisions in between are instrument idle time
    import json

    folder, result = tiny_session(0, sample={"clock": "real", "measurement_time_s": 0.02})
    pace = {k: result.extra[k] for k in ("wall_s", "instrument_busy_s", "travel_m", "instrument_idle_fraction")}
    assert pace["instrument_busy_s"] >= 8 * 0.02  # eight measurements, each at least its dwell
    assert 0.0 < pace["instrument_idle_fraction"] < 1.0
    assert pace["instrument_idle_fraction"] == pytest.approx(1 - pace["instrument_busy_s"] / pace["wall_s"])
    assert pace["travel_m"] == pytest.approx(sum(s.travel_m for s in result.steps if s.travel_m is not None))
    summary = json.loads((folder / "summary.json").read_text())
    assert {"instrument_idle_fraction", "travel_m", "wall_s"} <= set(summary)
    assert summary["travel_m"] == pytest.approx(pace["travel_m"]) and summary["travel_m"] > 0


def test_a_pending_decision_is_taken_again_on_the_outcome_it_waited_for():
    _, res, _ = _run(Fake(), policy="gp-xy", steps=6, schedule=Schedule(pending=True))
    policy_steps = [s for s in res.steps if s.phase == "policy"]
    assert policy_steps and all(s.rescored == s.pending for s in policy_steps[1:])
    # the first policy decision had the last initial point in flight, with no belief to take again
    assert policy_steps[0].pending and policy_steps[0].rescored == []
    assert all(s.rescored == [] for s in res.steps if s.phase == "initial")
    assert len({s.index for s in res.steps}) == len(res.steps)
    # off: the believer's choice is sent as it is
    _, off, _ = _run(Fake(), policy="gp-xy", steps=6, schedule=Schedule(pending=True, rescore=False))
    assert all(s.rescored == [] for s in off.steps)


def test_rescore_changes_the_choice_when_the_outcome_surprises():
    from aexp.policies import Decision

    inst = Fake()
    cands, feats = _setup(inst)
    policy = as_ask_tell(make_policy("gp-xy", seed=0))
    policy.keeps_rescore = True
    policy.start(Problem(feats, cands.positions, cands.grid_shape, np.ones(len(cands), bool), 20, 0))
    seen = [0, 9, 27, 63, 36, 45]
    policy.tell([Outcome(k, i, float(inst.image[0, 2 * (i // 8), 2 * (i % 8)])) for k, i in enumerate(seen)])
    first = policy.ask(1, step=6)[0]
    second = policy.ask(1, pending=[first.index], step=7)[0]
    assert second.rescore is not None and second.rescore.indices == (first.index,)
    policy.tell([Outcome(6, first.index, 50.0)])  # far above anything seen: look beside it
    again = policy.rescore([second])[0]
    assert isinstance(again, Decision) and again.index != second.index
    d_again = np.linalg.norm(cands.positions[again.index] - cands.positions[first.index])
    d_before = np.linalg.norm(cands.positions[second.index] - cands.positions[first.index])
    assert d_again < d_before
    assert policy.believed[again.index] == again.predicted_mean and second.index not in policy.believed


def test_sessions_recorded_before_the_defaults_replay_as_they_ran(tiny_config):
    from aexp.config import parse_config

    cfg = tiny_config()
    cfg["policy"].pop("pending", None)
    assert parse_config(cfg).policy.pending is True and parse_config(cfg).policy.rescore is True
    assert parse_config(cfg, recorded=True).policy.pending is False  # recorded before pending was the default
    cfg["policy"]["pending"] = True
    assert parse_config(cfg, recorded=True).policy.rescore is False  # recorded before rescore existed
    cfg["policy"]["rescore"] = True
    assert parse_config(cfg, recorded=True).policy.rescore is True


def test_a_failed_point_in_flight_is_not_taken_again_on():
    fail = {(r, c) for r in range(16) for c in range(16) if (r // 2 + c // 2) % 2}  # half the candidates
    _, res, _ = _run(Fake(fail=fail), policy="gp-xy", steps=10, budget=Budget(13),
                     schedule=Schedule(pending=True))
    by_index = {s.index: s for s in res.steps}
    policy_steps = [s for s in res.steps if s.phase == "policy"][1:]
    assert any(by_index[s.pending[0]].status == "failed" for s in policy_steps)
    for s in policy_steps:
        assert s.rescored == (s.pending if by_index[s.pending[0]].status == "ok" else [])
