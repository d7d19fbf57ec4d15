"""Decision time at 200 measured points: aexp's warm-started DKL vs the field's usual practice.

A decision = fit the surrogate on the measured points + score every unmeasured candidate + argmax.

- aexp: the surrogate the config's ``policy`` and ``surrogate`` sections build (``make_policy``),
  taken through the experiment's stages (the exact GP below ``gp_until`` points, then the DKL
  begun as that GP) and warm-started from the previous step; candidates scored through botorch on
  aexp's flat cached posterior, in chunks of 1024.
- baseline (what the public DKL workflows do): a DKL retrained from scratch at every step (200
  Adam iterations, no base kernel) and scored with library defaults: botorch's
  ``optimize_acqf_discrete`` over the candidates, with gpytorch's own posterior route.

Features are the default config's (rVAE latents of each view, the centre pixels when the config
asks for them, and the position), with each rVAE trained
briefly on a subset (its quality does not change the cost of a decision). Targets are the
simulator's truth at random points. Both run in the same process, alternating, and the ratio is
what to quote.

    python benchmarks/decision_time.py --sizes 16384,65536 --repeats 3 --json decision.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from botorch.acquisition import LogExpectedImprovement
from botorch.models.gpytorch import GPyTorchModel
from botorch.optim import optimize_acqf_discrete

from aexp.config import load_config
from aexp.features import standardise, with_surrogate_columns
from aexp.instrument import load_instrument
from aexp.models import RVAE
from aexp.patches import make_candidates
from aexp.policies import make_policy, score_candidates
from aexp.surrogates.dkl import DeepKernelGP, DKLSurrogate


class LibraryDefaultDKL(DeepKernelGP):
    """The same GP with gpytorch's default prediction route (per-candidate t-batches)."""

    posterior = GPyTorchModel.posterior


class FromScratchDKL(DKLSurrogate):
    def _build(self, X, Y):
        model = super()._build(X, Y)
        model.__class__ = LibraryDefaultDKL
        return model


def features_for(n_side: int, seed: int, cfg) -> tuple[np.ndarray, np.ndarray]:
    opts = {**cfg.instrument.options, "survey_pixels": n_side}
    inst = load_instrument(cfg.instrument.driver, opts, seed=seed)
    cands = make_candidates(inst.survey(), cfg.candidates.model_copy(update={"stride": 1}))
    truth = inst.truth(cands.positions, cfg.target.build())
    rng = np.random.default_rng(seed)
    subset = rng.choice(len(cands), 4096, replace=False)
    emb = cfg.embedder
    views = [cands.patches] + ([cands.context] if cands.context is not None else [])
    columns = []
    for view in views:  # the embedder per view, as in aexp.features, trained briefly on a subset
        rvae = RVAE(input_shape=view.shape[1:], latent_dim=emb.latent_dim, hidden=emb.hidden)
        rvae.fit(view[subset], epochs=3, batch_size=emb.batch_size, seed=seed, progress=False)
        columns.append(standardise(rvae.encode(view)))
    return with_surrogate_columns(np.hstack(columns), cands, cfg.surrogate)[0], truth


def time_decisions(X: torch.Tensor, y: np.ndarray, order: np.ndarray, n: int, repeats: int, cfg):
    """Median seconds of `repeats` consecutive decisions at n, n+1, ... measured points."""
    opts = cfg.surrogate.options()
    ours = make_policy("dkl", input_dim=X.shape[1], surrogate_options=opts, seed=0).surrogate
    switch = opts["gp_until"]
    for k in ([switch - 1] if 0 < switch < n else []) + [n - 1]:  # the experiment so far
        ours.fit(X[order[:k]], y[order[:k]])
    t_ours, t_base = [], []
    for k in range(repeats):
        idx = order[: n + k]
        excluded = np.zeros(len(X), bool)
        excluded[idx] = True
        best_f = float(y[idx].max())

        t0 = time.perf_counter()
        ours.fit(X[idx], y[idx])
        s = score_candidates(ours, X, cfg.policy.acquisition, beta=cfg.policy.beta, best_f=best_f,
                             seed=k)
        s[excluded] = -np.inf
        int(np.argmax(s))
        t_ours.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        dkl_opts = {k: v for k, v in opts.items() if k not in ("gp_until", "position_kernel")}
        base = FromScratchDKL(X.shape[1], seed=0, **{**dkl_opts, "base_kernel": False, "iterations": 200})
        base.fit(X[idx], y[idx])
        choices = X[~torch.as_tensor(excluded)]
        acqf = LogExpectedImprovement(base.model, best_f=best_f)
        with torch.no_grad():
            optimize_acqf_discrete(acqf, q=1, choices=choices, max_batch_size=2048)
        t_base.append(time.perf_counter() - t0)
    return float(np.median(t_ours)), float(np.median(t_base))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/plasmonic-dkl.yaml")
    p.add_argument("--sizes", default="16384,65536", help="candidate counts (perfect squares)")
    p.add_argument("--measured", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    cfg = load_config(args.config)
    rows = []
    for m in (int(s) for s in args.sizes.split(",")):
        side = int(round(m**0.5))
        feats, truth = features_for(side, args.seed, cfg)
        X = torch.as_tensor(feats, dtype=torch.float64)
        order = np.random.default_rng(args.seed).permutation(len(X))
        ours, base = time_decisions(X, truth, order, args.measured, args.repeats, cfg)
        rows.append({"candidates": len(X), "measured": args.measured, "features": X.shape[1],
                     "aexp_s": ours, "baseline_s": base, "speedup": base / ours})
        print(f"M={len(X):>6} n={args.measured} D={X.shape[1]}: aexp {ours:.3f} s, "
              f"from-scratch + library defaults {base:.3f} s, ratio {base / ours:.1f}x", flush=True)
    out = {"torch_threads": torch.get_num_threads(), "rows": rows}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
