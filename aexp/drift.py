"""Re-registration: notice that the sample drifted since the survey and correct where the probe goes.

Every ``drift.resurvey_every_s`` seconds (or ``drift.resurvey_every`` steps) the campaign takes a
fresh survey, estimates its shift against the first one with scikit-image's
``phase_cross_correlation`` (sub-pixel, ``upsample_factor``; plain cross-correlation), and from then on sends candidate ``x``
to ``x + s`` (``s`` the sample's estimated displacement in metres). The estimate is always against
the first survey, so corrections never accumulate error. A registration that fails (shift beyond
``max_shift_px``, correlation of the re-aligned images below ``min_correlation``) is recorded, the
previous correction kept, and the operator warned (:class:`RegistrationWarning`).

Every registration is one line of the session's ``registrations.jsonl`` (:class:`Registration`);
replay and resume apply the recorded ones at the recorded steps, so an experiment with drift
correction replays exactly without surveying again.

Example:
    >>> est = estimate_shift(first.image, later.image, first.transform, upsample_factor=20)
    >>> est.shift_m            # (x, y) metres the sample moved
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .errors import AexpError
from .instrument import Instrument
from .session.durable import append_line
from .types import PixelTransform, Survey

__all__ = [
    "REGISTRATIONS_FILE",
    "Registration",
    "RegistrationWarning",
    "ShiftEstimate",
    "estimate_shift",
    "Registrar",
    "DriftCorrection",
    "read_registrations",
    "append_registration",
    "require_registration",
    "RegistrationUnavailable",
]

REGISTRATIONS_FILE = "registrations.jsonl"


class RegistrationWarning(UserWarning):
    """A re-registration failed; the previous correction stays in force."""


class RegistrationsError(AexpError, ValueError):
    """``registrations.jsonl`` of a session cannot be read."""


class RegistrationUnavailable(AexpError, ImportError):
    """``drift`` is configured but scikit-image (the registration routine) is not installed."""


def require_registration() -> None:
    """Raise :class:`RegistrationUnavailable` unless scikit-image's registration can be imported."""
    try:
        import skimage.registration  # noqa: F401
    except ImportError as exc:
        raise RegistrationUnavailable(
            f"the config's drift section needs scikit-image ({exc}); install it with "
            f"pip install 'aexp[drift]'") from None


@dataclass(frozen=True)
class ShiftEstimate:
    """How far a new survey is moved against the reference.

    Attributes:
        shift_px: ``(rows, cols)`` the field moved in the new survey (sub-pixel).
        shift_m: the same as an instrument displacement ``(x, y)`` in metres.
        correlation: Pearson correlation of the reference and the re-aligned new survey over
            their overlap (1: identical).
        ok: whether the estimate is accepted.
        reason: why not, when not.
    """

    shift_px: tuple[float, float]
    shift_m: tuple[float, float]
    correlation: float
    ok: bool
    reason: str = ""


def estimate_shift(
    reference: np.ndarray,
    image: np.ndarray,
    transform: PixelTransform,
    *,
    upsample_factor: int = 20,
    max_shift_px: float = 16.0,
    min_correlation: float = 0.5,
    channel: int = 0,
) -> ShiftEstimate:
    """The sample's displacement between two surveys ``C x H x W`` (or ``H x W``).

    ``image(p) ~ reference(p - d)``: ``d`` (pixels) is minus what ``phase_cross_correlation``
    returns (the shift that registers ``image`` onto ``reference``); in metres ``A d`` with ``A``
    the survey's pixel -> instrument matrix.
    """
    from scipy import ndimage
    from skimage.registration import phase_cross_correlation

    ref = _channel(reference, channel)
    new = _channel(image, channel)
    if ref.shape != new.shape:
        raise ValueError(f"surveys differ in shape: reference {ref.shape}, new {new.shape}")
    # plain cross-correlation (normalization=None): on noisy surveys the whitened ("phase") form was
    # biased by up to 0.15 px in our twins, the plain one stayed within the 1 / upsample_factor step
    register, _, _ = phase_cross_correlation(ref, new, upsample_factor=int(upsample_factor), normalization=None)
    d = -np.asarray(register, dtype=float)
    shift_m = np.asarray(transform.matrix, dtype=float) @ d
    back = ndimage.shift(new, register, order=1, mode="nearest")
    m = int(math.ceil(np.abs(d).max())) + 1
    inner = (slice(m, -m), slice(m, -m)) if 2 * m < min(ref.shape) else (slice(None), slice(None))
    a, b = ref[inner].ravel(), back[inner].ravel()
    corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0
    reason = ""
    if float(np.hypot(*d)) > max_shift_px:
        reason = f"shift {np.hypot(*d):.1f} px beyond drift.max_shift_px {max_shift_px:g}"
    elif not corr >= min_correlation:
        reason = f"correlation {corr:.4f} below drift.min_correlation {min_correlation:g}"
    return ShiftEstimate((float(d[0]), float(d[1])), (float(shift_m[0]), float(shift_m[1])), corr,
                         not reason, reason)


def _channel(image: np.ndarray, channel: int) -> np.ndarray:
    a = np.asarray(image, dtype=float)
    if a.ndim == 3:
        if not 0 <= channel < a.shape[0]:
            raise ValueError(f"drift.channel {channel} is not a channel of a {a.shape[0]}-channel survey")
        a = a[channel]
    if a.ndim != 2:
        raise ValueError(f"a survey is C x H x W or H x W, got shape {np.shape(image)}")
    return a


@dataclass
class Registration:
    """One re-registration, as ``registrations.jsonl`` records it.

    Attributes:
        step: taken before step ``step`` was decided (every earlier step was recorded).
        elapsed_s: seconds since the campaign started.
        shift_px, shift_m, correlation, ok, reason: the estimate (:class:`ShiftEstimate`).
        offset_m: the correction in force from this step on: candidate ``x`` is sent to ``x + offset_m``
            (the new estimate when ``ok``, else the previous correction).
    """

    step: int
    elapsed_s: float
    shift_px: tuple[float, float]
    shift_m: tuple[float, float]
    correlation: float
    ok: bool
    reason: str
    offset_m: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Registration:
        return cls(int(data["step"]), float(data["elapsed_s"]), _pair(data["shift_px"]), _pair(data["shift_m"]),
                   float(data["correlation"]), bool(data["ok"]), str(data.get("reason", "")),
                   _pair(data["offset_m"]))


def _pair(v: Any) -> tuple[float, float]:
    a, b = v
    return float(a), float(b)


def read_registrations(folder: str | Path) -> list[Registration]:
    """The registrations a session recorded (none if the file is absent); a torn last line is ignored."""
    path = Path(folder) / REGISTRATIONS_FILE
    if not path.exists():
        return []
    out = []
    lines = path.read_bytes().split(b"\n")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(Registration.from_dict(json.loads(line)))
        except (ValueError, KeyError, TypeError) as exc:
            if n == len(lines) or (n == len(lines) - 1 and not lines[-1]):
                break  # a torn last line: the crash came mid-write
            raise RegistrationsError(f"{path}: line {n}: {exc}") from None
    return out


def append_registration(folder: str | Path, record: Registration) -> None:
    """Append one record to ``registrations.jsonl`` and fsync it before the next command is sent."""
    append_line(Path(folder) / REGISTRATIONS_FILE, json.dumps(record.to_dict()).encode() + b"\n")


class DriftCorrection(Protocol):
    """The campaign's seam for drift: when to re-register, and the correction in force.

    ``position = candidate_position + offset_at(step)`` for every command sent.

    Example:
        >>> if corr.due(step, elapsed_s):
        ...     corr.register(instrument, step, elapsed_s)
        >>> send(candidate + np.asarray(corr.offset_at(step)))
    """

    offset_m: tuple[float, float]

    def due(self, step: int, elapsed_s: float) -> bool: ...

    def register(self, instrument: Instrument, step: int, elapsed_s: float) -> Registration: ...

    def offset_at(self, step: int) -> tuple[float, float]: ...


class Registrar:
    """Re-registers against the first survey on a schedule, and replays recorded registrations.

    Args:
        reference: the first survey (the candidates were cut from it).
        every_s / every_steps: the schedule (either or both; at least one).
        recorded: registrations a session recorded: applied at their steps, no survey taken.
        live_from: the first step at which registrations may be taken live (replay: never, i.e.
            ``None``; resume: the number of recorded steps; run: 0).
        sink: where each new record goes (the session's file), durable on return.
        predict: feed-forward between registrations (:meth:`offset_at`); off: the last correction holds.
        upsample_factor, max_shift_px, min_correlation, channel: see :func:`estimate_shift`.
    """

    def __init__(
        self,
        reference: Survey,
        *,
        every_s: float | None = None,
        every_steps: int | None = None,
        recorded: Sequence[Registration] = (),
        live_from: int | None = 0,
        sink: Callable[[Registration], None] | None = None,
        predict: bool = False,
        upsample_factor: int = 20,
        max_shift_px: float = 16.0,
        min_correlation: float = 0.5,
        channel: int = 0,
    ) -> None:
        if every_s is None and every_steps is None:
            raise ValueError("drift needs resurvey_every_s or resurvey_every")
        if live_from is not None:  # a replay applies records and never registers
            require_registration()
        self.reference = reference
        self.every_s, self.every_steps = every_s, every_steps
        self.recorded = sorted(recorded, key=lambda r: r.step)
        self.live_from = live_from
        self.sink = sink
        self.predict = predict
        self.options = {"upsample_factor": upsample_factor, "max_shift_px": max_shift_px,
                        "min_correlation": min_correlation, "channel": channel}
        self.offset_m: tuple[float, float] = (0.0, 0.0)
        self.history: list[Registration] = []
        self._last_step, self._last_s = 0, 0.0
        # a resumed run re-registers at once: the sample went on drifting while the run was down
        self._catch_up = bool(live_from)

    def due(self, step: int, elapsed_s: float) -> bool:
        """Whether to register before deciding ``step`` (recorded ones at their steps; live on schedule)."""
        if self.recorded:
            return self.recorded[0].step <= step
        if self.live_from is None or step < self.live_from:
            return False
        if self._catch_up:
            return True
        if step == self._last_step:
            return False
        if self.every_steps is not None and step - self._last_step >= self.every_steps:
            return True
        return self.every_s is not None and elapsed_s - self._last_s >= self.every_s

    def register(self, instrument: Instrument, step: int, elapsed_s: float) -> Registration:
        """Apply the next recorded registration, or survey and estimate one (then record it)."""
        if self.recorded:
            record = self.recorded.pop(0)
        else:
            self._catch_up = False
            est = estimate_shift(self.reference.image, instrument.survey().image, self.reference.transform,
                                 **self.options)  # type: ignore[arg-type]
            offset = est.shift_m if est.ok else self.offset_m
            record = Registration(step, float(elapsed_s), est.shift_px, est.shift_m, est.correlation, est.ok,
                                  est.reason, offset)
            if self.sink is not None:
                self.sink(record)
            if not est.ok:
                warnings.warn(RegistrationWarning(
                    f"re-registration before step {step} failed ({est.reason}); keeping the correction "
                    f"({offset[0]:.3g}, {offset[1]:.3g}) m"), stacklevel=2)
        self.offset_m = record.offset_m
        self.history.append(record)
        self._last_step, self._last_s = step, float(elapsed_s)
        return record

    def offset_at(self, step: int) -> tuple[float, float]:
        """The correction for the command of step ``step``.

        Without ``predict``: ``offset_m``, the last accepted estimate. With it, that estimate moved on at
        the drift rate per step of the last two accepted registrations ``(k_i, s_i)``, ``(k_j, s_j)``
        (the first survey counts as ``(0, 0)``): ``s_j + (s_j - s_i) (step - k_j) / (k_j - k_i)``. The
        sample keeps drifting between surveys; a constant rate is what one survey pair can tell, and
        it is a function of the recorded registrations alone, so replay and resume send the same
        positions.
        """
        if not self.predict:
            return self.offset_m
        points = [(0, (0.0, 0.0))] + [(r.step, r.shift_m) for r in self.history if r.ok]
        (k_j, s_j) = points[-1]
        earlier = [(k, s) for k, s in points[:-1] if k < k_j]
        if not earlier or step <= k_j:
            return self.offset_m
        k_i, s_i = earlier[-1]
        a = (step - k_j) / (k_j - k_i)
        return (s_j[0] + a * (s_j[0] - s_i[0]), s_j[1] + a * (s_j[1] - s_i[1]))
