"""``aexp run`` through server kills and a long outage, then ``aexp resume``: exactly once, nothing lost.

An ``aexp serve`` process (the plasmonic twin, replies held back ``--hold-s`` by a fault plan, the
executed-command log on by default) serves an ``aexp run`` over the ``zmq`` driver. While the run
goes on, the server is SIGKILLed ``--kills`` times just after it executed a command (its reply not
yet sent) and restarted at once on the same address; then it is killed once more and stays down
``--outage-s`` (longer than the config's ``instrument.max_outage_s``). The run must stop as
``interrupted`` (exit status 3, every completed step on disk); once the server is back,
``aexp resume`` must finish the budget and ``aexp replay --verify`` must pass.

Reports the run's exit status and summary, the steps before and after the resume, failed steps, and
the executions per command id in the server's log (duplicates: target 0).

    OMP_NUM_THREADS=1 python benchmarks/outage_campaign.py --kills 3 --outage-s 120
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

import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``aexp serve`` on one address and one state folder, started and killed in turn."""

    def __init__(self, address: str, state: Path, faults: Path) -> None:
        self.cmd = [sys.executable, "-m", "aexp", "serve", "--sim", "plasmonic", "--bind", address,
                    "-o", "survey_pixels=64", "-o", "n_particles=2", "--state-dir", str(state), "--faults", str(faults)]
        self.state, self.proc, self.starts = state, None, 0

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().startswith("serving on")
        self.starts += 1

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def executions(self) -> collections.Counter:
        ids: collections.Counter = collections.Counter()
        for path in self.state.glob("executed-*.jsonl"):
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if "outcome" in entry:
                    ids[entry["command_id"]] += 1
        return ids


def steps_on_disk(folder: Path) -> int:
    path = folder / "steps.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--outage-s", type=float, default=120.0)
    parser.add_argument("--max-outage-s", type=float, default=60.0)
    parser.add_argument("--hold-s", type=float, default=0.4)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="aexp-outage-"))
    faults = work / "hold.yaml"
    faults.write_text(f"methods: [measure]\ndelay: {{probability: 1.0, seconds: {args.hold_s}}}\n")
    address = f"tcp://127.0.0.1:{free_port()}"
    server = Server(address, work / "state", faults)
    server.start()
    config = work / "outage.yaml"
    config.write_text(yaml.safe_dump({
        "name": "outage-campaign",
        "instrument": {"driver": "zmq", "max_outage_s": args.max_outage_s,
                       "options": {"address": address, "timeout_s": 1.0, "retries": 3}},
        "candidates": {"stride": 2, "patch_size": 8},
        "embedder": "none",
        "policy": {"kind": "gp-xy", "n_initial": 4},
        "target": {"name": "band_intensity", "window": [1.0, 3.0]},
        "stopping": {"max_steps": args.steps},
        "recording": {"figure": False},
    }))
    folder = work / "session"
    budget = args.steps + 4
    kill_after = [int(budget * (k + 1) / (args.kills + 2)) for k in range(args.kills)]
    outage_after = int(budget * (args.kills + 1) / (args.kills + 2))

    def saboteur() -> None:
        for n in kill_after:  # right after a command executed: its reply is held back
            while steps_on_disk(folder) < n:
                time.sleep(0.01)
            before = sum(server.executions().values())
            while sum(server.executions().values()) == before:
                time.sleep(0.005)
            server.kill()
            server.start()
        while steps_on_disk(folder) < outage_after:
            time.sleep(0.01)
        server.kill()
        time.sleep(args.outage_s)
        server.start()

    t0 = time.perf_counter()
    thread = threading.Thread(target=saboteur, daemon=True)
    thread.start()
    run = subprocess.run([sys.executable, "-m", "aexp", "run", str(config), "--out", str(folder), "--quiet"],
                         capture_output=True, text=True)
    interrupted_after = steps_on_disk(folder)
    summary = json.loads((folder / "summary.json").read_text())
    thread.join()
    resumed = subprocess.run([sys.executable, "-m", "aexp", "resume", str(folder), "--quiet"],
                             capture_output=True, text=True)
    verified = subprocess.run([sys.executable, "-m", "aexp", "replay", str(folder), "--verify", "--quiet"],
                              capture_output=True, text=True)
    server.kill()
    steps = [json.loads(line) for line in (folder / "steps.jsonl").read_text().splitlines()]
    executions = server.executions()
    print(json.dumps({
        "budget": budget,
        "run_exit_status": run.returncode, "run_message": run.stderr.strip().splitlines()[-1:],
        "summary_status": summary.get("status"), "summary_reason": summary.get("reason"),
        "steps_when_interrupted": interrupted_after,
        "resume_exit_status": resumed.returncode, "steps_after_resume": len(steps),
        "failed_steps": sum(s["status"] != "ok" for s in steps),
        "verify": verified.stdout.strip() or verified.stderr.strip(),
        "server_starts": server.starts, "executed_commands": len(executions),
        "duplicate_executions": sum(n - 1 for n in executions.values() if n > 1),
        "seconds": round(time.perf_counter() - t0, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
