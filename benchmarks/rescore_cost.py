"""What a pending decision's rescore costs, and where: the pass while the instrument measures, and
the part on the instrument's time when the outcome in flight arrives.

Two surrogates, each timed in the same process, alternating, median of ``--repeats``:

- an exact GP on positions (``gp-xy``, the GP stage) at ``--gp-candidates`` candidates: one scoring
  pass through gpytorch's posterior (the sequential loop's) against the one-pass direct route that
  also gives ``W = d mean / d y_k`` (a pending decision's);
- the recipe's mixture of exact GPs (``surrogate.kind: groups``, five members) at
  ``--mixture-candidates``: the same two passes, then, at arrival, rebuilding the mixture from its
  members' moved means (``mixture_moments``) against scoring it again relabelled with the outcome.

Inputs are standard normal features and a smooth synthetic target at random points: the cost does
not depend on what the numbers mean. Run with one torch thread.

    OMP_NUM_THREADS=1 python benchmarks/rescore_cost.py --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from aexp.config import DKLPolicyConfig, GroupsSurrogateConfig
from aexp.policies import PositionGP, make_policy, mixture_moments, relabelled, score_and_predict


def _median_s(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _problem(m: int, d: int, n: int, seed: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    X = torch.randn(m, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    y = np.sin(X[:, 0].numpy()) + X[:, 1].numpy() * X[:, min(2, d - 1)].numpy()
    idx = np.random.default_rng(seed).choice(m, n, replace=False)
    return X, y, idx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gp-candidates", type=int, default=65536)
    ap.add_argument("--gp-points", type=int, default=40)
    ap.add_argument("--mixture-candidates", type=int, default=4096)
    ap.add_argument("--mixture-points", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows: list[tuple[str, float]] = []

    X, y, idx = _problem(args.gp_candidates, 6, args.gp_points, 1)
    gp = PositionGP().fit(X[idx], y[idx])
    last = (len(idx) - 1,)
    for _ in range(2):  # alternate, the first round warms up
        plain = _median_s(lambda: score_and_predict(gp, X, "ucb", beta=4.0, best_f=1.0), args.repeats)
        direct = _median_s(lambda: score_and_predict(gp, X, "ucb", beta=4.0, best_f=1.0, rows=last), args.repeats)
    rows += [(f"exact GP, {len(X)} candidates, {len(idx)} points: gpytorch posterior pass", plain),
             ("  direct pass with W (pending decision, while measuring)", direct)]

    X, y, idx = _problem(args.mixture_candidates, 8, args.mixture_points, 0)
    policy: Any = make_policy(DKLPolicyConfig(), surrogate=GroupsSurrogateConfig(dkl_from=0, joint=True),
                              input_dim=X.shape[1], columns={"centre_columns": 2, "position_columns": 2}, seed=0)
    mixture = policy.surrogate.fit(X[idx], y[idx])
    last = (len(idx) - 1,)

    def again() -> None:
        with relabelled(mixture.model, last, [float(y[idx[-1]]) + 1.0]):
            score_and_predict(mixture, X, "ucb", beta=4.0, best_f=1.0)

    members = score_and_predict(mixture, X, "ucb", beta=4.0, best_f=1.0, rows=last).members or []
    for _ in range(2):
        plain = _median_s(lambda: score_and_predict(mixture, X, "ucb", beta=4.0, best_f=1.0), args.repeats)
        with_members = _median_s(lambda: score_and_predict(mixture, X, "ucb", beta=4.0, best_f=1.0, rows=last),
                                 args.repeats)
        rebuild = _median_s(lambda: mixture_moments(members, np.array([1.0])), args.repeats)
        relabel = _median_s(again, args.repeats)
    rows += [(f"mixture ({len(members)} members), {len(X)} candidates, {len(idx)} points: gpytorch posterior pass",
              plain),
             ("  direct pass with each member's W (while measuring)", with_members),
             ("  at arrival: rebuilt from the members' moved means", rebuild),
             ("  at arrival: relabelled and scored again", relabel)]
    width = max(len(name) for name, _ in rows)
    for name, seconds in rows:
        print(f"{name:<{width}}  {seconds:9.4f} s")


if __name__ == "__main__":
    main()
