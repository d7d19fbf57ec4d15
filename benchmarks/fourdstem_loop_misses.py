"""Why the 4D-STEM loop finds the true top 1 % on some samples and not others: the shape of the
target over the candidates, what the survey's coarse DPC says about it, and how close a recorded
run came.

Per seed of ``configs/fourdstem-dkl.yaml`` (or ``--config``), from the twin's noiseless truth
(``truth`` of the config's target at every candidate):

- ``top``: the number of true top ``ceil(1 % x M)`` candidates (the benchmark's discovery set;
  ``top_indices``, their candidate indices, best first) and the value
  of the last of them (``threshold``) against the largest (``max``) and the median;
- ``near``: how many candidates come within 5 % of the threshold (the plateau the top stands on),
  and the relative gap from the threshold to the 12th value;
- ``survey``: Spearman correlation of the survey's |DPC| at each candidate (the config's
  ``com_x``, ``com_y`` channels, coarse) with the truth, and the ranks of the top set by it (1 =
  the largest |DPC|);
- with ``--sessions``: the best true value among a run's measured candidates, as a fraction of the
  max and as a rank (1 = the best candidate), how many of the top set it measured, and the median
  survey |DPC| rank of the candidates its policy chose (after the initial random ones) and how
  many of them lie within 4 nm of a top-set candidate (``chosen_near_top``).

Usage:
    python benchmarks/fourdstem_loop_misses.py --seeds 0-7 --sessions runs/fourdstem-seed{seed}
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from aexp.config import load_config
from aexp.instrument import load_instrument
from aexp.patches import make_candidates


def seed_list(text: str) -> list[int]:
    """``"0-7"`` or ``"3,4,6"`` -> the seeds."""
    if "-" in text:
        first, last = (int(v) for v in text.split("-"))
        return list(range(first, last + 1))
    return [int(v) for v in text.split(",")]


def misses(config: Path, seed: int, session: Path | None, near_m: float = 4e-9) -> dict[str, object]:
    """The figures of the module docstring for one seed (``session``: a run's folder, or None;
    ``near_m``: the distance from a top-set candidate that counts as near it, m)."""
    cfg = load_config(config)
    sim = load_instrument(cfg.instrument.driver, cfg.instrument.options, seed=seed)
    survey = sim.survey()
    candidates = make_candidates(survey, cfg.candidates)
    truth = np.asarray(sim.truth(candidates.positions, cfg.target.build()), dtype=float)
    order = np.argsort(-truth, kind="stable")
    k = max(1, math.ceil(0.01 * len(truth)))
    top, ranked = order[:k], truth[order]
    channels = list(survey.channels)
    rc = np.rint(sim.transform.to_pixel(candidates.positions)).astype(int)
    dpc = np.hypot(*(survey.image[channels.index(c)][rc[:, 0], rc[:, 1]] for c in ("com_x", "com_y")))
    survey_rank = np.argsort(np.argsort(-dpc, kind="stable"), kind="stable")
    out: dict[str, object] = {
        "seed": seed, "top": k, "top_indices": [int(i) for i in top], "max": ranked[0], "threshold": ranked[k - 1], "median": float(np.median(truth)),
        "near": int((truth >= 0.95 * ranked[k - 1]).sum()),
        "gap_to_12th": float((ranked[k - 1] - ranked[min(11, len(ranked) - 1)]) / ranked[k - 1]),
        "survey_spearman": float(spearmanr(dpc, truth)[0]),
        "survey_ranks_of_top": sorted(int(r) + 1 for r in survey_rank[top]),  # 1: the largest |DPC|
    }
    if session is not None:
        steps = [json.loads(line) for line in (session / "steps.jsonl").read_text().splitlines() if line.strip()]
        visited = np.array([s["index"] for s in steps if s.get("status") == "ok"], dtype=int)
        best = truth[visited].max()
        chosen = np.array([s["index"] for s in steps if s.get("status") == "ok" and s.get("phase") == "policy"], dtype=int)
        out |= {"best_visited_of_max": float(best / ranked[0]), "best_visited_rank": int((truth > best).sum()) + 1,
                "found": len(set(visited.tolist()) & set(top.tolist())),
                "chosen_survey_rank_median": float(np.median(survey_rank[chosen] + 1)) if len(chosen) else None,
                "chosen_near_top": int(sum(
                    np.min(np.linalg.norm(candidates.positions[top] - candidates.positions[i], axis=1)) <= near_m * (1 + 1e-6)  # grid steps land on it up to rounding
                    for i in chosen))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=Path("configs/fourdstem-dkl.yaml"))
    ap.add_argument("--seeds", default="0-7")
    ap.add_argument("--sessions", default=None, help="folder of each seed's run, with {seed} in it")
    args = ap.parse_args()
    for seed in seed_list(args.seeds):
        folder = Path(args.sessions.format(seed=seed)) if args.sessions else None
        row = misses(args.config, seed, folder if folder is not None and folder.exists() else None)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}))


if __name__ == "__main__":
    main()
