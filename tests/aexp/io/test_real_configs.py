"""Every config under configs/real runs end to end on its recording (tiny budget), and the bench
reports the survey-rank baseline and the recording's notes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aexp.bench import format_table, run_bench
from aexp.config import load_config
from aexp.instrument import load_instrument
from aexp.loop import run_experiment

ROOT = Path(__file__).parents[3]
# the recipe for a new sample reads a shipped recording too
CONFIGS = [*sorted((ROOT / "configs" / "real").glob("*.yaml")), ROOT / "configs" / "real-default.yaml"]


def test_there_is_a_config_per_shipped_recording():
    assert {p.name for p in CONFIGS} >= {"eels-ti-l.yaml", "eds-si.yaml", "sts-empty-states.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_real_config_runs_and_records_the_recording(path, tmp_path):
    cfg = load_config(path)
    shrink = {"stopping.max_steps": 2, "policy.n_initial": 3, "recording.figure": False}
    if "epochs" in type(cfg.embedder).model_fields:  # each kind takes only its own keys
        shrink["embedder.epochs"] = 1
    if "iterations" in type(cfg.surrogate).model_fields:
        shrink |= {"surrogate.iterations": 5, "surrogate.warm_iterations": 2}
    cfg = cfg.with_overrides(**shrink)
    inst = load_instrument(cfg.instrument.driver, cfg.instrument.options, seed=0)
    folder, result = run_experiment(cfg, inst, tmp_path / "s", progress=False)
    assert len(result.steps) == 5
    manifest = json.loads((folder / "manifest.json").read_text())
    recording = manifest["instrument"]["extra"]["recording"]
    source = Path(cfg.instrument.options["path"])
    assert recording["source"]["file"] == source.name and len(recording["source"]["sha256"]) == 64
    assert manifest["instrument"]["extra"]["survey_source"]


def test_bench_on_a_recording_reports_baseline_and_noise(capsys):
    cfg = load_config(Path(__file__).parents[3] / "configs" / "real" / "eds-si.yaml")
    cfg = cfg.with_overrides(**{"stopping.max_steps": 4, "policy.n_initial": 2})
    res = run_bench(cfg, seeds=[0, 1], policies=["random", "survey-rank"], progress=False, log=lambda s: None)
    entry = res["policies"]["survey-rank"]
    assert entry["direction"] in ("bright", "dark") and len(entry["discovery"]) == 2
    runs = {d: res["policies"][f"survey-rank-{d}"]["discovery"] for d in ("bright", "dark")}
    assert sum(entry["discovery"]) == max(sum(runs["bright"]), sum(runs["dark"]))
    st = res["replay"]["top_stability"]
    assert st["method"].startswith("Poisson") and 0 <= st["min_overlap"] <= st["mean_overlap"] <= 1
    text = format_table(res)
    assert "seeds vary the initial random points only" in text and "survey-rank = " in text
