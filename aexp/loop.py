"""The experiment loop: survey -> candidates -> features -> (fit -> select -> measure -> record)*.

The loop owns the order of calls and nothing else. :func:`run_campaign` is the measuring part, given
prepared candidates and features (the benchmark reuses one embedding for several policies);
:func:`run_experiment` is the whole experiment as ``aexp run`` does it, into a session folder.

Budget: ``n_initial`` random measurements, then ``max_steps`` chosen by the policy. Every attempt is
one step, failed ones included (they cost instrument time); a failed or non-finite measurement is
recorded with ``status: "failed"``, its candidate is never tried again, and the loop goes on.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import ConfigError, ExperimentConfig, check_against
from .features import resolve_device, standardise, surrogate_inputs
from .instrument import Instrument, InstrumentError, OutOfBounds, check_position
from .patches import make_candidates
from .policies import FEATURELESS_KINDS, Decision, Policy, SelectionContext, make_policy
from .repro import features_digest, step_rng, torch_settings, versions
from .session.manifest import CandidatesRecord, Manifest, SurveyRecord, TorchRecord
from .session.store import Recorder, SessionWriter, check_out_folder
from .targets import Target
from .types import Candidates, InstrumentDescription, Step, Survey

__all__ = [
    "CampaignResult",
    "run_campaign",
    "run_experiment",
    "initial_indices",
]

StepCallback = Callable[[Step, int], None]


@dataclass
class CampaignResult:
    """What a campaign produced. ``maps`` holds the final model's mean/std/acquisition when it has one."""

    steps: list[Step]
    maps: dict[str, np.ndarray] | None = None
    stop_reason: str = "budget"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok_steps(self) -> list[Step]:
        return [s for s in self.steps if s.status == "ok"]

    @property
    def best(self) -> Step | None:
        ok = self.ok_steps
        return max(ok, key=lambda s: s.target) if ok else None


def initial_indices(n_initial: int, seed: int, allowed: np.ndarray) -> np.ndarray:
    """The random seed measurements: depend on the seed only, so every policy starts alike."""
    rng = np.random.default_rng([seed, 0x1417])
    pool = np.flatnonzero(allowed)
    if len(pool) < n_initial:
        raise ConfigError(f"policy.n_initial: only {len(pool)} candidates can be measured; {n_initial} initial asked for")
    return rng.permutation(pool)[:n_initial]


def _finite(value: float | None) -> float | None:
    """JSON has no inf/nan: a non-finite model value is recorded as null."""
    return float(value) if value is not None and np.isfinite(value) else None


def _best(targets: list[float]) -> float | None:
    return max(targets) if targets else None


def run_campaign(
    *,
    instrument: Instrument,
    candidates: Candidates,
    features: torch.Tensor,
    target: Target,
    policy: Policy,
    n_initial: int,
    max_steps: int,
    recorder: Recorder,
    seed: int,
    wall_time_s: float | None = None,
    want_final_maps: bool = False,
    record_spectra: bool = True,
    on_step: StepCallback | None = None,
    session_id: str = "",
    stop_after: int | None = None,
) -> CampaignResult:
    """Measure ``n_initial`` random candidates, then ``max_steps`` chosen by ``policy``.

    Each step is handed to ``recorder`` (durable for a :class:`SessionWriter`) before the next
    command goes to the instrument. A position outside the instrument's bounds is never sent.
    ``stop_after`` ends the campaign after that many steps without changing the budget the policy
    sees (a replay of a record that stopped early).
    """
    bounds = instrument.bounds
    axis = instrument.describe().spectrum_axis.values()
    inside = bounds.contains(candidates.positions)
    excluded = ~inside  # never measurable; never sent
    init = list(initial_indices(n_initial, seed, inside))
    measured: list[int] = []
    targets: list[float] = []
    steps: list[Step] = []
    budget = n_initial + max_steps
    start = time.perf_counter()
    received = start
    stop_reason = "budget"

    for k in range(budget if stop_after is None else min(budget, stop_after)):
        if wall_time_s is not None and time.perf_counter() - start > wall_time_s:
            stop_reason = "wall_time"
            break
        if (~excluded).sum() == 0:
            stop_reason = "no candidates left"
            break
        decision, phase = _decide(
            k, init, excluded, policy, features, candidates, measured, targets, budget, step_rng(seed, k)
        )
        idx = decision.index
        decision_s = time.perf_counter() - received
        position = (float(candidates.positions[idx, 0]), float(candidates.positions[idx, 1]))
        command_id = f"{session_id}-{k}" if session_id else str(k)
        step = Step(
            step=k,
            index=int(idx),
            position=position,
            pixel=(float(candidates.pixels[idx, 0]), float(candidates.pixels[idx, 1])),
            target=None,
            status="failed",
            phase=phase,
            acquisition=_finite(decision.acquisition),
            predicted_mean=_finite(decision.predicted_mean),
            predicted_std=_finite(decision.predicted_std),
            command_id=command_id,
            timings={"fit_s": decision.fit_s, "select_s": decision.select_s, "decision_s": decision_s},
        )
        excluded[idx] = True
        spectrum = None
        t0 = time.perf_counter()
        try:
            check_position(bounds, position)  # the guard before anything is sent
            meas = instrument.measure(position, command_id=command_id)
            spectrum = np.asarray(meas.spectrum, dtype=float)
            value = target(spectrum, axis)
            if not np.all(np.isfinite(spectrum)) or not np.isfinite(value):
                step.error = "non-finite spectrum or target"
            else:
                step.status, step.target = "ok", float(value)
                measured.append(int(idx))
                targets.append(float(value))
            step.timings["instrument_s"] = float(meas.duration_s)
        except OutOfBounds as exc:
            step.error = f"out of bounds: {exc}"
        except InstrumentError as exc:
            step.error = f"{type(exc).__name__}: {exc}"
        step.timings["measure_s"] = time.perf_counter() - t0
        received = time.perf_counter()
        step.best_so_far = _best(targets)
        recorder.append_step(step, spectrum if record_spectra else None)
        steps.append(step)
        if on_step is not None:
            on_step(step, budget)

    maps = None
    if want_final_maps and len(measured) >= 2 and (~excluded).any():
        rng = step_rng(seed, len(steps))
        ctx = _context(features, candidates, measured, targets, excluded, 1, len(steps), rng, True)
        maps = policy.select(ctx).maps
    return CampaignResult(steps=steps, maps=maps, stop_reason=stop_reason)


def _context(features, candidates, measured, targets, excluded, budget_left, step, rng, maps=False):
    return SelectionContext(
        features=features,
        positions=candidates.positions,
        grid_shape=candidates.grid_shape,
        measured=np.asarray(measured, dtype=np.int64),
        targets=np.asarray(targets, dtype=np.float64),
        excluded=excluded.copy(),
        budget_left=budget_left,
        step=step,
        rng=rng,
        want_maps=maps,
    )


def _decide(k, init, excluded, policy, features, candidates, measured, targets, budget, rng):
    """The initial random points first; then the policy, once it has two targets to learn from."""
    if k < len(init):
        return Decision(int(init[k]), None, None, None, 0.0, 0.0, None), "initial"
    if len(measured) < 2:  # too many initial points failed: keep exploring at random
        pool = np.flatnonzero(~excluded)
        return Decision(int(rng.choice(pool)), None, None, None, 0.0, 0.0, None), "initial"
    ctx = _context(features, candidates, measured, targets, excluded, budget - k, k, rng)
    decision = policy.select(ctx)
    if excluded[decision.index]:
        raise RuntimeError(f"policy {policy.name!r} chose candidate {decision.index}, which is excluded")
    return decision, "policy"


@dataclass
class Prepared:
    """Everything fixed before the first measurement."""

    description: InstrumentDescription
    survey: Survey
    candidates: Candidates
    features: torch.Tensor
    feature_info: dict[str, Any]
    device: str


@dataclass
class Surveyed:
    """The cheap half of :func:`prepare`: what can be checked before anything is trained or written."""

    description: InstrumentDescription
    survey: Survey
    candidates: Candidates
    device: str


def survey_candidates(cfg: ExperimentConfig, instrument: Instrument) -> Surveyed:
    """Describe, resolve the device, survey and cut the candidates (each may raise on bad input)."""
    desc = instrument.describe()
    device = resolve_device(cfg.device)
    survey = instrument.survey()
    return Surveyed(desc, survey, make_candidates(survey, cfg.candidates), device)


def embed(cfg: ExperimentConfig, surveyed: Surveyed, seed: int, progress: bool = True) -> Prepared:
    """The surrogate's inputs over the candidates.

    The embedder is trained only when the policy uses the features: ``random``, ``raster`` and
    ``gp-xy`` get the standardised positions and no embedder runs.
    """
    candidates, device = surveyed.candidates, surveyed.device
    if cfg.policy.kind in FEATURELESS_KINDS:  # nothing to learn an embedding for
        feats, info = standardise(candidates.positions), {"kind": "none", "policy_uses_features": False, "dim": 2}
    else:
        feats, info = surrogate_inputs(candidates, cfg, seed=seed, device=device, progress=progress)
    features = torch.as_tensor(feats, dtype=torch.float64, device=device)
    return Prepared(surveyed.description, surveyed.survey, candidates, features, info, device)


def prepare(
    cfg: ExperimentConfig, instrument: Instrument, seed: int, progress: bool = True
) -> Prepared:
    """Describe, survey, cut candidates, embed (the config was checked against the instrument)."""
    return embed(cfg, survey_candidates(cfg, instrument), seed, progress)


def build_policy(
    cfg: ExperimentConfig, input_dim: int, seed: int, device: str, kind: str | None = None
) -> Policy:
    """The configured policy (or another ``kind`` with the same settings, for the benchmark)."""
    return make_policy(
        kind or cfg.policy.kind,
        acquisition=cfg.policy.acquisition,
        beta=cfg.policy.beta,
        input_dim=input_dim,
        surrogate_options=cfg.surrogate.options(),
        seed=seed,
        device=device,
    )


def manifest(
    cfg: ExperimentConfig,
    prepared: Prepared,
    seed: int,
    session_id: str,
    settings: dict[str, Any] | None = None,
) -> Manifest:
    """What ``manifest.json`` holds; ``settings`` are the torch settings in force (:func:`torch_settings`)."""
    cands = prepared.candidates
    settings = settings or {
        "num_threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
    }
    return Manifest(
        session_id=session_id,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        seed=seed,
        budget=cfg.budget,
        config=cfg.to_dict(),
        versions=versions(),
        torch=TorchRecord(prepared.device, int(settings["num_threads"]), bool(settings["deterministic"])),
        instrument=prepared.description,
        spectrum_axis=prepared.description.spectrum_axis,
        survey=SurveyRecord(tuple(prepared.survey.image.shape), tuple(prepared.survey.channels),
                            prepared.survey.transform),
        candidates=CandidatesRecord(len(cands), cands.grid_shape, tuple(cands.patches.shape[1:])),
        features={**prepared.feature_info, "sha256": features_digest(prepared.features)},
    )


def run_experiment(
    cfg: ExperimentConfig,
    instrument: Instrument,
    out: str | Path,
    seed: int | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    on_step: StepCallback | None = None,
) -> tuple[Path, CampaignResult]:
    """Run a whole experiment into the session folder ``out``; returns the folder and the result.

    On Ctrl-C the completed steps are already on disk; ``summary.json`` records the interruption and
    the exception propagates.
    """
    seed = cfg.seed if seed is None else seed
    folder = Path(out)
    # everything that can be checked is checked before a previous session is deleted
    check_against(cfg, instrument.describe())
    check_out_folder(folder, overwrite)
    created = not folder.exists()
    session_id = uuid.uuid4().hex[:12]
    result: CampaignResult | None = None
    status = "failed"
    with torch_settings() as settings:
        surveyed = survey_candidates(cfg, instrument)
        writer = SessionWriter(folder, overwrite=overwrite)
        try:
            prepared = embed(cfg, surveyed, seed, progress=progress)
            policy = build_policy(cfg, int(prepared.features.shape[1]), seed, prepared.device)
            writer.write_array("survey", prepared.survey.image)
            writer.write_array("candidates", prepared.candidates.positions)
            writer.write_array("pixels", prepared.candidates.pixels)
            # the manifest is written last: a folder without one never measured anything
            writer.write_json("manifest.json", manifest(cfg, prepared, seed, session_id, settings).to_dict())
            result = campaign(cfg, instrument, prepared, policy, writer, seed, session_id, on_step)
            status = "completed"
            finish_figure(cfg, writer.folder, prepared, result)
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            if (writer.folder / "manifest.json").exists():
                writer.write_json("summary.json", summary(status, result))
            writer.close()
            if not (writer.folder / "manifest.json").exists():
                _remove_unstarted(writer.folder, created)  # nothing was measured
    return writer.folder, result


def _remove_unstarted(folder: Path, created: bool) -> None:
    """Remove a session that never reached its manifest: only aexp's files were in it."""
    for entry in folder.iterdir():
        entry.unlink(missing_ok=True)
    if created:
        folder.rmdir()


def campaign(
    cfg: ExperimentConfig,
    instrument: Instrument,
    prepared: Prepared,
    policy: Policy,
    recorder: Recorder,
    seed: int,
    session_id: str,
    on_step: StepCallback | None = None,
    stop_after: int | None = None,
) -> CampaignResult:
    """:func:`run_campaign` with everything taken from the config (run, replay and resume alike)."""
    return run_campaign(
        instrument=instrument,
        candidates=prepared.candidates,
        features=prepared.features,
        target=cfg.target.build(),
        policy=policy,
        n_initial=cfg.policy.n_initial,
        max_steps=cfg.stopping.max_steps,
        recorder=recorder,
        seed=seed,
        wall_time_s=cfg.stopping.wall_time_s,
        want_final_maps=cfg.recording.figure and stop_after is None,
        record_spectra=cfg.recording.spectra,
        on_step=on_step,
        session_id=session_id,
        stop_after=stop_after,
    )


def finish_figure(cfg: ExperimentConfig, folder: Path, prepared: Prepared, result: CampaignResult) -> None:
    """Write ``session.png`` when the config asks for it (after the last step)."""
    if cfg.recording.figure:
        from .session.figures import session_figure

        result.extra["figure"] = str(session_figure(folder, prepared.survey, prepared.candidates, result))


def summary(status: str, result: CampaignResult | None, **extra: Any) -> dict[str, Any]:
    """What ``summary.json`` holds: how the run ended, and its best step."""
    out: dict[str, Any] = {"status": status}
    if result is not None:
        best = result.best
        out.update(
            steps=len(result.steps),
            ok=len(result.ok_steps),
            stop_reason=result.stop_reason,
            best_target=best.target if best else None,
            best_index=best.index if best else None,
            figure=result.extra.get("figure"),
        )
    out.update(extra)
    return out
