"""``aexp bench``: how fast each policy discovers the best locations of an instrument with known truth.

For every seed a fresh simulated sample is built; every policy gets the same budget and the same
initial random points. Discovery is the fraction of the true top ``top_fraction`` of candidates
(ranked by the instrument's noiseless target, ``truth()``) that the policy measured within the
budget. Decision time is the median, over the policy's steps, of the seconds from a measurement
received to the next position chosen.

A campaign (``aexp bench --out``) runs every (config, seed, policy) cell on an executor and records
each one durably: :mod:`.cells` (the cell, its record, ``cells.jsonl``), :mod:`.executors` (serial,
process pool, Dask), :mod:`.campaign` (running the cells, ``--resume``), :mod:`.report`
(``aexp bench-report``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..config import ExperimentConfig, check_against, with_kind
from ..errors import UsageError
from ..features import resolve_device, surrogate_inputs
from ..instrument import load_instrument
from ..loop import CampaignResult, build_campaign, build_policy, registrar, survey_candidates
from ..policies import Policy, SurveyRankPolicy, survey_values
from ..session.store import MemoryRecorder
from ..session.truth import require_ground_truth
from ..types import Candidates, Step

__all__ = ["BENCH_POLICIES", "BenchPolicy", "run_bench", "run_policy", "format_table", "top_indices"]


@dataclass(frozen=True)
class BenchPolicy:
    """A benchmark entry: which embedder feeds which policy kind."""

    embedder: str | None  # "rvae", "none", or None when the policy ignores features
    kind: str


BENCH_POLICIES: dict[str, BenchPolicy] = {
    "dkl-rvae": BenchPolicy("rvae", "dkl"),
    "dkl-patch": BenchPolicy("none", "dkl"),
    "gp-xy": BenchPolicy(None, "gp-xy"),
    "random": BenchPolicy(None, "random"),
    "raster": BenchPolicy(None, "raster"),
    # the survey's value under the probe, brightest or darkest first; ``--policies survey-rank``
    # names both, and the better of the two (by mean discovery) is reported as the baseline
    # ``survey-rank`` (aexp.bench.notes)
    "survey-rank-bright": BenchPolicy(None, "survey-rank-bright"),
    "survey-rank-dark": BenchPolicy(None, "survey-rank-dark"),
}


def bench_policy_names(text: str | None) -> list[str]:
    """``--policies``: comma-separated names of :data:`BENCH_POLICIES` (``survey-rank`` stands for both
    directions); all of them when ``text`` is empty."""
    if not text:
        return list(BENCH_POLICIES)
    names: list[str] = []
    for name in (n.strip() for n in text.split(",") if n.strip()):
        names += ["survey-rank-bright", "survey-rank-dark"] if name == "survey-rank" else [name]
    unknown = [n for n in names if n not in BENCH_POLICIES]
    if unknown:
        raise UsageError(f"unknown benchmark policies {unknown}; known: {[*BENCH_POLICIES, 'survey-rank']}")
    return list(dict.fromkeys(names))


def top_indices(truth: np.ndarray, fraction: float) -> np.ndarray:
    """Indices of the ``ceil(fraction * M)`` largest true targets (ties broken by index)."""
    k = max(1, math.ceil(fraction * len(truth)))
    return np.argsort(-np.asarray(truth), kind="stable")[:k]


def run_policy(
    cfg: ExperimentConfig,
    seed: int,
    candidates: Candidates,
    features: torch.Tensor,
    kind: str,
    device: str = "cpu",
    columns: dict[str, Any] | None = None,
    on_step: Callable[[Step, int], None] | None = None,
) -> CampaignResult:
    """One benchmark campaign: a fresh instrument of ``seed``, the policy ``kind`` with the config's
    settings on ``features``, the config's budget and initial points, kept in memory.
    ``on_step(step, budget)`` after each recorded step (progress only: it changes nothing)."""
    if kind.startswith("survey-rank-"):
        policy: Policy = SurveyRankPolicy(survey_values(candidates.patches), brightest=kind.endswith("bright"))
    else:
        policy = build_policy(cfg, int(features.shape[1]), seed, device, kind=kind, columns=columns)
    instrument = load_instrument(cfg.instrument.driver, cfg.instrument.options, seed=seed)
    drift = registrar(cfg, instrument.survey()) if cfg.drift is not None else None
    run = build_campaign(cfg, instrument, candidates, features, policy, MemoryRecorder(), seed, drift=drift,
                         on_step=on_step).run()
    if drift is not None:
        run.extra["registrations"] = [r.to_dict() for r in drift.history]
    times: list[float] = []
    errors = position_errors(instrument, candidates, run.steps, times=times)
    if errors is not None:
        run.extra["position_errors_px"] = errors
        run.extra["probe_times_s"] = times
    return run


def position_errors(instrument: Any, candidates: Candidates, steps: list[Step],
                    times: list[float] | None = None) -> list[float] | None:
    """Per measurement that reached the twin: |sample point really probed - candidate chosen| in survey
    pixels, from the twin's hidden ``probe_log()`` (None for an instrument without one). ``times``, when
    given, receives the twin's clock (seconds) of each of those measurements, in the same order."""
    log = getattr(instrument, "probe_log", None)
    px = (instrument.describe().extra or {}).get("pixel_size_m")
    if log is None or not px:
        return None
    chosen = {(round(s.position[0] * 1e12), round(s.position[1] * 1e12)): s.index for s in steps}
    out = []
    for requested, actual, clock_s in log():
        index = chosen.get((round(requested[0] * 1e12), round(requested[1] * 1e12)))
        if index is not None:
            out.append(float(np.hypot(*(np.asarray(actual) - candidates.positions[index]))) / float(px))
            if times is not None:
                times.append(float(clock_s))
    return out


def run_bench(
    cfg: ExperimentConfig,
    seeds: list[int],
    policies: list[str] | None = None,
    top_fraction: float = 0.01,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every policy on every seed; returns the JSON-ready result (see module docstring)."""
    from .notes import finish_survey_rank, replay_notes

    names = bench_policy_names(",".join(policies) if policies else None)
    device = resolve_device(cfg.device)
    target = cfg.target.build()
    result: dict[str, Any] = {
        "budget": cfg.budget,
        "n_candidates": None,
        "top_fraction": top_fraction,
        "seeds": list(seeds),
        "config": cfg.name,
        "policies": {n: {"discovery": [], "decision_s": []} for n in names},
    }
    for seed in seeds:
        probe = load_instrument(cfg.instrument.driver, cfg.instrument.options, seed=seed)
        oracle = require_ground_truth(probe, cfg.instrument.driver)
        check_against(cfg, probe.describe())
        surveyed = survey_candidates(cfg, probe)
        candidates, period = surveyed.candidates, surveyed.atoms_period_px
        truth = np.asarray(oracle.truth(candidates.positions, target))
        top = set(top_indices(truth, top_fraction).tolist())
        result["n_candidates"] = len(candidates)
        if seed == seeds[0]:  # a recorded sample is the same for every seed
            notes = replay_notes(probe, candidates, target, top_fraction)
            if notes is not None:
                result["replay"] = notes
        features: dict[str | None, torch.Tensor] = {
            None: torch.zeros((len(candidates), 0), dtype=torch.float64, device=device)
        }
        infos: dict[str | None, dict[str, Any]] = {None: {}}
        for name in names:
            entry = BENCH_POLICIES[name]
            if entry.embedder is not None and entry.embedder not in features:
                emb_cfg = with_kind(cfg.embedder, entry.embedder)
                t0 = time.perf_counter()
                feats, infos[entry.embedder] = surrogate_inputs(candidates, cfg, seed, device, progress,
                                                                embedder=emb_cfg, period_px=period)
                features[entry.embedder] = torch.as_tensor(feats, dtype=torch.float64, device=device)
                log(f"seed {seed}: embedder {entry.embedder} ready in {time.perf_counter() - t0:.1f} s")
            run = run_policy(cfg, seed, candidates, features[entry.embedder], entry.kind, device,
                             columns=infos[entry.embedder])
            hit = len(top & {s.index for s in run.steps})
            decisions = [s.timings["decision_s"] for s in run.steps if s.phase == "policy"]
            disc = hit / len(top)
            dec = float(np.median(decisions)) if decisions else 0.0
            result["policies"][name]["discovery"].append(disc)
            result["policies"][name]["decision_s"].append(dec)
            log(f"seed {seed}: {name:<10} discovery {disc:.3f} ({hit}/{len(top)})  decision {dec:.3f} s")
    finish_survey_rank(result)
    return result


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table: mean +- std discovery, its ratio to random's measured mean (``-`` when
    random found nothing or did not run) and to random's expected discovery (budget / candidates),
    and the median decision time."""
    pol = result["policies"]
    rnd = [v for v in pol["random"]["discovery"] if v is not None] if "random" in pol else []
    base = float(np.mean(rnd)) if rnd else 0.0
    n = result.get("n_candidates")
    expected = min(1.0, result["budget"] / n) if n else 0.0
    width = max([18, *(len(name) for name in pol)])
    lines = [
        f"budget {result['budget']} of {n} candidates; discovery of the true top {result['top_fraction']:.0%}; "
        f"seeds {result['seeds']}; random is expected to find {expected:.3f}",
        f"{'policy':<{width}} {'discovery':>17} {'x random':>9} {'x expected':>10} {'decision s':>11}",
    ]
    for name, d in pol.items():
        disc = [v for v in d["discovery"] if v is not None]  # None: a cell that failed
        dec = [v for v in d["decision_s"] if v is not None]
        if not disc:
            lines.append(f"{name:<{width}} {'every cell failed':>17}")
            continue
        m, sd = float(np.mean(disc)), float(np.std(disc))
        ratio = f"{m / base:.1f}" if base > 0 else "-"
        vs_expected = f"{m / expected:.1f}" if expected > 0 else "-"
        failed = f"  ({len(d['discovery']) - len(disc)} failed)" if len(disc) < len(d["discovery"]) else ""
        lines.append(f"{name:<{width}} {m:>9.3f} +- {sd:<5.3f} {ratio:>9} {vs_expected:>10} "
                     f"{float(np.median(dec)) if dec else 0.0:>11.3f}{failed}")
    from .notes import notes_lines

    return "\n".join(lines + notes_lines(result))
