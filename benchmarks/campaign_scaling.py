"""A campaign's wall time serial vs on local worker processes, and a kill at half then ``--resume``.

Runs ``python -m aexp bench`` three times on the same cells (a config x seeds x policies):

1. ``--workers 1`` (in one process) into ``WORK/serial``;
2. ``--workers N`` (a process pool) into ``WORK/pool``: its cells must equal the serial ones;
3. ``--workers N`` into ``WORK/killed``, SIGKILLed once half the cells are on disk, then run again
   with ``--resume``: every cell must be in ``cells.jsonl`` exactly once, equal to the serial one.

Prints the wall times and their ratio (the same machine, one after the other: on a shared machine
quote the ratio with the load it ran under) and the checks, as JSON with ``--json``.

    OMP_NUM_THREADS=1 python benchmarks/campaign_scaling.py configs/plasmonic-dkl.yaml \\
        --seeds 0-7 --policies random,gp-xy --steps 30 --workers 2 --work /tmp/scaling
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from aexp.bench.cells import CellStore


def _bench(config: str, args: argparse.Namespace, out: Path, workers: int, resume: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "aexp", "bench", config, "--seeds", args.seeds, "--policies", args.policies,
           "--workers", str(workers), "--out", str(out), "--quiet"]
    if args.steps is not None:
        cmd += ["--steps", str(args.steps)]
    return cmd + (["--resume"] if resume else [])


def _outcomes(folder: Path) -> dict:
    return {(r.seed, r.policy): r.outcome() for r in CellStore(folder).read()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("--seeds", default="0-7")
    p.add_argument("--policies", default="random,gp-xy")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--work", type=Path, default=Path("campaign-scaling"))
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    times = {}
    for name, workers in (("serial", 1), ("pool", args.workers)):
        t0 = time.perf_counter()
        subprocess.run(_bench(args.config, args, args.work / name, workers), check=True, env=env,
                       stdout=subprocess.DEVNULL)
        times[name] = time.perf_counter() - t0
    serial = _outcomes(args.work / "serial")
    n = len(serial)

    killed = args.work / "killed"
    proc = subprocess.Popen(_bench(args.config, args, killed, args.workers), env=env, stdout=subprocess.DEVNULL)
    cells = killed / "cells.jsonl"
    while proc.poll() is None and (not cells.exists() or cells.read_bytes().count(b"\n") < n // 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at_kill = len(CellStore(killed).read())
    t0 = time.perf_counter()
    subprocess.run(_bench(args.config, args, killed, args.workers, resume=True), check=True, env=env,
                   stdout=subprocess.DEVNULL)
    times["resume"] = time.perf_counter() - t0
    final = CellStore(killed).read()

    result = {
        "config": args.config, "seeds": args.seeds, "policies": args.policies, "steps": args.steps,
        "cells": n, "workers": args.workers, "cpu_count": os.cpu_count(),
        "wall_s": {k: round(v, 1) for k, v in times.items()},
        "serial_over_pool": round(times["serial"] / times["pool"], 2),
        "pool_equals_serial": _outcomes(args.work / "pool") == serial,
        "killed_with_cells_on_disk": at_kill,
        "after_resume_cells": len(final),
        "after_resume_each_cell_once": len({r.key for r in final}) == len(final) == n,
        "after_resume_equals_serial": _outcomes(killed) == serial,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
