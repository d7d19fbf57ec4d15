"""SIGKILL ``aexp run`` at every phase, then resume: is every folder resumable or recognised?

One reference run of a small experiment (an rVAE embedder, so there is a training phase) gives the
steps an uninterrupted run takes. Then ``--kills`` runs of the same experiment are killed with SIGKILL,
each at a moment of its own, cycling through every phase: during start-up (a fixed delay), as soon as
the session folder appears, while the embedder trains, as soon as the manifest appears, and after
1, 3, 5, ... steps are on disk. Each folder left behind is classified:

- ``no folder``: killed before anything was written;
- ``not started``: the folder is there but the manifest is not (killed while surveying or training):
  ``aexp resume`` must refuse it with a clear message and ``aexp run --overwrite`` must accept it;
- ``resumable``: ``aexp resume`` must finish the budget, ``aexp replay --verify`` must pass, and the
  steps must be exactly the reference run's (nothing lost, nothing measured twice).

Example:
    OMP_NUM_THREADS=1 python benchmarks/kill_campaign.py --kills 25
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

CONFIG = {
    "name": "kill-campaign",
    "instrument": {"driver": "plasmonic",
                   "options": {"survey_pixels": 48, "n_particles": 3, "size_range_m": [6e-9, 10e-9]}},
    "candidates": {"stride": 2, "patch_size": 8},
    "embedder": {"kind": "rvae", "latent_dim": 2, "hidden": 16, "epochs": 15, "batch_size": 64},
    "surrogate": {"iterations": 30, "warm_iterations": 5},
    "policy": {"kind": "dkl", "n_initial": 4},
    "target": {"name": "band_intensity", "window": [1.0, 3.0]},
    "stopping": {"max_steps": 16},
    "recording": {"figure": False},
}


def aexp(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aexp", *args], capture_output=True, text=True, timeout=timeout)


def steps_of(folder: Path) -> list[tuple[int, int, str]]:
    lines = (folder / "steps.jsonl").read_text().splitlines()
    return [(r["step"], r["index"], r["status"]) for r in map(json.loads, lines)]


def classify(folder: Path, config: Path, reference: list[tuple[int, int, str]]) -> tuple[str, str]:
    """``(phase, outcome)`` of a killed run's folder; the outcome is ``ok`` or what went wrong."""
    if not folder.exists():
        return "no folder", "ok"
    if not (folder / "manifest.json").exists():
        refused = aexp("resume", str(folder))
        if refused.returncode != 2 or "--overwrite" not in refused.stderr:
            return "not started", f"resume did not refuse clearly: {refused.returncode} {refused.stderr.strip()}"
        again = aexp("run", str(config), "--out", str(folder), "--overwrite", "--quiet")
        if again.returncode != 0:
            return "not started", f"run --overwrite failed: {again.stderr.strip()}"
        return "not started", "ok" if steps_of(folder) == reference else "overwritten run differs"
    before = len(steps_of(folder)) if (folder / "steps.jsonl").exists() else 0
    phase = f"campaign ({before} steps on disk)" if before else "manifest written, no step"
    resumed = aexp("resume", str(folder))
    if resumed.returncode != 0:
        return phase, f"resume failed: {resumed.stderr.strip()}"
    verified = aexp("replay", str(folder), "--verify")
    if verified.returncode != 0:
        return phase, f"verify failed: {verified.stderr.strip()}"
    after = steps_of(folder)
    if after != reference:
        return phase, f"steps differ from the reference ({len(after)} vs {len(reference)})"
    return phase, "ok"


def reached(trigger: str, folder: Path, elapsed: float) -> bool:
    """Whether the run has reached the moment ``trigger`` names (see the module docstring)."""
    if trigger == "start-up":
        return elapsed > 0.5
    if trigger == "folder":
        return folder.exists()
    if trigger == "training":  # the marker is written just before the embedder trains
        marker = folder / ".aexp-session"
        return marker.exists() and time.time() - marker.stat().st_mtime > 0.3
    if trigger == "manifest":
        return (folder / "manifest.json").exists()
    steps = folder / "steps.jsonl"
    return steps.exists() and steps.read_bytes().count(b"\n") >= int(trigger.split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=25)
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="aexp-kills-"))
    work.mkdir(parents=True, exist_ok=True)
    config = work / "kill.yaml"
    config.write_text(yaml.safe_dump(CONFIG))

    t0 = time.perf_counter()
    ref = aexp("run", str(config), "--out", str(work / "reference"), "--quiet")
    total = time.perf_counter() - t0
    if ref.returncode != 0:
        raise SystemExit(f"the reference run failed: {ref.stderr}")
    reference = steps_of(work / "reference")
    print(f"reference run: {len(reference)} steps in {total:.1f} s")

    triggers = ["start-up", "folder", "training", "manifest"] + [f"{n} steps" for n in range(1, len(reference), 2)]
    rows = []
    for k in range(args.kills):
        trigger = triggers[k % len(triggers)]
        folder = work / f"killed-{k:02d}"
        log = work / f"killed-{k:02d}.stderr"
        with open(log, "wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "aexp", "run", str(config), "--out", str(folder), "--quiet"],
                                    stdout=subprocess.DEVNULL, stderr=err)
            started = time.perf_counter()
            while proc.poll() is None and not reached(trigger, folder, time.perf_counter() - started):
                time.sleep(0.005)
            ended_by_itself = proc.poll() is not None
            if not ended_by_itself:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        if ended_by_itself:  # the run must not end on its own before the moment it was to be killed
            rows.append((k, trigger, "ended before the kill", f"exit {proc.returncode}: {log.read_text()[-300:]}"))
            print(f"kill {k:2d} at {trigger:<10}: ended by itself with {proc.returncode}", flush=True)
            continue
        phase, outcome = classify(folder, config, reference)
        rows.append((k, trigger, phase, outcome))
        print(f"kill {k:2d} at {trigger:<10}: {phase:<32} {outcome}", flush=True)

    bad = [r for r in rows if r[3] != "ok"]
    phases: dict[str, int] = {}
    for _, _, phase, _ in rows:
        key = phase.split(" (")[0]
        phases[key] = phases.get(key, 0) + 1
    print(f"\n{len(rows)} SIGKILLs: {phases}; {len(rows) - len(bad)} resumable or recognised, {len(bad)} not")
    print("0 steps lost or duplicated" if not bad else "FAILURES:\n" + "\n".join(map(str, bad)))
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    main()
