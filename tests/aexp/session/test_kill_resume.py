"""Crash safety end to end: SIGKILL a real ``aexp run`` at a random moment, ``aexp resume``, then
``aexp replay --verify``. The quick test runs one trial; the slow one 20 (``pytest -m slow``)."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

BUDGET = 12
SEED = 5
TIMEOUT_S = 180


def _aexp(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "aexp", *args], capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    if check and proc.returncode != 0:
        raise AssertionError(f"aexp {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def _complete_lines(folder):
    path = folder / "steps.jsonl"
    raw = path.read_bytes() if path.exists() else b""
    return raw[: raw.rfind(b"\n") + 1].splitlines()


CHANGES = {"name": "kill-resume", "sample": {"fail_probability": 0.1},
           "policy": {"acquisition": "thompson"}, "stopping": {"max_steps": 9}}


@pytest.fixture(scope="module")
def config(tiny_config):
    return tiny_config(**CHANGES)


@pytest.fixture(scope="module")
def reference(tiny_session):
    """The decisions of an uninterrupted run."""
    _, res = tiny_session(SEED, **CHANGES)
    return [(s.index, s.status, s.target) for s in res.steps]


def kill_resume_verify(tmp_path, trial: int, cfg: dict) -> dict:
    """One trial; returns what was on disk at the kill and what the session holds after resume."""
    rng = np.random.default_rng([trial, 77])
    wait_steps = int(rng.integers(1, BUDGET - 1))
    delay = float(rng.uniform(0.0, 0.3))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    folder = tmp_path / f"run{trial}"
    proc = subprocess.Popen([sys.executable, "-m", "aexp", "run", str(config), "--out", str(folder),
                             "--seed", str(SEED), "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + TIMEOUT_S
    while len(_complete_lines(folder)) < wait_steps and proc.poll() is None:
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.02)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=TIMEOUT_S)
    proc.stderr.close()
    at_kill = _complete_lines(folder)
    torn = (folder / "steps.jsonl").stat().st_size - sum(len(x) + 1 for x in at_kill)
    _aexp("resume", str(folder), "--quiet")
    verify = _aexp("replay", str(folder), "--verify", "--quiet", check=False)
    after = _complete_lines(folder)
    steps = [json.loads(x) for x in after]
    return {
        "killed_after": len(at_kill),
        "torn_bytes": torn,
        "lost": sum(1 for a, b in zip(at_kill, after) if a != b) + max(0, len(at_kill) - len(after)),
        "duplicated": len(steps) - len({s["index"] for s in steps}),
        "steps": [(s["index"], s["status"], s["target"]) for s in steps],
        "verified": verify.returncode == 0,
        "verify_message": verify.stdout + verify.stderr,
    }


def _check(out, reference):
    assert out["lost"] == 0 and out["duplicated"] == 0
    assert out["steps"] == reference  # as if it had never been killed
    assert out["verified"], out["verify_message"]


def test_kill_9_then_resume_loses_and_repeats_nothing(tmp_path, config, reference):
    _check(kill_resume_verify(tmp_path, 0, config), reference)


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(1, 21))
def test_kill_9_then_resume_many_trials(tmp_path, config, reference, trial):
    out = kill_resume_verify(tmp_path, trial, config)
    print("trial", trial, {k: out[k] for k in ("killed_after", "torn_bytes", "lost", "duplicated", "verified")})
    _check(out, reference)


PENDING = {**CHANGES, "name": "kill-resume-pending", "policy": {"acquisition": "thompson", "pending": True}}


def test_kill_9_with_a_measurement_in_flight_then_resume(tmp_path, tiny_config, tiny_session):
    """Decide-while-measuring: the step in flight at the kill is measured again on resume (a
    simulator keeps no record of it), recorded once, and the session verifies."""
    _, res = tiny_session(SEED, **PENDING)
    reference = [(s.index, s.status, s.target) for s in res.steps]
    assert any(s.pending for s in res.steps)
    for trial in (3,):
        (tmp_path / str(trial)).mkdir()
        out = kill_resume_verify(tmp_path / str(trial), trial, tiny_config(**PENDING))
        _check(out, reference)
