"""How far could better features take the loop? The config's policy run on the hidden physics.

For each seed the script builds the config's instrument and candidates and runs the config's
surrogate policy (``policy.kind``, its acquisition and surrogate settings, budget and initial
points, exactly as ``aexp bench`` does) on feature sets read from the simulator's hidden truth
(``hidden_features(positions)``, a dict of named columns) instead of an embedding:

- ``physics``: every hidden feature the simulator names. For the plasmonic twin: the distance to
  the nearest particle outline and that particle's size and shape. For the ferroelectric twin:
  the distance to the nearest wall, its curvature, the defect density and the polarisation. For
  the lattice: the missing chalcogen and the dopant neighbours and the dilatation of the columns
  the beam excites.
- any one hidden feature by its name (``outline_distance_m``, ``defect``, ...), alone.

Each gets the position columns when the config's ``surrogate.position`` is set. ``gp-xy`` and the
config's own embedding (``embedding``; the ``dkl-rvae`` of ``aexp bench``) run on the same seeds
for comparison. Discovery is ``aexp bench``'s: the fraction of the true top 1 % measured within the
budget. No learned feature set can say more than the physics, so ``physics`` is an upper reference
for the embedding, and the gap between them is what a better embedding could win::

    python benchmarks/physics_loop.py configs/plasmonic-dkl.yaml --seeds 52,53,54,55 \
        --runs physics,outline_distance_m,embedding,gp-xy --json physics.json

Prints one JSON line per seed and the means; ``--json`` writes them all.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from aexp.bench import run_policy, top_indices
from aexp.config import load_config
from aexp.features import resolve_device, standardise, surrogate_inputs, with_position
from aexp.instrument import load_instrument
from aexp.patches import make_candidates

RUNS = ("physics", "embedding", "gp-xy")  # the default; any hidden feature's name runs it alone


def check_runs(runs: tuple[str, ...], hidden: dict[str, np.ndarray]) -> None:
    """Every run is ``physics``, ``embedding``, ``gp-xy`` or one of the simulator's hidden features."""
    unknown = [r for r in runs if r not in (*RUNS, *hidden)]
    if unknown:
        raise SystemExit(f"--runs: unknown {unknown}; known: {', '.join(RUNS)}, or a hidden feature of "
                         f"this simulator: {', '.join(hidden)}")


def physics_features(hidden: dict[str, np.ndarray], candidates, name: str, position: bool) -> np.ndarray:
    """The hidden feature ``name`` (every one for ``physics``), standardised, with the candidates'
    (x, y) when ``position``."""
    names = list(hidden) if name == "physics" else [name]
    feats = standardise(np.stack([hidden[n] for n in names], axis=1).astype(float))
    return with_position(feats, candidates) if position else feats


def run_seed(cfg, seed: int, runs: tuple[str, ...]) -> dict:
    """Discovery of each run on one seed."""
    inst = load_instrument(cfg.instrument.driver, cfg.instrument.options, seed=seed)
    if not hasattr(inst, "hidden_features"):
        raise SystemExit(f"instrument {cfg.instrument.driver!r} has no hidden_features()")
    candidates = make_candidates(inst.survey(), cfg.candidates)
    truth = inst.truth(candidates.positions, cfg.target.build())
    top = set(top_indices(truth, 0.01).tolist())
    hidden = inst.hidden_features(candidates.positions)
    check_runs(runs, hidden)  # before any run, not after the first ones
    device = resolve_device(cfg.device)
    row: dict = {"seed": seed, "n_candidates": len(candidates), "budget": cfg.budget}
    for name in runs:
        kind = cfg.policy.kind
        if name == "embedding":
            feats, _ = surrogate_inputs(candidates, cfg, seed, device, progress=False)
        elif name == "gp-xy":  # ignores the features
            feats, kind = np.zeros((len(candidates), 0)), "gp-xy"
        else:
            feats = physics_features(hidden, candidates, name, cfg.surrogate.position)
        features = torch.as_tensor(feats, dtype=torch.float64, device=device)
        run = run_policy(cfg, seed, candidates, features, kind, device)
        row[name] = len(top & {s.index for s in run.steps}) / len(top)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--seeds", default="52")
    ap.add_argument("--runs", default=",".join(RUNS),
                    help="comma-separated: physics, embedding, gp-xy, or a hidden feature's name")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args()
    runs = tuple(r.strip() for r in args.runs.split(",") if r.strip())
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    if cfg.policy.kind != "dkl":
        raise SystemExit(f"policy.kind is {cfg.policy.kind!r}: the features only matter to policy kind dkl")
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        rows.append(run_seed(cfg, seed, runs))
        print(json.dumps(rows[-1]), flush=True)
    means = {name: float(np.mean([r[name] for r in rows])) for name in runs}
    print("mean over seeds: " + ", ".join(f"{n} {m:.3f}" for n, m in means.items()))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"config": args.config, "rows": rows, "means": means}, fh, indent=1)


if __name__ == "__main__":
    main()
