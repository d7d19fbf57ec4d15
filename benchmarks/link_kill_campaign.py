"""Exactly once through server kills and an outage: a campaign of measurements through the ``zmq``
driver against `aexp serve` processes that are SIGKILLed and restarted.

Every reply to ``measure`` is held back ``--hold-s`` by a fault plan, and each kill lands in that
window: the command has executed (its outcome is in the executed-command log, on by default) and
its reply has not left. The restarted server (same address, same default log under
``--state-dir``) must answer the client's re-sent command from the log. Then the server stays
down ``--outage-s``: the driver raises ``InstrumentUnreachable`` (not ``MeasurementFailed``), the
campaign keeps the command (same id) and sends it again once the server is back, as a resumed run
would.

Reports executions per command id from the executed-command log (duplicates: target 0), the
measurements completed against the budget, how many calls ended in ``InstrumentUnreachable`` and
how long the outage lasted.

    OMP_NUM_THREADS=1 python -m benchmarks.link_kill_campaign --budget 60 --kills 3 --outage-s 120
"""

from __future__ import annotations

import argparse
import collections
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from aexp.instrument import InstrumentUnreachable, MeasurementFailed
from drivers.zmq import ZmqInstrument

SIM = ["-o", "survey_pixels=64", "-o", "n_particles=2"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Servers:
    """`aexp serve` processes on one address and one state folder, started and killed in turn."""

    def __init__(self, address: str, state: Path, faults: Path) -> None:
        self.cmd = [sys.executable, "-m", "aexp", "serve", "--sim", "plasmonic", "--bind", address, *SIM,
                    "--state-dir", str(state), "--faults", str(faults)]
        self.state = state
        self.proc: subprocess.Popen[str] | None = None
        self.starts = 0

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().startswith("serving on")
        self.starts += 1

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # SIGKILL: no clean shutdown, no release, nothing flushed
            self.proc.wait()

    def log_lines(self) -> list[dict]:
        lines = []
        for path in self.state.glob("executed-*.jsonl"):
            for line in path.read_text().splitlines():
                try:
                    lines.append(json.loads(line))
                except ValueError:
                    pass
        return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=60)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--outage-s", type=float, default=120.0)
    parser.add_argument("--hold-s", type=float, default=0.4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory()
    faults = Path(tmp.name) / "hold.yaml"
    faults.write_text(f"methods: [measure]\ndelay: {{probability: 1.0, seconds: {args.hold_s}}}\n")
    address = f"tcp://127.0.0.1:{free_port()}"
    servers = Servers(address, Path(tmp.name) / "state", faults)
    servers.start()
    rng = np.random.default_rng(args.seed)
    kill_at = sorted(rng.choice(np.arange(5, args.budget - 10), size=args.kills, replace=False).tolist())
    outage_at = args.budget - 5
    inst = ZmqInstrument(address=address, timeout_s=1.0, measure_timeout_s=1.0 + args.hold_s, retries=4)
    bounds = inst.bounds
    positions = rng.uniform([bounds.xmin, bounds.ymin], [bounds.xmax, bounds.ymax], size=(args.budget, 2))
    done, unreachable, failed, outage_s = 0, 0, 0, 0.0
    down: float | None = None
    t0 = time.perf_counter()
    try:
        step = 0
        while step < args.budget:
            cid = f"campaign-{step}"
            if step in kill_at:  # kill while this command's reply is held back, then restart
                n_before = len(servers.log_lines())

                def kill_after_execution(n_before: int = n_before) -> None:
                    while len(servers.log_lines()) == n_before:
                        time.sleep(0.01)
                    servers.kill()
                    time.sleep(0.3)
                    servers.start()

                killer = threading.Thread(target=kill_after_execution)
                killer.start()
                kill_at.remove(step)
            else:
                killer = None
            if step == outage_at and down is None:
                servers.kill()
                down = time.perf_counter()
                threading.Timer(args.outage_s, servers.start).start()
            try:
                inst.measure(tuple(positions[step]), command_id=cid)
                done += 1
                step += 1
            except InstrumentUnreachable:
                unreachable += 1  # not a result: keep the command and send it again (a resumed run)
            except MeasurementFailed:
                failed += 1
                step += 1
            if down is not None and step > outage_at and outage_s == 0.0:
                outage_s = time.perf_counter() - down  # from the kill to the kept command's answer
            if killer is not None:
                killer.join()
    finally:
        inst.close()
        servers.kill()
    executions = collections.Counter(e["command_id"] for e in servers.log_lines() if "outcome" in e)
    print(json.dumps({
        "budget": args.budget, "measured": done, "failed": failed, "server_starts": servers.starts,
        "kills_between_execution_and_reply": args.kills, "outage_s": round(outage_s, 1),
        "calls_ending_unreachable": unreachable, "executed_commands": len(executions),
        "duplicate_executions": sum(n - 1 for n in executions.values() if n > 1),
        "seconds": round(time.perf_counter() - t0, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
