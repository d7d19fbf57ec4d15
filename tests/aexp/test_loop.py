import json

import numpy as np
import pytest
import torch

from aexp.config import ConfigError, parse_config
from aexp.instrument import MeasurementFailed, check_position
from aexp.loop import initial_indices, run_campaign, run_experiment
from aexp.patches import grid_candidates
from aexp.policies import make_policy
from aexp.session.replay import verify_session
from aexp.session.store import MemoryRecorder, SessionReader
from aexp.targets import make_target
from aexp.types import Bounds, InstrumentDescription, Measurement, PixelTransform, SpectrumAxis, Survey

AXIS = SpectrumAxis("energy_loss", "eV", 0.0, 4.0, 41)


class FakeInstrument:
    """A 16x16 survey; the spectrum is flat at the survey value of the pixel. Some pixels fail."""

    def __init__(self, fail=(), nan=(), bounds=None):
        rng = np.random.default_rng(0)
        self.image = rng.uniform(size=(1, 16, 16)).astype(np.float32)
        self.transform = PixelTransform.square(1e-9)
        self._bounds = bounds or Bounds(0.0, 15e-9, 0.0, 15e-9)
        self.fail, self.nan = set(fail), set(nan)
        self.sent = []

    @property
    def bounds(self):
        return self._bounds

    def describe(self):
        return InstrumentDescription("fake", self._bounds, (1, 16, 16), ("haadf",), AXIS)

    def survey(self):
        return Survey(self.image, self.transform, ("haadf",))

    def measure(self, position, command_id=""):
        check_position(self._bounds, position)
        self.sent.append(tuple(position))
        r, c = np.rint(self.transform.to_pixel(np.array(position))).astype(int)
        if (r, c) in self.fail:
            raise MeasurementFailed("detector saturated")
        value = np.nan if (r, c) in self.nan else self.image[0, r, c]
        return Measurement(np.full(AXIS.n, value), AXIS, tuple(position), duration_s=0.01)


def _campaign(inst, policy="random", n_initial=3, max_steps=10, seed=0):
    cands = grid_candidates(inst.survey(), stride=2, patch_size=4)
    feats = torch.as_tensor(cands.patches.reshape(len(cands), -1), dtype=torch.float64)
    rec = MemoryRecorder()
    res = run_campaign(
        instrument=inst, candidates=cands, features=feats,
        target=make_target("band_intensity", window=(1.0, 2.0)),
        policy=make_policy(policy, input_dim=feats.shape[1], seed=seed),
        n_initial=n_initial, max_steps=max_steps, recorder=rec, seed=seed,
    )
    return cands, res, rec


def test_campaign_spends_its_budget_without_repeating():
    cands, res, rec = _campaign(FakeInstrument())
    assert len(res.steps) == 13 == len(rec.steps)
    idx = [s.index for s in res.steps]
    assert len(set(idx)) == len(idx)
    assert [s.phase for s in res.steps[:3]] == ["initial"] * 3
    assert all(s.phase == "policy" for s in res.steps[3:])
    # the target is the band integral of a flat spectrum: value * window width
    s = res.steps[0]
    r, c = (int(v) for v in s.pixel)
    assert s.target == pytest.approx(FakeInstrument().image[0, r, c] * 1.0)
    assert res.steps[-1].best_so_far == max(x.target for x in res.steps)


def test_initial_points_depend_on_seed_only():
    allowed = np.ones(64, bool)
    a = initial_indices(5, 3, allowed)
    assert a.tolist() == initial_indices(5, 3, allowed).tolist()
    assert a.tolist() != initial_indices(5, 4, allowed).tolist()


def test_failed_and_nan_measurements_are_recorded_and_never_retried():
    probe = FakeInstrument()
    cands = grid_candidates(probe.survey(), 2, 4)
    first = initial_indices(3, 0, np.ones(len(cands), bool))
    bad = tuple(int(v) for v in cands.pixels[first[0]])
    worse = tuple(int(v) for v in cands.pixels[first[1]])
    inst = FakeInstrument(fail=[bad], nan=[worse])
    _, res, rec = _campaign(inst, max_steps=20)
    failed = [s for s in res.steps if s.status == "failed"]
    assert {s.index for s in failed} == {int(first[0]), int(first[1])}
    assert "saturated" in failed[0].error and failed[1].error.startswith("non-finite")
    assert all(s.target is None for s in failed)
    assert len(res.steps) == 23  # the loop went on and spent the whole budget
    assert len({s.index for s in res.steps}) == 23


def test_candidates_outside_the_bounds_are_never_sent():
    inst = FakeInstrument(bounds=Bounds(0.0, 7e-9, 0.0, 15e-9))  # left half only
    _, res, _ = _campaign(inst, max_steps=30)
    assert all(x <= 7e-9 for x, _ in inst.sent)
    assert all(s.position[0] <= 7e-9 for s in res.steps)


def test_surrogate_policy_records_its_decision():
    _, res, _ = _campaign(FakeInstrument(), policy="dkl", max_steps=3)
    pol = [s for s in res.steps if s.phase == "policy"]
    assert all(s.acquisition is not None and s.predicted_std is not None for s in pol)
    assert all(s.timings["decision_s"] >= s.timings["fit_s"] for s in pol)


SMALL = {
    "instrument": {"driver": "plasmonic", "options": {"survey_pixels": 32, "n_particles": 2, "size_range_m": [6e-9, 10e-9]}},
    "candidates": {"stride": 2, "patch_size": 8},
    "embedder": {"kind": "rvae", "epochs": 2, "hidden": 16},
    "surrogate": {"iterations": 20, "warm_iterations": 5},
    "policy": {"kind": "dkl", "n_initial": 4},
    "target": {"name": "band_intensity", "window": [1.0, 3.0]},
    "stopping": {"max_steps": 4},
}


def test_run_experiment_writes_a_complete_session(tmp_path):
    cfg = parse_config(SMALL)
    from aexp.instrument import load_instrument

    inst = load_instrument("plasmonic", SMALL["instrument"]["options"], seed=1)
    folder, res = run_experiment(cfg, inst, tmp_path / "run", seed=1, progress=False)
    names = {p.name for p in folder.iterdir()}
    assert {"manifest.json", "survey.npy", "candidates.npy", "pixels.npy", "steps.jsonl",
            "spectra.bin", "summary.json", "session.png"} <= names
    man = json.loads((folder / "manifest.json").read_text())
    assert man["seed"] == 1 and man["config"]["policy"]["kind"] == "dkl"
    assert man["candidates"]["count"] == 256 and man["versions"]["torch"]
    r = SessionReader(folder)
    assert len(r.steps) == 8 and r.dropped == []
    lines = (folder / "steps.jsonl").read_text().splitlines()
    assert {"step", "index", "position", "target", "status", "acquisition", "timings"} <= set(json.loads(lines[0]))
    assert r.spectra().shape == (8, man["spectrum_axis"]["n"])
    assert np.load(folder / "candidates.npy").shape == (256, 2)
    assert json.loads((folder / "summary.json").read_text())["status"] == "completed"


def test_same_seed_same_decisions(tmp_path):
    from aexp.instrument import load_instrument

    cfg = parse_config(SMALL)
    runs = []
    for k in range(2):
        inst = load_instrument("plasmonic", SMALL["instrument"]["options"], seed=2)
        _, res = run_experiment(cfg, inst, tmp_path / f"r{k}", seed=2, progress=False)
        runs.append([(s.index, s.target) for s in res.steps])
    assert runs[0] == runs[1]


def test_config_error_leaves_no_folder(tmp_path):
    from aexp.instrument import load_instrument

    cfg = parse_config({**SMALL, "candidates": {"stride": 2, "patch_size": 64}})
    inst = load_instrument("plasmonic", SMALL["instrument"]["options"], seed=1)
    with pytest.raises(ConfigError, match="patch_size"):
        run_experiment(cfg, inst, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


class InterruptedInstrument(FakeInstrument):
    def __init__(self, after):
        super().__init__()
        self.after = after

    def measure(self, position, command_id=""):
        if len(self.sent) == self.after:
            raise KeyboardInterrupt  # Ctrl-C while the probe is out
        return super().measure(position, command_id)


def test_ctrl_c_keeps_every_completed_step(tmp_path):
    cfg = parse_config({
        "instrument": {"driver": "fake"}, "embedder": "none", "candidates": {"stride": 2, "patch_size": 4},
        "policy": {"kind": "random", "n_initial": 2}, "stopping": {"max_steps": 20},
        "target": {"name": "band_intensity", "window": [1.0, 2.0]}, "recording": {"figure": False},
    })
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, InterruptedInstrument(after=6), tmp_path / "run", progress=False)
    r = SessionReader(tmp_path / "run")
    assert len(r.steps) == 6 and r.dropped == []
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "interrupted"


@pytest.mark.parametrize("kind", ["gp-xy", "random", "raster"])
def test_a_policy_that_ignores_features_trains_no_embedder(tiny_session, monkeypatch, kind):
    import aexp.features

    def no_training(*args, **kwargs):
        raise AssertionError("the embedder was trained for a policy that does not use it")

    monkeypatch.setattr(aexp.features, "embed_candidates", no_training)
    rvae = {"kind": "rvae", "latent_dim": 2, "hidden": 8, "epochs": 1}
    folder, result = tiny_session(0, policy={"kind": kind}, embedder=rvae)
    man = json.loads((folder / "manifest.json").read_text())
    assert man["features"]["kind"] == "none" and man["features"]["policy_uses_features"] is False
    assert len(result.steps) == 8 and verify_session(folder).steps == 8


def test_a_run_keeps_its_log_in_the_session(tiny_session):
    folder, result = tiny_session(2)
    text = (folder / "aexp.log").read_text()
    assert "INFO" in text and "aexp.run" in text and "256 candidates" in text
    assert f"ended completed after {len(result.steps)} steps" in text
