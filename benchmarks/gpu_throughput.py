"""Embedder training throughput and decision time, CPU against GPU, in the same run.

Runs the same benchmark cell (config, seed, ``dkl-rvae`` by default) once with ``device: cpu`` and
once with ``device: cuda`` in this process (after a short warm-up cell on each device, so CUDA's
start-up and the imports are not counted) and reports, per device:

- training throughput: candidates x epochs / seconds to build the embedding (the rVAE's training
  and the encoding of every candidate: the cell's ``prepare_s``);
- decision time: the median over the policy's steps of the seconds from a measurement to the next
  choice (DKL fit + scoring every candidate);
- the cell's wall time and its discovery (CPU and GPU need not choose identically: float
  reductions differ between devices).

Without a GPU it runs the CPU half and says so. The cell runs with one torch thread, as every
campaign cell does (the GPU's kernels are not bound by it).

    python benchmarks/gpu_throughput.py configs/plasmonic-dkl.yaml --steps 20 --epochs 5 --json gpu.json
"""

from __future__ import annotations

import argparse
import json

import torch

from aexp.bench.cells import Cell, _cache, run_cell
from aexp.config import load_config


def _cell(cfg, device: str, seed: int, policy: str) -> dict:
    _cache.clear()  # build the embedding from scratch on this device
    return run_cell(Cell(cfg.with_overrides(device=device).to_dict(), seed, policy))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--policy", default="dkl-rvae")
    p.add_argument("--steps", type=int, default=20, help="policy steps after the initial points")
    p.add_argument("--epochs", type=int, default=None, help="override embedder.epochs")
    p.add_argument("--json", default=None)
    args = p.parse_args()

    cfg = load_config(args.config).with_overrides(**{"stopping.max_steps": args.steps})
    if args.epochs is not None:
        cfg = cfg.with_overrides(**{"embedder.epochs": args.epochs})
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    warm = cfg.with_overrides(**{"stopping.max_steps": 2, "embedder.epochs": 1})
    out: dict = {"config": args.config, "policy": args.policy, "seed": args.seed, "steps": args.steps,
                 "epochs": cfg.embedder.epochs, "gpu": torch.cuda.get_device_name(0) if "cuda" in devices else None,
                 "torch": torch.__version__, "devices": {}}
    for device in devices:
        _cell(warm, device, args.seed, args.policy)
        rec = _cell(cfg, device, args.seed, args.policy)
        if rec["status"] != "ok":
            raise SystemExit(f"{device}: the cell failed: {rec['error']}")
        out["devices"][device] = {
            "prepare_s": round(rec["prepare_s"], 3),
            "training_candidates_per_s": round(rec["n_candidates"] * cfg.embedder.epochs / rec["prepare_s"], 1),
            "decision_median_s": round(rec["decision_s"], 4),
            "wall_s": round(rec["wall_s"], 2),
            "discovery": rec["discovery"],
            "n_candidates": rec["n_candidates"],
        }
    if "cuda" in out["devices"]:
        c, g = out["devices"]["cpu"], out["devices"]["cuda"]
        out["gpu_speedup"] = {"training": round(g["training_candidates_per_s"] / c["training_candidates_per_s"], 2),
                              "decision": round(c["decision_median_s"] / g["decision_median_s"], 2),
                              "wall": round(c["wall_s"] / g["wall_s"], 2)}
    else:
        out["note"] = "torch sees no CUDA GPU: CPU only"
    print(json.dumps(out, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
