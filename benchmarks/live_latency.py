"""The live page: how soon a recorded step is on the page, and what watching costs the loop.

Runs the same experiment (config, seed) three times in this process:

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
import tempfile
import threading
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


def one_run(cfg, seed: int, folder: Path, mode: str) -> dict:
    written: dict[int, float] = {}
    inst = load_instrument(cfg.instrument.driver, cfg.instrument.options, seed=seed)
    server = browser = pw = None
    shown: list = []
    if mode != "off":
        server = LiveServer(folder).start()
    if mode == "watched":
        from playwright.sync_api import sync_playwright

        pw = sync_playwright().start()
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page()
        page.goto(server.url)
    done = threading.Event()
    out: dict = {}

    def work() -> None:
        try:
            out["result"] = run_experiment(
                cfg, inst, folder, seed=seed, progress=False, overwrite=True,
                on_step=lambda step, budget: written.__setitem__(step.step, time.time()),
                operator=OperatorOptions(live=mode != "off"))[1]
        finally:
            done.set()

    thread = threading.Thread(target=work)
    thread.start()
    if mode == "watched":
        while not done.is_set():  # playwright's sync API lives on this thread: let it run its loop
            page.wait_for_timeout(100)
        page.wait_for_function(f"(window.aexpShown || []).some(s => s[0] >= {len(written)})", timeout=10_000)
        shown = page.evaluate("window.aexpShown")
        browser.close()
        pw.stop()
    thread.join()
    if server is not None:
        server.stop()
    steps = out["result"].steps
    decision = [s.timings["decision_s"] for s in steps if s.phase == "policy"]
    row = {"mode": mode, "steps": len(steps), "decision_s_median": float(np.median(decision)),
           "decision_s_mean": float(np.mean(decision))}
    if shown:
        first = {}
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
    args = p.parse_args()
    cfg = load_config(args.config) if args.config else parse_config(TINY)
    cfg = cfg.with_overrides(**{"stopping.max_steps": args.steps, "recording.figure": False})
    rows = []
    modes = ("off", "live", "watched")
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):  # interleaved, so a slow spell of a shared machine hits every mode
            for mode in modes:
                rows.append(one_run(cfg, args.seed, Path(tmp) / mode, mode))
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
