"""Is a run reproducible end to end, and what does checking it cost?

Runs a config twice with the same seed into two fresh session folders, compares every recorded
decision (candidate, status, target, acquisition, predicted mean and std, bit for bit), then
``replay --verify`` on the first session. Reports the number of identical steps, the replay's
largest deviation, and the replay time as a ratio of the run time measured in the same process.

    python benchmarks/replay_determinism.py configs/plasmonic-dkl.yaml --steps 8 --json replay.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from aexp.config import load_config
from aexp.instrument import load_instrument
from aexp.loop import run_experiment
from aexp.session.replay import verify_session

KEYS = ("index", "status", "target", "acquisition", "predicted_mean", "predicted_std", "phase")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config", type=Path)
    p.add_argument("--steps", type=int, default=8, help="measurements after the initial ones")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    cfg = load_config(args.config).with_overrides(**{"stopping.max_steps": args.steps})
    runs, run_s = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(2):
            inst = load_instrument(cfg.instrument.driver, cfg.instrument.options, seed=args.seed)
            t0 = time.perf_counter()
            folder, res = run_experiment(cfg, inst, Path(tmp) / f"run{k}", seed=args.seed, progress=False)
            run_s.append(time.perf_counter() - t0)
            runs.append([{key: getattr(s, key) for key in KEYS} for s in res.steps])
        t0 = time.perf_counter()
        report = verify_session(Path(tmp) / "run0")
        replay_s = time.perf_counter() - t0
    same = sum(a == b for a, b in zip(*runs))
    out = {
        "config": str(args.config), "steps": len(runs[0]), "identical_steps": same,
        "replay_verified_steps": report.steps, "replay_max_deviation": report.max_deviation,
        "run_s": run_s, "replay_s": replay_s, "replay_over_run": replay_s / min(run_s),
    }
    print(json.dumps(out, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
