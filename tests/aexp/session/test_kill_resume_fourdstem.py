"""Crash safety of a 4D-STEM session end to end: SIGKILL a real ``aexp run`` of the fourdstem twin
after a few patterns are on disk, ``aexp resume``, then ``aexp replay --verify``. The resumed
session must hold the same steps and the same patterns as a run that was never killed.

The quick test kills the real run once and resumes and verifies in this process (the library calls
behind ``aexp resume`` and ``aexp replay --verify``), which spares two interpreter starts; the slow
ones go through the CLI for all three, at several moments (``pytest -m slow``)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from aexp.config import parse_config
from aexp.instrument import load_instrument
from aexp.loop import run_experiment
from aexp.session.replay import resume_session, verify_session
from aexp.session.store import SessionReader
from aexp.session.zarr_rows import MEASUREMENTS

CONFIG = Path(__file__).parents[3] / "configs" / "fourdstem-dkl.yaml"
SEED = 3
MAX_STEPS = 8
TIMEOUT_S = 180


def _tiny_fourdstem() -> dict:
    """The shipped 4D-STEM config, shrunk: a 16 x 16 survey, one embedding epoch, short fits."""
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["name"] = "kill-resume-4d"
    cfg["instrument"]["options"]["survey_pixels"] = 16
    cfg["embedder"]["epochs"] = 1
    cfg["surrogate"].update(iterations=10, warm_iterations=2)
    cfg["stopping"]["max_steps"] = MAX_STEPS
    cfg["recording"]["figure"] = False
    return cfg


@pytest.fixture(scope="module")
def config() -> dict:
    return _tiny_fourdstem()


@pytest.fixture(scope="module")
def reference(config, tmp_path_factory):
    """Steps and patterns of an uninterrupted run."""
    cfg = parse_config(config)
    inst = load_instrument(cfg.instrument.driver, cfg.instrument.options, seed=SEED)
    folder, _ = run_experiment(cfg, inst, tmp_path_factory.mktemp("ref") / "s", seed=SEED, progress=False)
    reader = SessionReader(folder)
    return [(s.index, s.status, s.target) for s in reader.steps], reader.spectra()


def _aexp(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "aexp", *args], capture_output=True, text=True, timeout=TIMEOUT_S)
    if check and proc.returncode != 0:
        raise AssertionError(f"aexp {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def _complete_lines(folder: Path) -> list[bytes]:
    path = folder / "steps.jsonl"
    raw = path.read_bytes() if path.exists() else b""
    return raw[: raw.rfind(b"\n") + 1].splitlines()


def kill_resume_verify(tmp_path: Path, cfg: dict, wait_steps: int, delay_s: float, cli: bool = True) -> dict:
    """Run, SIGKILL once ``wait_steps`` steps are on disk (plus ``delay_s``), resume, verify;
    resume and verify through the CLI (``cli``) or in this process."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    folder = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "aexp", "run", str(config), "--out", str(folder),
                             "--seed", str(SEED), "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + TIMEOUT_S
    while len(_complete_lines(folder)) < wait_steps and proc.poll() is None:
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.01)
    time.sleep(delay_s)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=TIMEOUT_S)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    at_kill = _complete_lines(folder)
    patterns_at_kill = SessionReader(folder).spectra()[: len(at_kill)]
    if cli:
        _aexp("resume", str(folder), "--quiet")
        verify = _aexp("replay", str(folder), "--verify", "--quiet", check=False)
        verified, message = verify.returncode == 0, verify.stdout + verify.stderr
    else:
        resume_session(folder)
        verified, message = verify_session(folder).steps == len(_complete_lines(folder)), "in process"
    after = _complete_lines(folder)
    steps = [json.loads(x) for x in after]
    reader = SessionReader(folder)
    return {
        "killed_after": len(at_kill),
        "lost": sum(1 for a, b in zip(at_kill, after) if a != b) + max(0, len(at_kill) - len(after)),
        "duplicated": len(steps) - len({s["index"] for s in steps}),
        "steps": [(s["index"], s["status"], s["target"]) for s in steps],
        "patterns_at_kill": patterns_at_kill,
        "patterns": reader.spectra(),
        "leftovers": sorted(p.name for p in (folder / MEASUREMENTS).glob("*.tmp")),
        "verified": verified,
        "verify_message": message,
    }


def _check(out: dict, reference: tuple[list, np.ndarray]) -> None:
    steps, patterns = reference
    assert 1 <= out["killed_after"] < len(steps)  # killed mid-run, after patterns were on disk
    assert out["lost"] == 0 and out["duplicated"] == 0
    assert out["steps"] == steps  # as if it had never been killed
    # the patterns on disk at the kill are kept as they were, and the session ends with every one
    np.testing.assert_array_equal(out["patterns_at_kill"], patterns[: out["killed_after"]])
    assert out["patterns"].shape == patterns.shape == (len(steps), 64, 64)
    np.testing.assert_array_equal(out["patterns"], patterns)
    assert out["leftovers"] == []
    assert out["verified"], out["verify_message"]


def test_kill_9_of_a_4d_stem_run_then_resume_loses_and_repeats_nothing(tmp_path, config, reference):
    _check(kill_resume_verify(tmp_path, config, wait_steps=3, delay_s=0.0, cli=False), reference)


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(6))
def test_kill_9_of_a_4d_stem_run_at_many_moments_through_the_cli(tmp_path, config, reference, trial):
    rng = np.random.default_rng([trial, 22])
    wait_steps = int(rng.integers(1, len(reference[0]) - 2))
    out = kill_resume_verify(tmp_path, config, wait_steps, float(rng.uniform(0.0, 0.2)), cli=True)
    print("trial", trial, {k: out[k] for k in ("killed_after", "lost", "duplicated", "verified")})
    _check(out, reference)
