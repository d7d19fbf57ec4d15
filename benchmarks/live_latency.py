"""The live page: how soon a recorded step is on the page, and what watching costs the loop.

Runs the same experiment (config, seed) three times, each in a child process of its own as
``aexp run`` would (its page's server, when there is one, in a child of that):

- ``off``: no page (the operator channel only, as every run has);
- ``live``: ``--live`` (the policy returns its maps with every decision, ``live.json`` and
  ``maps.npz`` are written), no browser;
- ``watched``: ``--live`` with the page open in Debian's chromium (headless, driven by Playwright).

Latency: each step's time once it is durable (the campaign's ``on_step``, called right after the
record is fsynced) to the time the page has drawn it (the page pushes ``[steps, Date.now()]`` after
each render; both clocks are this machine's). Decision time: the recorded ``decision_s`` of the
policy steps (median).

Usage:
    OMP_NUM_THREADS=1 python benchmarks/live_latency.py [--config configs/plasmonic-dkl.yaml] [--steps 40]
        [--seed 0] [--json live.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from aexp.config import load_config, parse_config
from aexp.instrument import load_instrument
from aexp.live.app import LiveServer
from aexp.live.channel import OperatorOptions
from aexp.loop import run_experiment

CHROMIUM = "/usr/bin/chromium"
TINY = {
    "instrument": {"driver": "plasmonic", "options": {"survey_pixels": 64, "n_particles": 4}},
    "candidates": {"stride": 2, "patch_size": 8}, "embedder": "none",
    "surrogate": {"iterations": 30, "warm_iterations": 10},
    "policy": {"kind": "dkl", "n_initial": 5}, "target": {"name": "band_intensity", "window": [1.0, 3.0]},
    "recording": {"figure": False},
}


def run_loop(cfg, seed: int, folder: Path, mode: str, times: Path) -> None:
    """The experiment, in its own process as ``aexp run`` runs it (``--live`` unless ``mode`` is ``off``).

    Prints the page's URL first when there is one; writes ``{"written": {step: time}, "decision": [...]}``
    to ``times`` at the end."""
    written: dict[int, float] = {}
    inst = load_instrument(cfg.instrument.driver, cfg.instrument.options, seed=seed)
    server = LiveServer(folder).start() if mode != "off" else None
    print(server.url if server else "no page", flush=True)
    sys.stdin.readline()  # the driver has the page open (watched): go
    try:
        result = run_experiment(cfg, inst, folder, seed=seed, progress=False, overwrite=True,
                                on_step=lambda step, budget: written.__setitem__(step.step, time.time()),
                                operator=OperatorOptions(live=mode != "off"))[1]
    finally:
        if server is not None:
            server.stop()
    decision = [s.timings["decision_s"] for s in result.steps if s.phase == "policy"]
    times.write_text(json.dumps({"written": written, "decision": decision, "steps": len(result.steps)}))


def one_run(args: argparse.Namespace, folder: Path, mode: str) -> dict:
    """One run of ``mode``: the loop in a child process; for ``watched``, chromium on its page.

    The loop never shares a process with the page's server (``run --live`` serves it from a child) or
    with the browser's driver: playwright's event loop in the loop's process would take its GIL, which a
    real browser never does."""
    times = folder.with_suffix(".times.json")
    child = subprocess.Popen(
        [sys.executable, __file__, "--child", mode, "--out", str(folder), "--times", str(times), "--steps",
         str(args.steps), "--seed", str(args.seed)] + (["--config", str(args.config)] if args.config else []),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    url = child.stdout.readline().strip()
    shown: list = []

    def go() -> None:
        child.stdin.write("go\n")
        child.stdin.close()

    if mode != "watched":
        go()
    else:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"])
            page = browser.new_page()
            page.goto(url)
            go()
            while child.poll() is None:
                page.wait_for_timeout(100)
            done = json.loads(times.read_text())
            page.wait_for_function(f"(window.aexpShown || []).some(s => s[0] >= {done['steps']})", timeout=10_000)
            shown = page.evaluate("window.aexpShown")
            browser.close()
    if child.wait() != 0:
        raise SystemExit(f"the {mode} run failed")
    done = json.loads(times.read_text())
    written = {int(k): v for k, v in done["written"].items()}
    row = {"mode": mode, "steps": done["steps"], "decision_s_median": float(np.median(done["decision"])),
           "decision_s_mean": float(np.mean(done["decision"]))}
    if shown:
        first: dict[int, float] = {}
        for n, t_ms in shown:
            for k in range(n):
                first.setdefault(k, t_ms / 1000.0)
        lat = [first[k] - written[k] for k in written if k in first]
        row.update(latency_s_median=float(np.median(lat)), latency_s_p95=float(np.percentile(lat, 95)),
                   latency_s_max=float(np.max(lat)), latency_n=len(lat))
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=None, help="default: a 64 x 64 px plasmonic twin, DKL")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=1, help="rounds of the three modes, interleaved")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--child", choices=("off", "live", "watched"), help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--times", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        cfg = load_config(args.config) if args.config else parse_config(TINY)
        cfg = cfg.with_overrides(**{"stopping.max_steps": args.steps, "recording.figure": False})
        run_loop(cfg, args.seed, args.out, args.child, args.times)
        return
    rows = []
    modes = ("off", "live", "watched")
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):  # interleaved, so a slow spell of a shared machine hits every mode
            for mode in modes:
                rows.append(one_run(args, Path(tmp) / mode, mode))
                print(json.dumps(rows[-1]), flush=True)
    med = {m: float(np.median([r["decision_s_median"] for r in rows if r["mode"] == m])) for m in modes}
    watched = [r for r in rows if r["mode"] == "watched"]
    summary = {"rows": rows, "decision_s_median": med,
               "decision_overhead_live": med["live"] / med["off"] - 1,
               "decision_overhead_watched": med["watched"] / med["off"] - 1,
               "page_open_vs_live": med["watched"] / med["live"] - 1,
               "latency_s_median": float(np.median([r["latency_s_median"] for r in watched])),
               "latency_s_max": float(np.max([r["latency_s_max"] for r in watched]))}
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
