"""How much do the surrogate's candidate features say about the target, apart from the surrogate?

For each seed the script builds the config's instrument and candidates, computes the hidden
truth, and scores several feature sets with one fixed, model-free learner: 5-fold k-nearest-
neighbour regression (k = 5) on standardised features. All candidates are ranked by their
out-of-fold prediction; the score is the fraction of the true top 1 % found among the first
``budget`` of that ranking (the config's budget), the same measure as ``aexp bench``'s discovery.

Feature sets: ``xy`` (positions only), ``raw`` (the flattened patch) and the config's embedder
with the overrides given by ``--variant NAME=key:value,key:value`` (embedder keys), e.g.::

    python benchmarks/feature_probe.py configs/lattice-dkl.yaml --seeds 10 \\
        --variant rvae= --variant clip1=clip_percentile:1

``--folds blocks`` deals whole squares of the field (4 x 4) to the folds instead of single
candidates: the learner must then predict regions it has not seen, which is what a search with a
few dozen measurements asks of its features; random folds reward mere smoothness in space.

``--oracle`` adds the simulator's hidden physics (``hidden_features``) as a feature set: for the
plasmonic twin the size and shape of the nearest particle and the distance to its outline, for the
ferroelectric film the wall distance and curvature, the defect density and the polarisation, for
the lattice the missing and dopant neighbours and the dilatation (an upper reference for what a
feature set could say).

Prints one JSON line per seed and, with ``--json``, writes them all. The spread of each latent
column (before standardising) is reported too: a collapsed embedder shows spreads near 0.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import yaml

from aexp.bench import top_indices
from aexp.config import load_config
from aexp.features import embed_candidates, standardise
from aexp.instrument import load_instrument
from aexp.patches import make_candidates


def block_folds(positions: np.ndarray, blocks: int = 4, seed: int = 0) -> np.ndarray:
    """Fold (0-4) of each candidate: the field cut into ``blocks x blocks`` squares, whole squares
    dealt to folds at random, so a candidate's neighbours are mostly in its own fold."""
    lo, hi = positions.min(axis=0), positions.max(axis=0)
    cell = np.minimum(((positions - lo) / np.where(hi > lo, hi - lo, 1.0) * blocks).astype(int), blocks - 1)
    square = cell[:, 0] * blocks + cell[:, 1]
    return np.random.default_rng(seed).integers(0, 5, blocks * blocks)[square]


def knn_recall(features: np.ndarray, truth: np.ndarray, budget: int, k: int = 5, seed: int = 0,
               fold: np.ndarray | None = None) -> float:
    """Fraction of the top 1 % of ``truth`` among the ``budget`` best out-of-fold kNN predictions
    (folds at random, or as given)."""
    n = len(features)
    fold = np.random.default_rng(seed).integers(0, 5, n) if fold is None else fold
    predicted = np.empty(n)
    for f in range(5):
        train, test = fold != f, fold == f
        a, b = features[test], features[train]
        d = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * a @ b.T  # squared distances
        nearest = np.argsort(d, axis=1)[:, :k]
        predicted[test] = truth[train][nearest].mean(1)
    top = set(top_indices(truth, 0.01).tolist())
    return len(top & set(np.argsort(-predicted)[:budget].tolist())) / len(top)


def physics_oracle(inst, positions: np.ndarray) -> np.ndarray:
    """The simulator's hidden features at the positions, standardised (for the plasmonic twin: the
    size and shape of the particle nearest each position and the distance to its outline)."""
    return standardise(np.stack(list(inst.hidden_features(positions).values()), axis=1).astype(float))


def parse_variant(text: str) -> tuple[str, dict]:
    """``NAME=key:value,key:value`` -> (NAME, {key: value}); values are read as YAML scalars."""
    name, _, rest = text.partition("=")
    updates = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition(":")
        if not sep:
            raise SystemExit(f"--variant {text!r}: expected key:value pairs after '=', got {item!r}")
        updates[key.strip()] = yaml.safe_load(value)
    return name.strip(), updates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--seeds", default="10")
    ap.add_argument("--variant", action="append", default=[], help="NAME=key:value,... (embedder keys)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--oracle", action="store_true", help="score the simulator's hidden physics too")
    ap.add_argument("--folds", choices=("random", "blocks"), default="random")
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    target = cfg.target.build()
    variants = [parse_variant(v) for v in args.variant] or [("embedder", {})]
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        inst = load_instrument(cfg.instrument.driver, cfg.instrument.options, seed=seed)
        candidates = make_candidates(inst.survey(), cfg.candidates)
        truth = np.asarray(inst.truth(candidates.positions, target), dtype=float)
        truth = np.where(np.isfinite(truth), truth, np.nanmin(truth))
        patches = candidates.patches
        fold = block_folds(candidates.positions) if args.folds == "blocks" else None

        def score(features: np.ndarray, truth: np.ndarray = truth, fold: np.ndarray | None = fold) -> float:
            return knn_recall(features, truth, cfg.budget, fold=fold)

        row = {
            "seed": seed,
            "n_candidates": len(candidates),
            "budget": cfg.budget,
            "xy": score(standardise(candidates.positions)),
            "raw": score(standardise(patches.reshape(len(patches), -1))),
        }
        if args.oracle:
            row["oracle"] = score(physics_oracle(inst, candidates.positions))
        for name, updates in variants:
            emb = cfg.embedder.model_validate({**cfg.embedder.model_dump(), **updates})
            feats, info = embed_candidates(candidates, emb, seed, progress=False)
            row[name] = score(feats)
            row[name + "_spread"] = [round(float(s), 3) for s in info["latent_spread"]]
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"config": args.config, "rows": rows}, fh, indent=1)
    names = ["xy", "raw"] + [n for n, _ in variants]
    print("mean over seeds: " + ", ".join(f"{n} {np.mean([r[n] for r in rows]):.3f}" for n in names))


if __name__ == "__main__":
    main()
