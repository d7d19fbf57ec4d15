"""The shipped configs of the lattice and ferroelectric twins run end to end (shrunk to be fast)."""

from pathlib import Path

import numpy as np
import pytest

from aexp.bench import run_bench
from aexp.config import load_config
from aexp.instrument import load_instrument
from aexp.loop import run_experiment
from aexp.session.store import SessionReader

CONFIGS = Path(__file__).parents[2] / "configs"
SHRINK = {
    "lattice-dkl.yaml": {"instrument.options.survey_pixels": 72},
    "ferroelectric-dkl.yaml": {"instrument.options.survey_pixels": 32, "instrument.options.n_defects": 2},
}
FAST = {"embedder.epochs": 1, "surrogate.iterations": 10, "surrogate.warm_iterations": 2, "stopping.max_steps": 3}


@pytest.mark.parametrize("name", sorted(SHRINK))
def test_shipped_twin_config_runs_and_benches(name, tmp_path):
    cfg = load_config(CONFIGS / name).with_overrides(**SHRINK[name], **FAST)
    inst = load_instrument(cfg.instrument.driver, cfg.instrument.options, seed=0)
    folder, result = run_experiment(cfg, inst, tmp_path / "run", seed=0, progress=False)
    assert len(result.steps) == cfg.budget
    assert sum(s.status == "ok" for s in result.steps) >= cfg.budget - 1
    assert (folder / "session.png").exists()
    manifest = SessionReader(folder).manifest
    if cfg.candidates.mode == "atoms":
        assert manifest.candidates.grid_shape is None and manifest.candidates.count > 50
    res = run_bench(cfg, seeds=[0], policies=["dkl-rvae", "random"], progress=False, log=lambda s: None)
    assert res["n_candidates"] == manifest.candidates.count
    assert all(0.0 <= np.mean(p["discovery"]) <= 1.0 for p in res["policies"].values())


REALTIME = ("plasmonic-async.yaml", "plasmonic-travel.yaml", "plasmonic-drift.yaml")


@pytest.mark.parametrize("name", REALTIME)
def test_shipped_realtime_configs_run_on_the_simulated_clock_and_replay(name, tmp_path):
    from aexp.session.replay import verify_session

    cfg = load_config(CONFIGS / name)
    assert cfg.instrument.options["clock"] == "real" and cfg.instrument.options["measurement_time_s"] == 0.5
    assert cfg.policy.pending
    small = {"instrument.options.clock": "sim", "instrument.options.survey_pixels": 64,
             "instrument.options.n_particles": 2, "embedder.kind": "none", "recording.figure": False,
             **{k: v for k, v in FAST.items() if not k.startswith("embedder.")}}  # none trains nothing
    if cfg.drift is not None:
        # seconds follow the wall clock, not the twin's simulated one: count steps here
        small.update({"drift.resurvey_every_s": None, "drift.resurvey_every": 3})
    cfg = load_config(CONFIGS / name).with_overrides(**small)
    inst = load_instrument(cfg.instrument.driver, cfg.instrument.options, seed=0)
    folder, result = run_experiment(cfg, inst, tmp_path / "run", seed=0, progress=False)
    assert len(result.steps) == cfg.budget and result.extra["travel_m"] > 0
    if cfg.drift is not None:
        assert result.extra["registrations"] and (folder / "registrations.jsonl").exists()
    assert verify_session(folder).steps == cfg.budget
