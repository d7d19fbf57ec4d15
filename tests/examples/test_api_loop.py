"""The Python API example runs end to end on a tiny budget and its session replays exactly."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _example():
    spec = importlib.util.spec_from_file_location("api_loop", ROOT / "examples" / "api_loop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_example_runs_records_and_verifies(tmp_path, capsys):
    example = _example()
    out = tmp_path / "session"
    argv = ["--out", str(out), "--steps", "3", "--epochs", "1", "--quiet"]
    assert example.main(argv) == 0
    printed = capsys.readouterr().out
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == 5 + 3  # n_initial + --steps
    assert [s["phase"] for s in steps] == ["initial"] * 5 + ["policy"] * 3
    assert f"session {out}: 8 steps recorded" in printed
    assert "replay: all 8 decisions reproduced" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed"


def test_api_example_config_is_the_documented_one():
    cfg = _example().experiment_config(steps=7, survey_pixels=40)
    assert (cfg.policy.kind, cfg.stopping.max_steps, cfg.instrument.options["survey_pixels"]) == ("dkl", 7, 40)
    assert cfg.budget == cfg.policy.n_initial + 7
