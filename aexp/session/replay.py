"""Trusting a session: re-run its decisions on its own measurements, and resume it after a crash.

- :func:`verify_session` (``aexp replay FOLDER --verify``) rebuilds the experiment from the manifest
  (config, seed, torch thread count) and runs the same loop with a :class:`SessionInstrument` that
  answers every measurement with the recorded one. Every decision must be the recorded one: the same
  candidate, phase and status at every step, and the model's numbers within :data:`TOLERANCE`.
- :func:`resume_session` (``aexp resume FOLDER``) replays the complete steps the same way, which
  rebuilds exactly the model state the run had (the surrogate is refitted, warm-started, at each
  step from the recorded data), then goes on with the live instrument named in the manifest up to
  the recorded budget, appending to the same folder.

Both need the recorded spectra (``recording.spectra: true``, the default): the target of a step is
recomputed from its spectrum, as in the original run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ExperimentConfig, load_config
from ..drift import read_registrations
from ..errors import AexpError
from ..instrument import (
    Instrument,
    InstrumentError,
    InstrumentTimeout,
    MeasurementFailed,
    OutOfBounds,
    load_instrument,
)
from ..live.channel import RecordedOperator, ResumedOperator
from ..loop import (
    CampaignResult,
    Prepared,
    RunEnd,
    StepCallback,
    campaign,
    ending,
    finish_figure,
    operator_for,
    summary,
)
from ..types import (
    Bounds,
    InstrumentDescription,
    Measurement,
    Step,
    Survey,
)
from .log import session_log
from .manifest import SessionError
from .rebuild import differences, rebuild, recorded_config, version_warnings
from .store import SessionLock, SessionReader, SessionWriter, write_json

log = logging.getLogger("aexp.resume")

__all__ = [
    "TOLERANCE",
    "NotRecorded",
    "ReplayDivergence",
    "ResumeOutcome",
    "SessionInstrument",
    "VerifyReport",
    "compare_steps",
    "verify_session",
    "resume_session",
    "version_warnings",
]

#: How close a replayed model value (acquisition, predicted mean and std, target) must be to the
#: recorded one: ``|replayed - recorded| <= atol + rtol * |recorded|``. Candidate index, phase and
#: status must be equal. With the recorded thread count on the same machine the values agree bit for
#: bit; the tolerance leaves room for another CPU's floating-point kernels.
TOLERANCE = {"rtol": 1e-6, "atol": 1e-9}
_VALUES = ("target", "acquisition", "predicted_mean", "predicted_std")
_EXACT = ("index", "phase", "status", "pending", "rescored")
_ERRORS = {c.__name__: c for c in (MeasurementFailed, InstrumentTimeout, OutOfBounds, InstrumentError)}


class NotRecorded(AexpError, ValueError):
    """A replay was asked for a measurement the record does not hold."""


class ReplayDivergence(AexpError, RuntimeError):
    """A replayed decision differs from the recorded one.

    Attributes:
        step: the first diverging step.
        field: what differs (``index``, ``acquisition``, ...).
        replayed, recorded: the two values.
    """

    def __init__(self, step: int, field: str, replayed: Any, recorded: Any, detail: str = "") -> None:
        self.step, self.field, self.replayed, self.recorded = step, field, replayed, recorded
        super().__init__(
            f"step {step} diverges in {field}: the replay chose {replayed!r}, the record has "
            f"{recorded!r}{detail}"
        )


def _position_key(position: tuple[float, float]) -> tuple[int, int]:
    # picometres: the same candidate position computed twice may differ in the last bit
    return (round(float(position[0]) * 1e12), round(float(position[1]) * 1e12))


class SessionInstrument:
    """An :class:`~aexp.instrument.Instrument` that answers with what a session recorded.

    ``survey()`` is ``survey.npy``; ``measure(position)`` returns the spectrum recorded at that
    position, or raises the recorded failure. Only measured positions exist: any other raises
    :class:`NotRecorded`.
    """

    def __init__(self, reader: SessionReader) -> None:
        self.reader = reader
        man = reader.manifest
        self._description = man.instrument
        self._transform = man.survey.transform
        self._channels = man.survey.channels
        self._by_position: dict[tuple[int, int], list[Step]] = {}
        for step in reader.steps:
            self._by_position.setdefault(_position_key(step.position), []).append(step)
        self.served = 0

    @property
    def bounds(self) -> Bounds:
        return self._description.bounds

    def describe(self) -> InstrumentDescription:
        return self._description

    def survey(self) -> Survey:
        return Survey(self.reader.array("survey"), self._transform, self._channels)

    def has(self, position: tuple[float, float]) -> bool:
        """Whether a recorded measurement at ``position`` is still unserved."""
        return bool(self._by_position.get(_position_key(position)))

    def measure(self, position: tuple[float, float], command_id: str = "") -> Measurement:
        queue = self._by_position.get(_position_key(position))
        if not queue:
            raise NotRecorded(
                f"{self.reader.folder} holds no measurement at (x={position[0]:.6g} m, "
                f"y={position[1]:.6g} m); a session replays only its {len(self.reader.steps)} "
                f"recorded steps"
            )
        step = queue.pop(0)
        self.served += 1
        spectrum = self.reader.spectrum(step)
        if spectrum is None:
            if step.status == "ok":
                raise NotRecorded(
                    f"{self.reader.folder}: step {step.step} has no recorded spectrum "
                    f"(recording.spectra was off), so its measurement cannot be replayed"
                )
            name, _, message = (step.error or "InstrumentError: failed").partition(": ")
            raise _ERRORS.get(name, InstrumentError)(message)
        axes = self.reader.manifest.signal_axes
        return Measurement(
            spectrum=spectrum,
            axis=axes[0],
            position=(float(position[0]), float(position[1])),
            duration_s=float(step.timings.get("instrument_s", 0.0)),
            metadata={"replayed_step": step.step},
            axes=axes if len(axes) > 1 else None,
        )


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= TOLERANCE["atol"] + TOLERANCE["rtol"] * abs(b)


def compare_steps(replayed: Step, recorded: Step) -> ReplayDivergence | None:
    """The first difference between a replayed and a recorded step (``None`` if they agree)."""
    for name in _EXACT:
        a, b = getattr(replayed, name), getattr(recorded, name)
        if a != b:
            detail = ""
            if name == "index":
                detail = (f" (replayed acquisition {replayed.acquisition!r}, recorded "
                          f"{recorded.acquisition!r})")
            return ReplayDivergence(recorded.step, name, a, b, detail)
    for name in _VALUES:
        a, b = getattr(replayed, name), getattr(recorded, name)
        if (a is None) != (b is None) or (a is not None and not _close(a, b)):
            return ReplayDivergence(recorded.step, name, a, b,
                                    f" (tolerance rtol {TOLERANCE['rtol']:g}, atol {TOLERANCE['atol']:g})")
    a, b = replayed.weights, recorded.weights  # the surrogate's group weights (None before they existed)
    if (a is None) != (b is None) or (a is not None and b is not None and (
            set(a) != set(b) or not all(_close(float(a[k]), float(b[k])) for k in b))):
        return ReplayDivergence(recorded.step, "weights", a, b,
                                f" (tolerance rtol {TOLERANCE['rtol']:g}, atol {TOLERANCE['atol']:g})")
    return None


def _deviation(replayed: Step, recorded: Step) -> dict[str, float]:
    out = {}
    for name in _VALUES:
        a, b = getattr(replayed, name), getattr(recorded, name)
        if a is not None and b is not None:
            out[name] = abs(a - b) / max(abs(b), 1e-300) if b else abs(a)
    return out


class _Checker:
    """A recorder that checks each replayed step against the record instead of writing it.

    Steps past the record go to ``writer`` (resume), opened on the first such step.
    """

    def __init__(self, recorded: list[Step], reader: SessionReader | None = None,
                 lock: SessionLock | None = None) -> None:
        self.recorded = recorded
        self.reader = reader
        self.lock = lock
        self.writer: SessionWriter | None = None
        self.checked = 0
        self.max_deviation: dict[str, float] = {name: 0.0 for name in _VALUES}
        self.folder = reader.folder if reader is not None else None

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        raise SessionError("a replay never rewrites the session's files")

    def write_array(self, name: str, array: np.ndarray) -> None:
        raise SessionError("a replay never rewrites the session's files")

    def append_step(self, step: Step, spectrum: np.ndarray | None = None) -> Step:
        k = step.step
        if k < len(self.recorded):
            recorded = self.recorded[k]
            problem = compare_steps(step, recorded)
            if problem is not None:
                raise problem
            for name, dev in _deviation(step, recorded).items():
                self.max_deviation[name] = max(self.max_deviation[name], dev)
            step.spectrum_row = recorded.spectrum_row
            self.checked += 1
            return step
        if self.reader is None or self.lock is None:
            raise ReplayDivergence(k, "length", f"a step {k}", f"{len(self.recorded)} steps")
        if self.writer is None:
            self.writer = SessionWriter.append_to(self.reader, self.lock)
        return self.writer.append_step(step, spectrum)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@dataclass
class VerifyReport:
    """Outcome of a successful ``replay --verify``.

    Attributes:
        steps: steps checked (all complete steps of the session).
        max_deviation: largest relative deviation seen per value (0.0 when bit-identical).
        warnings: version or embedding differences that did not change a decision.
        dropped: what the reader ignored (torn tail, truncated rows).
    """

    steps: int
    max_deviation: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def verify_session(
    folder: str | Path, progress: bool = False, on_step: StepCallback | None = None
) -> VerifyReport:
    """Re-run every recorded decision on the recorded measurements (see the module docstring).

    Raises:
        ReplayDivergence: at the first step whose decision differs from the record.
        SessionError: the folder is not a readable session.
    """
    reader = SessionReader(folder)
    if not reader.steps:
        raise SessionError(f"{reader.folder}: no complete step to verify"
                           + (f" ({'; '.join(reader.dropped)})" if reader.dropped else ""))
    cfg = recorded_config(reader).with_overrides(**{"stopping.wall_time_s": None})
    instrument = SessionInstrument(reader)
    checker = _Checker(reader.steps)
    with rebuild(reader, instrument, config=cfg, progress=progress) as r:
        result = campaign(cfg, instrument, r.prepared, r.policy, checker, r.seed, r.session_id,
                          on_step, stop_after=len(reader.steps), operator=RecordedOperator.of(reader.folder),
                          registrations=read_registrations(reader.folder), live_from=None)
    if len(result.steps) != len(reader.steps):
        k = len(result.steps)
        raise ReplayDivergence(k, "length", f"stop after {k} steps ({result.stop_reason})",
                               f"{len(reader.steps)} steps")
    return VerifyReport(len(reader.steps), checker.max_deviation, r.warnings, list(reader.dropped))


class _Resumed:
    """The recorded measurements first (they are replayed), then the live instrument."""

    def __init__(self, recorded: SessionInstrument, live: Instrument) -> None:
        self.recorded, self.live = recorded, live

    @property
    def bounds(self) -> Bounds:
        return self.live.bounds

    def describe(self) -> InstrumentDescription:
        return self.live.describe()

    def survey(self) -> Survey:
        return self.live.survey()

    def measure(self, position: tuple[float, float], command_id: str = "") -> Measurement:
        if self.recorded.has(position):
            return self.recorded.measure(position, command_id)
        return self.live.measure(position, command_id)


def _check_config(cfg: ExperimentConfig, config_path: Path | None) -> None:
    """A config given to ``resume`` must be the recorded one (its budget is always the recorded one)."""
    if config_path is None:
        return
    given = load_config(config_path).with_overrides(**{"stopping.max_steps": cfg.stopping.max_steps})
    diff = differences(given.to_dict(), cfg.to_dict())
    if diff:
        raise SessionError(
            f"{config_path} no longer matches the config recorded in the session: {', '.join(diff)} "
            f"differ; resume continues the recorded experiment only (nothing was written)"
        )


def _check_instrument(reader: SessionReader, instrument: Instrument, prepared: Prepared,
                      survey: bool = True) -> None:
    diff = differences(instrument.describe().to_dict(), reader.manifest.instrument.to_dict())
    if diff:
        raise SessionError(
            f"the instrument no longer matches the one recorded in {reader.folder}: "
            f"{', '.join(diff)} differ (nothing was written)"
        )
    if survey and not np.array_equal(prepared.survey.image, reader.array("survey")):
        raise SessionError(
            f"the instrument's survey differs from {reader.folder}/survey.npy: the sample or its "
            f"position changed, so the recorded decisions no longer apply (nothing was written)"
        )


@dataclass
class ResumeOutcome:
    """What ``resume`` did: ``replayed`` recorded steps verified, ``new`` steps measured, and what the
    reader ``recovered`` from a crash (a torn record ignored, bytes moved to ``recovered-<n>.bin``)."""

    folder: Path
    replayed: int
    new: int
    result: CampaignResult | None
    warnings: list[str]
    recovered: list[str] = field(default_factory=list)


def resume_session(
    folder: str | Path,
    *,
    config_path: Path | None = None,
    instrument: Instrument | None = None,
    progress: bool = False,
    on_step: StepCallback | None = None,
) -> ResumeOutcome:
    """Continue an interrupted session up to its recorded budget (see the module docstring).

    Args:
        folder: the session.
        config_path: optional YAML the user expects to be running; must match the recorded config.
        instrument: the live instrument; by default the one the manifest names, with its seed.

    Raises:
        SessionError: bad folder, a config or instrument that no longer matches the record.
        ReplayDivergence: replaying the recorded steps did not reproduce them (nothing is written).
    """
    lock = SessionLock(Path(folder)) if Path(folder).is_dir() else None  # before anything is read
    try:
        return _resume(folder, lock, config_path, instrument, progress, on_step)
    finally:
        if lock is not None:
            lock.release()


def _resume(folder, lock, config_path, instrument, progress, on_step) -> ResumeOutcome:
    reader = SessionReader(folder)
    cfg = recorded_config(reader)
    _check_config(cfg, config_path)
    recorded = reader.steps
    previous = reader.summary or {}
    if previous.get("status") == "completed" or len(recorded) >= cfg.budget:
        return ResumeOutcome(reader.folder, 0, 0, None, ["nothing to resume: the run has ended"])
    with session_log(reader.folder):  # only a resume that does something writes to the session
        outcome = _continue(reader, cfg, recorded, previous, lock, instrument, progress, on_step)
        log.info("resumed: %d recorded steps replayed, %d new%s", outcome.replayed, outcome.new,
                 "".join(f"; recovered: {r}" for r in outcome.recovered))
    return outcome


def _continue(reader, cfg, recorded, previous, lock, instrument, progress, on_step) -> ResumeOutcome:
    if instrument is None:
        options = dict(cfg.instrument.options)
        if reader.manifest.lease_token:  # take the link's lease back at once (the driver knows the option)
            options["lease_token"] = reader.manifest.lease_token
        instrument = load_instrument(cfg.instrument.driver, options, seed=reader.manifest.seed)
    live = instrument
    checker = _Checker(recorded, reader, lock)
    end = RunEnd()
    warnings: list[str] = []
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    try:
        with ending(end):
            # with drift correction the sample may have moved since the survey: the candidates come from
            # the recorded survey, and the registrar re-registers the live field before the first new step
            source = SessionInstrument(reader) if cfg.drift is not None else live
            with rebuild(reader, source, config=cfg, progress=progress,
                         check=lambda prepared: _check_instrument(reader, live, prepared,
                                                                  survey=cfg.drift is None)) as r:
                warnings = r.warnings
                mixed = _Resumed(SessionInstrument(reader), live)
                # the recorded operator actions first, then the channel (commands queued before a crash
                # apply now)
                operator = ResumedOperator(RecordedOperator.of(reader.folder),
                                           operator_for(cfg, reader.folder, r.session_id, r.prepared, live),
                                           len(recorded))
                end.result = campaign(cfg, mixed, r.prepared, r.policy, checker, r.seed, r.session_id, on_step,
                                      operator=operator, registrations=read_registrations(reader.folder),
                                      live_from=len(recorded), folder=reader.folder)
            end.status = "completed"
            finish_figure(cfg, reader.folder, r.prepared, end.result)
    finally:
        checker.close()
        if checker.writer is not None or end.result is not None:
            resumes = list(previous.get("resumes", []))
            resumes.append({"started": started, "from_step": len(recorded), "dropped": reader.dropped})
            write_json(reader.folder / "summary.json", summary(end.status, end.result, resumes=resumes,
                                                                **end.extra))
    result = end.result
    new = len(result.steps) - len(recorded) if result is not None else 0
    return ResumeOutcome(reader.folder, len(recorded), new, result, warnings, list(reader.dropped))

