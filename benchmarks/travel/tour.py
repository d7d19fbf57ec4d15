"""A batch's visiting order: the short tour (nearest neighbour + 2-opt, exact up to 7 points) against
the order the policy chose the batch in, paired by seed, no travel cost.

Each seed runs the config with ``policy.batch`` points per decision twice: as the campaign does
(every batch visited in :func:`aexp.campaign.short_tour` order from the probe's position) and with
the tour replaced by the identity (the greedy order of the joint choice). Prints the travel and the
discovery of both.

    OMP_NUM_THREADS=1 python benchmarks/travel/tour.py --seeds 0-9 --batch 4 --steps 60
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from unittest import mock

import numpy as np
import torch

from aexp.bench import BENCH_POLICIES, run_policy, top_indices
from aexp.config import load_config, with_kind
from aexp.features import surrogate_inputs
from aexp.instrument import load_instrument
from aexp.patches import make_candidates
from aexp.session.truth import require_ground_truth


def _seeds(text: str) -> list[int]:
    a, _, b = text.partition("-")
    return list(range(int(a), int(b or a) + 1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="benchmarks/travel/plasmonic-async-sim.yaml")
    p.add_argument("--policy", default="dkl-patch")
    p.add_argument("--seeds", default="0-9")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--top-fraction", type=float, default=0.01, help="discovery of the true top fraction (bench's)")
    args = p.parse_args()
    cfg = load_config(args.config).with_overrides(**{"policy.batch": args.batch, "policy.pending": False,
                                                     "stopping.max_steps": args.steps})
    entry = BENCH_POLICIES[args.policy]
    target = cfg.target.build()
    rows = []
    print("seed  travel um (tour)  travel um (as chosen)  discovery (tour)  discovery (as chosen)", flush=True)
    for seed in _seeds(args.seeds):
        probe = load_instrument(cfg.instrument.driver, cfg.instrument.options, seed=seed)
        candidates = make_candidates(probe.survey(), cfg.candidates)
        truth = require_ground_truth(probe, cfg.instrument.driver).truth(candidates.positions, target)
        top = set(top_indices(np.asarray(truth), args.top_fraction).tolist())
        feats, info = surrogate_inputs(candidates, cfg, seed, "cpu", False,
                                       embedder=with_kind(cfg.embedder, entry.embedder))
        features = torch.as_tensor(feats, dtype=torch.float64)
        row = []
        for tour in (True, False):
            identity = mock.patch("aexp.campaign.short_tour", lambda start, pts: list(range(len(pts))))
            with nullcontext() if tour else identity:
                run = run_policy(cfg, seed, candidates, features, entry.kind, "cpu", columns=info)
            row += [run.extra["travel_m"], len(top & {s.index for s in run.steps}) / len(top)]
        rows.append(row)
        print(f"{seed:>4} {row[0] * 1e6:>17.3f} {row[2] * 1e6:>22.3f} {row[1]:>17.3f} {row[3]:>21.3f}", flush=True)
    m = np.mean(rows, axis=0)
    print(f"mean {m[0] * 1e6:>17.3f} {m[2] * 1e6:>22.3f} {m[1]:>17.3f} {m[3]:>21.3f}")
    print(f"{len(rows)} seeds, batch {args.batch}: the tour changes travel by {100 * (m[0] / m[2] - 1):+.0f} % "
          f"(shorter on {sum(r[0] < r[2] for r in rows)} of {len(rows)} seeds)")


if __name__ == "__main__":
    main()
