"""Decision time at 200 measured points: aexp's warm-started DKL vs the field's usual practice.

A decision = fit the surrogate on the measured points + score every unmeasured candidate + argmax.

- aexp: the surrogate the config's ``policy`` and ``surrogate`` sections build (``aexp.policies.dkl_surrogate``),
  taken through the experiment's stages (the exact GP below ``gp_until`` points, then the DKL
  begun as that GP) and warm-started from the previous step; candidates scored through botorch on
  aexp's flat cached posterior, in chunks of 1024.
- baseline (what the public DKL workflows do): a DKL retrained from scratch at every step (200
  Adam iterations, no base kernel) and scored with library defaults: botorch's
  ``optimize_acqf_discrete`` over the candidates, with gpytorch's own posterior route.

``--variant surrogate.gp_warm_maxiter=5`` (repeatable) times aexp again with those config changes,
alternating with the plain config in the same process; ``--no-baseline`` skips the from-scratch
baseline (minutes at 65,536 candidates on a busy machine).

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
import os
import time

import numpy as np
import torch
from botorch.acquisition import LogExpectedImprovement
from botorch.models.gpytorch import GPyTorchModel
from botorch.optim import optimize_acqf_discrete

from aexp.config import DKLPolicyConfig, DKLSurrogateConfig, UCBConfig, load_config
from aexp.features import standardise, with_surrogate_columns
from aexp.instrument import load_instrument
from aexp.models import RVAE
from aexp.patches import make_candidates
from aexp.policies import dkl_surrogate, score_candidates
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


def _dkl_section(cfg) -> DKLSurrogateConfig:
    if not isinstance(cfg.surrogate, DKLSurrogateConfig) or not isinstance(cfg.policy, DKLPolicyConfig):
        raise SystemExit(f"{cfg.name}: decision_time times the dkl policy with a dkl surrogate")
    return cfg.surrogate


def _surrogate(X: torch.Tensor, y: np.ndarray, order: np.ndarray, n: int, cfg):
    """aexp's surrogate taken through the experiment so far (the GP stage, the switch, warm fits)."""
    section = _dkl_section(cfg)
    ours = dkl_surrogate(section, X.shape[1], seed=0)
    switch = section.gp_until
    for k in ([switch - 1] if 0 < switch < n else []) + [n - 1]:
        ours.fit(X[order[:k]], y[order[:k]])
    return ours


def _decide(ours, X: torch.Tensor, y: np.ndarray, idx: np.ndarray, cfg, k: int) -> tuple[float, float, float]:
    """Wall and CPU seconds (this process) of one decision, and the CPU seconds of its fit."""
    excluded = np.zeros(len(X), bool)
    excluded[idx] = True
    c0, t0 = time.process_time(), time.perf_counter()
    ours.fit(X[idx], y[idx])
    c_fit = time.process_time() - c0
    acquisition = cfg.policy.acquisition
    beta = acquisition.beta if isinstance(acquisition, UCBConfig) else UCBConfig().beta
    s = score_candidates(ours, X, acquisition.kind, beta=beta, best_f=float(y[idx].max()), seed=k)
    s[excluded] = -np.inf
    int(np.argmax(s))
    return time.perf_counter() - t0, time.process_time() - c0, c_fit


def time_decisions(X: torch.Tensor, y: np.ndarray, order: np.ndarray, n: int, repeats: int, cfg):
    """Median seconds of `repeats` consecutive decisions at n, n+1, ... measured points: aexp and
    the from-scratch baseline."""
    ours, _, base = time_all(X, y, order, n, repeats, cfg)
    return ours, base


def time_all(X: torch.Tensor, y: np.ndarray, order: np.ndarray, n: int, repeats: int, cfg,
             variant=None, baseline: bool = True, cpu: list[tuple[float, float]] | None = None):
    """As :func:`time_decisions`, and the variant config (or None); the baseline None when skipped.
    ``cpu`` gets the CPU seconds of each of aexp's decisions and of its fit: on a machine shared with
    other jobs the wall time of a one-thread decision stretches with the load, its CPU time much less."""
    ours = _surrogate(X, y, order, n, cfg)
    other = _surrogate(X, y, order, n, variant) if variant is not None else None
    t_ours, t_var, t_base = [], [], []
    for k in range(repeats):
        idx = order[: n + k]
        excluded = np.zeros(len(X), bool)
        excluded[idx] = True
        best_f = float(y[idx].max())
        wall, used, used_fit = _decide(ours, X, y, idx, cfg, k)
        t_ours.append(wall)
        if cpu is not None:
            cpu.append((used, used_fit))
        if other is not None:
            t_var.append(_decide(other, X, y, idx, variant, k)[0])
        if not baseline:
            continue

        t0 = time.perf_counter()
        s = _dkl_section(cfg)
        base = FromScratchDKL(X.shape[1], feature_dim=s.feature_dim, hidden=tuple(s.hidden), kernel=s.kernel,
                              lr=s.lr, iterations=200, warm_iterations=s.warm_iterations, base_kernel=False, seed=0)
        base.fit(X[idx], y[idx])
        choices = X[~torch.as_tensor(excluded)]
        acqf = LogExpectedImprovement(base.model, best_f=best_f)
        with torch.no_grad():
            optimize_acqf_discrete(acqf, q=1, choices=choices, max_batch_size=2048)
        t_base.append(time.perf_counter() - t0)
    return _median(t_ours), _median(t_var), _median(t_base)


def _median(times: list[float]) -> float | None:
    return float(np.median(times)) if times else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/plasmonic-dkl.yaml")
    p.add_argument("--sizes", default="16384,65536", help="candidate counts (perfect squares)")
    p.add_argument("--measured", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", default=None)
    p.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE",
                   help="time aexp also with this config change (YAML value), e.g. surrogate.gp_warm_maxiter=5")
    p.add_argument("--no-baseline", action="store_true", help="skip the from-scratch baseline")
    args = p.parse_args()
    cfg = load_config(args.config)
    variant = None
    if args.variant:
        import yaml

        changes = dict(v.split("=", 1) for v in args.variant)
        variant = cfg.with_overrides(**{k: yaml.safe_load(v) for k, v in changes.items()})
    rows = []
    for m in (int(s) for s in args.sizes.split(",")):
        side = int(round(m**0.5))
        feats, truth = features_for(side, args.seed, cfg)
        X = torch.as_tensor(feats, dtype=torch.float64)
        order = np.random.default_rng(args.seed).permutation(len(X))
        cpu: list[tuple[float, float]] = []
        ours, var, base = time_all(X, truth, order, args.measured, args.repeats, cfg, variant,
                                   baseline=not args.no_baseline, cpu=cpu)
        used, used_fit = _median([c for c, _ in cpu]), _median([f for _, f in cpu])
        rows.append({"candidates": len(X), "measured": args.measured, "features": X.shape[1],
                     "aexp_s": ours, "aexp_cpu_s": used, "aexp_fit_cpu_s": used_fit, "variant": args.variant or None,
                     "variant_s": var, "baseline_s": base, "speedup": base / ours if base else None,
                     "load_average": os.getloadavg()[0]})
        line = f"M={len(X):>6} n={args.measured} D={X.shape[1]}: aexp {ours:.3f} s (CPU {used:.3f} s, fit {used_fit:.3f} s)"
        if var is not None:
            line += f", with {' '.join(args.variant)} {var:.3f} s"
        if base is not None:
            line += f", from-scratch + library defaults {base:.3f} s, ratio {base / ours:.1f}x"
        print(f"{line}; load average {os.getloadavg()[0]:.1f}", flush=True)
    out = {"torch_threads": torch.get_num_threads(), "rows": rows}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
