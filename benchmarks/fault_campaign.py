"""A fault-injected campaign over the real link: does it finish its budget, losing and repeating nothing?

The plasmonic simulator is served (in this process, on a free loopback port) inside the fault plan
``benchmarks/faults-all.yaml`` (every kind at 5 %: delayed and dropped replies, server restarts
mid-measurement, NaN and saturated spectra, refused positions, probe blur); a DKL campaign drives
it through the ``zmq`` driver. Then the steps the client recorded are audited against the server's
executed-command log:

- duplicates: command ids the instrument executed more than once (target 0);
- lost steps: steps missing, or failed because the link gave up or a result was lost (target 0);
- unrecorded: executed ids that no recorded step carries (target 0).

Refusals and NaN spectra fail their steps by design; they are recorded and counted apart.

    python benchmarks/fault_campaign.py --steps 120 --json fault_campaign.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from aexp.config import parse_config
from aexp.instrument import load_instrument
from aexp.link.serve import InstrumentServer, ServerConfig
from aexp.loop import run_experiment
from simulators.faults import apply_faults, audit_campaign, load_fault_plan
from simulators.plasmonic import PlasmonicSimulator

SIM = {"survey_pixels": 48, "n_particles": 3, "size_range_m": [8e-9, 14e-9]}


def campaign_config(address: str, steps: int, policy: str, timeout_s: float):
    return parse_config({
        "name": "fault-campaign",
        "instrument": {"driver": "zmq", "options": {"address": address, "timeout_s": timeout_s, "retries": 6}},
        "candidates": {"stride": 2, "patch_size": 8},
        "embedder": "none",
        "surrogate": {"iterations": 60, "warm_iterations": 10},
        "policy": {"kind": policy, "n_initial": 5},
        "target": {"name": "band_intensity", "window": [2.3, 2.9]},
        "stopping": {"max_steps": steps - 5},
        "recording": {"figure": False},
    })


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=120, help="budget, initial points included (>= 100 to report)")
    p.add_argument("--faults", type=Path, default=Path(__file__).with_name("faults-all.yaml"))
    p.add_argument("--seed", type=int, default=0, help="fault and sample seed")
    p.add_argument("--policy", default="dkl", choices=["dkl", "random"])
    p.add_argument("--timeout-s", type=float, default=0.5, help="client deadline (the plan delays 1 s)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()

    plan = load_fault_plan(args.faults)
    instrument, hooks = apply_faults(PlasmonicSimulator(seed=args.seed, **SIM), plan, seed=args.seed)
    server = InstrumentServer(instrument, ServerConfig(bind="tcp://127.0.0.1:*"), hooks)
    server.start()
    t0 = time.perf_counter()
    try:
        cfg = campaign_config(server.address, args.steps, args.policy, args.timeout_s)
        with tempfile.TemporaryDirectory() as tmp, load_instrument("zmq", cfg.instrument.options) as client:
            _, result = run_experiment(cfg, client, Path(tmp) / "run", seed=args.seed, progress=False)
    finally:
        server.stop()
    executed = [e["command_id"] for e in server.executed.entries]
    audit = audit_campaign(executed, result.steps, cfg.budget)
    report = {
        "budget": cfg.budget,
        "policy": args.policy,
        "fault_plan": plan.model_dump(),
        "injected": {**hooks.injected, **instrument.injected},
        "audit": asdict(audit),
        "executed_commands": len(executed),
        "ok_steps": len(result.ok_steps),
        "wall_s": time.perf_counter() - t0,
        "clean": audit.clean and audit.steps == cfg.budget,
    }
    print(json.dumps(report, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if report["clean"] else 1


if __name__ == "__main__":
    sys.exit(main())
