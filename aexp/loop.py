"""The experiment loop: survey -> candidates -> features -> (ask -> measure -> tell -> record)*.

The order of calls lives in :class:`aexp.campaign.Campaign`; this module builds it from a config
(:func:`build_campaign`, the one path that ``run``, ``replay``, ``resume`` and ``bench`` share) and
runs a whole experiment into a session folder (:func:`run_experiment`). :func:`run_campaign` keeps
the keyword form of earlier versions.

Budget: ``n_initial`` random measurements, then ``max_steps`` chosen by the policy. Every attempt is
one step, failed ones included (they cost instrument time); a failed or non-finite measurement is
recorded with ``status: "failed"``, its candidate is never tried again, and the loop goes on. An
instrument that cannot be reached at all is not a failed step: after ``instrument.max_outage_s`` the
run stops as interrupted (:class:`~aexp.campaign.InstrumentOutage`) and ``aexp resume`` continues.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .campaign import (
    AskTellPolicy,
    Budget,
    Campaign,
    CampaignResult,
    Clock,
    InstrumentOutage,
    Operator,
    Schedule,
    StepCallback,
    TravelCost,
    initial_indices,
)
from .config import ConfigError, ExperimentConfig, check_against, with_kind
from .drift import Registrar, Registration, append_registration, require_registration
from .features import resolve_device, standardise, surrogate_inputs
from .instrument import Instrument
from .live.channel import LiveOperator, OperatorOptions
from .patches import ModeChoice, make_candidates, resolve_candidates
from .policies import FEATURELESS_KINDS, Policy, make_policy
from .repro import features_digest, torch_settings, versions
from .session.log import session_log
from .session.manifest import CandidatesRecord, Manifest, SurveyRecord, TorchRecord
from .session.store import Recorder, SessionWriter, check_out_folder
from .targets import Target
from .types import Candidates, InstrumentDescription, Survey

log = logging.getLogger("aexp.run")

__all__ = [
    "CampaignResult",
    "build_campaign",
    "run_campaign",
    "run_experiment",
    "initial_indices",
]


def run_campaign(
    *,
    instrument: Instrument,
    candidates: Candidates,
    features: torch.Tensor,
    target: Target,
    policy: Policy | AskTellPolicy,
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
    schedule: Schedule | None = None,
    travel: TravelCost | None = None,
    clock: Clock | None = None,
) -> CampaignResult:
    """Measure ``n_initial`` random candidates, then ``max_steps`` chosen by ``policy``.

    The keyword form of :class:`~aexp.campaign.Campaign` with a ``Budget(n_initial + max_steps,
    wall_time_s)``. ``stop_after`` ends the campaign after that many steps without changing the
    budget the policy sees (a replay of a record that stopped early).
    """
    return Campaign(
        instrument=instrument, candidates=candidates, features=features, target=target, policy=policy,
        n_initial=n_initial, budget=Budget(n_initial + max_steps, wall_time_s), recorder=recorder,
        seed=seed, schedule=schedule, travel=travel, clock=clock, record_spectra=record_spectra,
        want_final_maps=want_final_maps, on_step=on_step, session_id=session_id, stop_after=stop_after,
    ).run()


def travel_cost(cfg: ExperimentConfig, description: InstrumentDescription) -> TravelCost | None:
    """``policy.travel`` with the stage speed, settle time and dwell the instrument declares as defaults."""
    t = cfg.policy.travel
    if t is None:
        return None
    extra = description.extra or {}
    speed = t.stage_speed_m_s if t.stage_speed_m_s is not None else extra.get("stage_speed_m_s")
    settle = t.settle_s if t.settle_s is not None else extra.get("settle_s", 0.0)
    if t.weight > 0 and speed is None:
        raise ConfigError("policy.travel.weight needs a stage speed: give policy.travel.stage_speed_m_s "
                          f"(instrument {description.name!r} does not declare stage_speed_m_s)")
    dwell = 1.0
    if t.units == "spread":
        dwell = t.dwell_s if t.dwell_s is not None else description.measurement_time_s
        if not dwell > 0:
            raise ConfigError("policy.travel.units: spread counts a move's time in dwells: give "
                              f"policy.travel.dwell_s (instrument {description.name!r} declares a "
                              f"measurement_time_s of {description.measurement_time_s})")
    return TravelCost(weight=t.weight, stage_speed_m_s=float(speed or 1.0), settle_s=float(settle),
                      recency_weight=t.recency_weight, recency_radius_m=t.recency_radius_m,
                      recency_window=t.recency_window, units=t.units, dwell_s=float(dwell))


def build_campaign(
    cfg: ExperimentConfig,
    instrument: Instrument,
    candidates: Candidates,
    features: torch.Tensor,
    policy: Policy | AskTellPolicy,
    recorder: Recorder,
    seed: int,
    *,
    session_id: str = "",
    on_step: StepCallback | None = None,
    stop_after: int | None = None,
    want_final_maps: bool = False,
    clock: Clock | None = None,
    operator: Operator | None = None,
    drift: Registrar | None = None,
) -> Campaign:
    """The campaign a config describes: budget, schedule, travel, target (run, replay, resume, bench)."""
    p = cfg.policy
    return Campaign(
        instrument=instrument,
        candidates=candidates,
        features=features,
        target=cfg.target.build(),
        policy=policy,
        n_initial=p.n_initial,
        budget=Budget(cfg.budget, cfg.stopping.wall_time_s, cfg.stopping.max_failures),
        recorder=recorder,
        seed=seed,
        schedule=Schedule(pending=p.pending, max_in_flight=p.max_in_flight, batch=p.batch, rescore=p.rescore,
                          max_outage_s=cfg.instrument.max_outage_s),
        travel=travel_cost(cfg, instrument.describe()),
        clock=clock,
        record_spectra=cfg.recording.spectra,
        want_final_maps=want_final_maps,
        on_step=on_step,
        session_id=session_id,
        stop_after=stop_after,
        operator=operator,
        drift=drift,
    )


def registrar(
    cfg: ExperimentConfig,
    survey: Survey,
    *,
    recorded: Sequence[Registration] = (),
    live_from: int | None = 0,
    folder: Path | None = None,
) -> Registrar | None:
    """``drift`` of the config as a :class:`~aexp.drift.Registrar` against ``survey`` (None when off).

    ``recorded``: a session's registrations, applied at their steps (replay, resume); ``live_from``:
    the first step that may survey live (None: never, a replay); ``folder``: the session that records
    new ones in ``registrations.jsonl``.
    """
    d = cfg.drift
    if d is None:
        return None
    sink = None if folder is None else (lambda record: append_registration(folder, record))
    return Registrar(survey, every_s=d.resurvey_every_s, every_steps=d.resurvey_every, recorded=recorded,
                     live_from=live_from, sink=sink, predict=d.predict, upsample_factor=d.upsample_factor,
                     max_shift_px=d.max_shift_px, min_correlation=d.min_correlation, channel=d.channel)


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
    #: what ``candidates.mode: auto`` chose (None for a mode the config names)
    mode: ModeChoice | None = None

    @property
    def atoms_period_px(self) -> float | None:
        """The lattice period when ``mode: auto`` put the candidates on atom columns (the scale of
        ``neighbour_counts: auto``), else ``None``."""
        return self.mode.period_px if self.mode is not None and self.mode.mode == "atoms" else None


def survey_candidates(cfg: ExperimentConfig, instrument: Instrument) -> Surveyed:
    """Describe, resolve the device, survey and cut the candidates (each may raise on bad input)."""
    desc = instrument.describe()
    device = resolve_device(cfg.device)
    survey = instrument.survey()
    candidates_cfg, mode = resolve_candidates(survey, cfg.candidates, desc)
    if mode is not None:
        log.info("candidates.mode auto -> %s: %s", mode.mode, mode.reason)
    return Surveyed(desc, survey, make_candidates(survey, candidates_cfg), device, mode)


def embed(cfg: ExperimentConfig, surveyed: Surveyed, seed: int, progress: bool = True) -> Prepared:
    """The surrogate's inputs over the candidates.

    The embedder is trained only when the policy uses the features: ``random``, ``raster`` and
    ``gp-xy`` get the standardised positions and no embedder runs.
    """
    candidates, device = surveyed.candidates, surveyed.device
    if cfg.policy.kind in FEATURELESS_KINDS:  # nothing to learn an embedding for
        feats, info = standardise(candidates.positions), {"kind": "none", "policy_uses_features": False, "dim": 2}
    else:
        feats, info = surrogate_inputs(candidates, cfg, seed=seed, device=device, progress=progress,
                                       period_px=surveyed.atoms_period_px)
    if cfg.candidates.patch_size == "auto":  # what the survey chose (aexp.patches.auto_patch_size)
        info = {**info, "patch_size": int(candidates.patches.shape[-1]), "patch_size_auto": True}
    if surveyed.mode is not None:  # what the survey and the instrument chose (aexp.patches.choose_mode)
        info = {**info, "candidates_mode": surveyed.mode.to_dict()}
    features = torch.as_tensor(feats, dtype=torch.float64, device=device)
    return Prepared(surveyed.description, surveyed.survey, candidates, features, info, device)


def prepare(
    cfg: ExperimentConfig, instrument: Instrument, seed: int, progress: bool = True
) -> Prepared:
    """Describe, survey, cut candidates, embed (the config was checked against the instrument)."""
    return embed(cfg, survey_candidates(cfg, instrument), seed, progress)


def build_policy(
    cfg: ExperimentConfig, input_dim: int, seed: int, device: str, kind: str | None = None,
    columns: dict[str, Any] | None = None,
) -> Policy:
    """The configured policy (or another ``kind`` with the same settings, for the benchmark);
    ``columns`` is the features record (which columns are which input group)."""
    policy = cfg.policy if kind is None or kind == cfg.policy.kind else with_kind(cfg.policy, kind)
    return make_policy(policy, surrogate=cfg.surrogate, input_dim=input_dim, seed=seed, device=device,
                       columns=columns)


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
    operator: OperatorOptions | None = None,
) -> tuple[Path, CampaignResult]:
    """Run a whole experiment into the session folder ``out``; returns the folder and the result.

    The operator's channel (``aexp control``, :mod:`aexp.live.channel`) is open on every run;
    ``operator`` adds the live page's state and maps, approve mode and the terminal's notices.

    On Ctrl-C, or an instrument unreachable for longer than ``instrument.max_outage_s``
    (:class:`~aexp.campaign.InstrumentOutage`), the completed steps are already on disk;
    ``summary.json`` records the interruption (and the outage as ``reason``) and the exception
    propagates. ``aexp resume`` continues such a session.
    """
    seed = cfg.seed if seed is None else seed
    folder = Path(out)
    # everything that can be checked is checked before a previous session is deleted
    check_against(cfg, instrument.describe())
    if cfg.drift is not None:
        require_registration()  # before anything is written
    check_out_folder(folder, overwrite)
    created = not folder.exists()
    session_id = uuid.uuid4().hex[:12]
    with torch_settings(cfg.threads) as settings:
        surveyed = survey_candidates(cfg, instrument)
        writer = SessionWriter(folder, overwrite=overwrite)
        try:
            with session_log(writer.folder):
                result, status, extra = _record(cfg, instrument, surveyed, writer, seed, session_id, settings,
                                                progress, on_step, operator)
        finally:
            writer.close()
            if not (writer.folder / "manifest.json").exists():
                _remove_unstarted(writer.folder, created)  # nothing was measured
    return writer.folder, result


def _record(cfg: ExperimentConfig, instrument: Instrument, surveyed: Surveyed, writer: SessionWriter, seed: int,
            session_id: str, settings: dict[str, Any], progress: bool, on_step: StepCallback | None,
            operator: OperatorOptions | None) -> tuple[CampaignResult, str, dict[str, Any]]:
    """Embed, write the survey, candidates and manifest, run the campaign, and write ``summary.json``
    however it ends (``run_experiment``'s body, inside the session's log)."""
    log.info("run %s (config %s, seed %d) on %s: %d candidates from a %s survey", session_id, cfg.name, seed,
             surveyed.description.name, len(surveyed.candidates), "x".join(map(str, surveyed.survey.image.shape)))
    end = RunEnd()
    live = None
    try:
        with ending(end):
            t0 = time.perf_counter()
            prepared = embed(cfg, surveyed, seed, progress=progress)
            log.info("surrogate inputs ready in %.1f s: %s", time.perf_counter() - t0, prepared.feature_info)
            policy = build_policy(cfg, int(prepared.features.shape[1]), seed, prepared.device,
                                  columns=prepared.feature_info)
            writer.write_array("survey", prepared.survey.image)
            writer.write_array("candidates", prepared.candidates.positions)
            writer.write_array("pixels", prepared.candidates.pixels)
            # the manifest is written last: a folder without one never measured anything
            record = manifest(cfg, prepared, seed, session_id, settings)
            token = getattr(instrument, "lease_token", None)  # a link's lease, for resume to take back
            if isinstance(token, str):
                record = dataclasses.replace(record, lease_token=token)
            writer.write_json("manifest.json", record.to_dict())
            live = operator_for(cfg, writer.folder, session_id, prepared, instrument, operator)
            end.result = campaign(cfg, instrument, prepared, policy, writer, seed, session_id, on_step,
                                  operator=live, folder=writer.folder)
            end.status = "completed"
            finish_figure(cfg, writer.folder, prepared, end.result)
            return end.result, end.status, end.extra
    finally:
        done = len(end.result.steps) if end.result is not None else 0
        log.info("run %s ended %s after %d steps%s", session_id, end.status, done,
                 f" ({end.extra['reason']})" if "reason" in end.extra else "")
        if (writer.folder / "manifest.json").exists():
            writer.write_json("summary.json", summary(end.status, end.result, **end.extra))
        if live is not None:
            live.close(end.status)


@dataclass
class RunEnd:
    """How a run or a resume ended, for its ``summary.json`` (see :func:`ending`)."""

    status: str = "failed"
    result: CampaignResult | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@contextmanager
def ending(end: RunEnd) -> Iterator[RunEnd]:
    """Mark ``end`` interrupted on Ctrl-C or an instrument outage (whose steps and reason it keeps);
    the exception goes on. Any other exception leaves it ``failed``; the body sets ``completed``."""
    try:
        yield end
    except KeyboardInterrupt:
        end.status = "interrupted"
        raise
    except InstrumentOutage as exc:
        end.status, end.result, end.extra = "interrupted", exc.result, {"reason": str(exc)}
        raise


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
    policy: Policy | AskTellPolicy,
    recorder: Recorder,
    seed: int,
    session_id: str,
    on_step: StepCallback | None = None,
    stop_after: int | None = None,
    operator: Operator | None = None,
    *,
    registrations: Sequence[Registration] = (),
    live_from: int | None = 0,
    folder: Path | None = None,
) -> CampaignResult:
    """Run the campaign the config describes on prepared candidates (run, replay and resume alike).

    ``registrations``, ``live_from``, ``folder``: drift correction (:func:`registrar`).
    """
    drift = registrar(cfg, prepared.survey, recorded=registrations, live_from=live_from, folder=folder)
    result = build_campaign(
        cfg, instrument, prepared.candidates, prepared.features, policy, recorder, seed,
        session_id=session_id, on_step=on_step, stop_after=stop_after,
        want_final_maps=cfg.recording.figure and stop_after is None, operator=operator, drift=drift,
    ).run()
    if drift is not None:
        result.extra["registrations"] = [r.to_dict() for r in drift.history]
    return result


def operator_for(cfg: ExperimentConfig, folder: Path, session_id: str, prepared: Prepared,
                 instrument: Instrument, options: OperatorOptions | None = None) -> LiveOperator:
    """The live end of the operator's channel for a run (or the new steps of a resume)."""
    from .live.stagnation import StagnationRule

    opts = options or OperatorOptions()
    st = cfg.stopping.stagnation
    rule = StagnationRule(st.window, st.std_ratio, st.stop) if st is not None else \
        (StagnationRule() if opts.live else None)
    b = instrument.bounds
    return LiveOperator(
        folder, session_id, policy={"kind": cfg.policy.kind, "acquisition": cfg.policy.acquisition_kind},
        approve=opts.approve, approve_timeout_s=opts.approve_timeout_s,
        want_maps=opts.live or st is not None, stagnation=rule, notify=opts.notify, publish=opts.live or opts.approve,
    ).attach(prepared.candidates.positions, (b.xmin, b.xmax, b.ymin, b.ymax))


def finish_figure(cfg: ExperimentConfig, folder: Path, prepared: Prepared, result: CampaignResult) -> None:
    """Write ``session.png`` when the config asks for it (after the last step)."""
    if cfg.recording.figure:
        from .session.figures import session_figure, target_quantity

        desc = prepared.description
        target = target_quantity(cfg.target.name, cfg.target.params, desc.spectrum_axis,
                                 str(desc.extra.get("spectrum_units", "")))
        result.extra["figure"] = str(session_figure(folder, prepared.survey, prepared.candidates, result,
                                                    target=target))


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
        # the instrument's pace (docs/realtime.md): idle while waiting for decisions, distance moved
        out.update({k: result.extra[k] for k in ("instrument_idle_fraction", "travel_m", "wall_s")
                    if k in result.extra})
    out.update(extra)
    return out
