"""Atom finding on the lattice twin: precision and recall of ``find_atoms`` against the hidden truth.

A found atom is a true positive when a true column lies within ``--tolerance`` pixels of it (each
true column matched at most once, nearest first). Columns within 2 px of the image edge are left
out on both sides: an atom cut by the border has no full neighbourhood to refine in.

Usage:
    python benchmarks/atoms.py --seeds 0,1,2,3,4,5,6,7 [--dose 300] [--json atoms.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

from aexp.patches import find_atoms
from simulators.lattice import LatticeSimulator

BORDER_PX = 2.0


def score(found: np.ndarray, true: np.ndarray, shape: tuple[int, int], tolerance: float) -> dict[str, float]:
    """Precision, recall and the median/95th-percentile error (px) of one-to-one matches."""
    hi = np.array(shape) - 1 - BORDER_PX
    f = found[((found >= BORDER_PX) & (found <= hi)).all(1)]
    t = true[((true >= BORDER_PX) & (true <= hi)).all(1)]
    # one-to-one matching within the tolerance (a sparse assignment)
    pairs = cKDTree(f).sparse_distance_matrix(cKDTree(t), tolerance, output_type="coo_matrix")
    cost = np.full((len(f), len(t)), 1e6)
    cost[pairs.row, pairs.col] = pairs.data
    rows, cols = linear_sum_assignment(cost)
    ok = cost[rows, cols] <= tolerance
    err = cost[rows, cols][ok]
    return {
        "found": int(len(f)),
        "true": int(len(t)),
        "precision": float(ok.sum() / max(len(f), 1)),
        "recall": float(ok.sum() / max(len(t), 1)),
        "median_error_px": float(np.median(err)) if len(err) else float("nan"),
        "p95_error_px": float(np.percentile(err, 95)) if len(err) else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2,3,4,5,6,7")
    ap.add_argument("--dose", type=float, default=None, help="survey_dose (default: the twin's default)")
    ap.add_argument("--sigma", type=float, default=1.2, help="find_atoms sigma_px")
    ap.add_argument("--min-distance", type=int, default=3)
    ap.add_argument("--threshold", type=float, default=0.05)
    ap.add_argument("--tolerance", type=float, default=0.5, help="match radius (px)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    options = {} if args.dose is None else {"survey_dose": args.dose}
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        sim = LatticeSimulator(seed=seed, **options)
        image = sim.survey().image[0]
        t0 = time.perf_counter()
        found = find_atoms(image, sigma_px=args.sigma, min_distance_px=args.min_distance, threshold=args.threshold)
        elapsed = time.perf_counter() - t0
        true = sim.transform.to_pixel(sim.atoms().positions_m)
        row = {"seed": seed, **score(found, true, image.shape, args.tolerance), "find_s": elapsed}
        rows.append(row)
        print(f"seed {seed}: {row['found']} found / {row['true']} true  precision {row['precision']:.4f}  "
              f"recall {row['recall']:.4f}  error median {row['median_error_px']:.3f} px, "
              f"p95 {row['p95_error_px']:.3f} px")
    p = np.array([r["precision"] for r in rows])
    r = np.array([r["recall"] for r in rows])
    print(f"mean over {len(rows)} seeds: precision {p.mean():.4f} (min {p.min():.4f}), "
          f"recall {r.mean():.4f} (min {r.min():.4f}) within {args.tolerance} px")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "seeds": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
