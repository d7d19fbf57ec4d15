"""Pieces shared by the simulated instruments: keyed noise, a simulated clock, typed options.

Noise in a simulator is never drawn from one long shared stream. Each draw gets its own generator,
keyed by *what* is simulated: a kind (``"measure"``, ``"survey"``, ...) and a few integers such as
a quantised position and a repeat count. The same measurement therefore gets the same noise
whatever was measured before it, which is what makes a recorded run replay decision by decision.

Example:
    >>> rng = rng_for(7, "measure", *position_key((3e-9, 5e-9)), 0)
    >>> clock = SimClock()
    >>> clock.advance(0.05)
    0.05
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aexp.instrument import check_position
from aexp.types import Bounds, InstrumentDescription, PixelTransform, SpectrumAxis, Survey

__all__ = [
    "check_seed",
    "as_positions",
    "stable_hash",
    "rng_for",
    "position_key",
    "PICOMETRE",
    "SimClock",
    "RealClock",
    "TwinClock",
    "make_clock",
    "SampleDrift",
    "SimOptions",
    "options_error",
    "gaussian_blur",
    "PlacementOptions",
    "RealismOptions",
    "ProbePlacement",
    "DoseLedger",
]

PICOMETRE = 1e-12
_WORD = 1 << 32
_MAX_U64 = 1 << 64


def stable_hash(kind: str) -> int:
    """A 64-bit hash of ``kind`` that is the same in every process.

    Python's ``hash(str)`` is salted per process, so it cannot key reproducible noise.
    """
    return int.from_bytes(hashlib.blake2b(kind.encode("utf-8"), digest_size=8).digest(), "little")


def _zigzag(n: int) -> int:
    """Map any integer to a non-negative one, injectively (0, -1, 1, -2, ... -> 0, 1, 2, 3, ...).

    ``SeedSequence`` takes only non-negative entropy, and positions may be negative.
    """
    return 2 * n if n >= 0 else -2 * n - 1


def _u64_words(n: int, what: str) -> list[int]:
    """Split ``0 <= n < 2**64`` into two 32-bit words (fixed width, so keys cannot alias)."""
    if not 0 <= n < _MAX_U64:
        raise ValueError(f"{what} must fit in 64 bits after sign folding, got {n}")
    return [n % _WORD, n // _WORD]


def rng_for(seed: int, kind: str, *ints: int) -> np.random.Generator:
    """A generator that depends only on ``(seed, kind, *ints)``.

    Every component is written as fixed-width words and the number of ``ints`` is part of the key,
    so ``rng_for(s, k)``, ``rng_for(s, k, 0)`` and ``rng_for(s, k, 0, 0)`` are different streams
    (``SeedSequence`` on its own pads short entropy with zeros, which would make them equal).

    Args:
        seed: the experiment seed, ``0 <= seed < 2**64``.
        kind: what the noise is for, e.g. ``"measure"``.
        ints: further keys (quantised positions, repeat counts, frame numbers); may be negative.
    """
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    words = _u64_words(seed, "seed") + _u64_words(stable_hash(kind), "kind hash") + [len(ints)]
    for i in ints:
        words += _u64_words(_zigzag(int(i)), "key")
    return np.random.default_rng(words)


def check_seed(seed: Any, name: str) -> int:
    """``seed`` as an int, or ValueError naming the instrument if it is not an integer >= 0."""
    if int(seed) != seed or seed < 0:
        raise ValueError(f"{name}: seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def as_positions(positions: Any) -> np.ndarray:
    """Beam positions as a float ``N x 2`` (x, y) array, or ValueError naming the shape."""
    p = np.asarray(positions, dtype=float)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"positions must be N x 2 (x, y), got shape {p.shape}")
    return p


def position_key(position: Iterable[float], unit_m: float = PICOMETRE) -> tuple[int, ...]:
    """Quantise a position in metres to integers (picometres by default) to key noise by place.

    Two requests for "the same" position that differ only by floating-point rounding of a pixel
    transform fall on the same key.

    Raises:
        ValueError: a coordinate is not finite.
    """
    coords = [float(v) for v in position]
    if not all(math.isfinite(v) for v in coords):
        raise ValueError(f"position {coords} is not finite")
    return tuple(int(round(v / unit_m)) for v in coords)


@dataclass
class SimClock:
    """Simulated time in seconds; advancing it never sleeps.

    Example:
        >>> c = SimClock(); c.advance(0.5); c.now_s
        0.5
    """

    now_s: float = 0.0

    def advance(self, dt_s: float) -> float:
        """Move the clock forward by ``dt_s >= 0`` seconds and return the new time."""
        dt_s = float(dt_s)
        if not (math.isfinite(dt_s) and dt_s >= 0.0):
            raise ValueError(f"a simulated clock only moves forward, got dt_s={dt_s}")
        self.now_s += dt_s
        return self.now_s


class TwinClock(Protocol):
    """A twin's time: ``now_s`` seconds since the twin was made; ``advance`` spends ``dt_s`` of it.

    Example:
        >>> clock = make_clock("sim"); clock.advance(0.5)
        0.5
    """

    @property
    def now_s(self) -> float: ...

    def advance(self, dt_s: float) -> float: ...


class RealClock:
    """The wall clock: ``advance(dt)`` sleeps ``dt`` seconds (dwell, stage moves), so a twin runs at an
    instrument's pace for benchmarks and demos. ``now_s`` counts from construction, decisions included.

    Example:
        >>> c = RealClock(); c.advance(0.01) >= 0.01
        True
    """

    def __init__(self) -> None:
        self._t0 = time.monotonic()

    @property
    def now_s(self) -> float:
        return time.monotonic() - self._t0

    def advance(self, dt_s: float) -> float:
        dt_s = float(dt_s)
        if not (math.isfinite(dt_s) and dt_s >= 0.0):
            raise ValueError(f"a clock only moves forward, got dt_s={dt_s}")
        time.sleep(dt_s)
        return self.now_s


def make_clock(kind: str) -> TwinClock:
    """``"sim"`` (a :class:`SimClock`, never sleeps) or ``"real"`` (a :class:`RealClock`)."""
    if kind == "sim":
        return SimClock()
    if kind == "real":
        return RealClock()
    raise ValueError(f"clock must be 'sim' or 'real', got {kind!r}")


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def options_error(exc: ValidationError, owner: str, known: Iterable[str] = ()) -> ValueError:
    """Turn a pydantic ``ValidationError`` into a ``ValueError`` naming each option at fault.

    Example message: ``"plasmonic: invalid option(s): dose: Input should be greater than 0
    (got -1.0); colour: unknown option (known: dose, n_channels, ...)"``.
    """
    known_list = ", ".join(sorted(known)) or "none"
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(options)"
        if err["type"] == "extra_forbidden":
            problems.append(f"{where}: unknown option (known: {known_list})")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {msg} (got {_short_repr(err.get('input'))})")
    return ValueError(f"{owner}: invalid option(s): " + "; ".join(problems))


class SimOptions(BaseModel):
    """Base class of a simulator's options: typed, immutable, unknown keys rejected.

    Subclasses declare fields with units in the name (``pixel_size_m``) and a ``description``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def parse(cls, options: Mapping[str, Any], owner: str) -> Self:
        """Validate ``options``; raise ``ValueError`` naming the bad option(s) on failure."""
        try:
            return cls.model_validate(dict(options))
        except ValidationError as exc:
            raise options_error(exc, owner, cls.model_fields) from None


def gaussian_blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Separable Gaussian blur of an ``H x W`` image, mirrored at the borders.

    Written in numpy so that a simulator needs nothing beyond the package's own dependencies.
    ``sigma_px <= 0`` returns a copy.
    """
    out = np.array(image, dtype=float)
    if sigma_px <= 0:
        return out
    radius = max(1, int(math.ceil(4.0 * sigma_px)))
    taps = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (taps / sigma_px) ** 2)
    kernel /= kernel.sum()
    for axis in (0, 1):
        # Mirror padding keeps the mean level at the borders (zero padding would darken them).
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="symmetric")
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for k, w in enumerate(kernel):
            acc += w * np.take(padded, np.arange(k, k + n), axis=axis)
        out = acc
    return out


# --- realism: where the probe really lands, and what earlier measurements did to the sample -----


class PlacementOptions(SimOptions):
    """Where the probe lands: scan drift and placement error, off (0) by default.

    The placement error is keyed on (seed, position, repeat); drift follows the simulated clock,
    because that is what drift does.
    """

    drift_offset_m: float = Field(
        0.0, ge=0, description="scan drift between the survey and spectroscopy (m); direction from the seed"
    )
    drift_rate_m_per_s: float = Field(
        0.0, ge=0, description="further drift per second of simulated time (m/s); direction from the seed"
    )
    probe_error_m: float = Field(0.0, ge=0, description="std of the probe placement error per axis (m)")
    clock: Literal["sim", "real"] = Field(
        "sim", description="'sim': simulated time, never sleeps (tests); 'real': dwell and moves sleep (demos)"
    )
    stage_speed_m_s: float | None = Field(
        None, gt=0, description="probe/stage speed (m/s) for the time a move takes; null: moves take no time"
    )
    settle_s: float = Field(0.0, ge=0, description="settle time after each move (s)")
    survey_time_s: float = Field(0.0, ge=0, description="time one survey takes (s)")
    drift_nm_per_min: float = Field(
        0.0, ge=0, description="constant-velocity sample drift (nm/min) from the twin's start; direction from the seed"
    )
    drift_walk_nm_per_sqrt_min: float = Field(
        0.0, ge=0, description="random-walk sample drift: std per axis after one minute (nm), seeded"
    )


class RealismOptions(PlacementOptions):
    """Placement artefacts plus measurement-induced sample change (damage), all off by default.

    Damage follows the measurements made so far (a sum of footprints, so not their order).
    """

    damage_radius_m: float = Field(
        0.0, ge=0, description="reach of the sample change a measurement causes (m); 0 disables damage"
    )


def _unit_vector(seed: int, kind: str) -> np.ndarray:
    angle = rng_for(seed, kind).uniform(0.0, 2.0 * math.pi)
    return np.array([math.cos(angle), math.sin(angle)])


_WALK_STEP_S = 1.0
_WALK_BLOCK = 1024


class SampleDrift:
    """How far the sample has moved since the twin started: constant velocity plus a random walk.

    ``s(t) = v t u + W(t)`` (metres, x y), ``u`` a unit vector from the seed, ``W`` a Gaussian random
    walk on a 1 s grid (std ``sigma sqrt(t)`` per axis, linear between grid points), its increments
    keyed on (seed, block), so ``s`` is a fixed function of ``t`` for a seed.

    Example:
        >>> d = SampleDrift(seed=1, speed_m_s=2e-9 / 60, walk_m_per_sqrt_s=0.0)
        >>> float(np.hypot(*d.at(60.0)))     # 2 nm after a minute
        2e-09
    """

    def __init__(self, seed: int, speed_m_s: float = 0.0, walk_m_per_sqrt_s: float = 0.0) -> None:
        self.seed = int(seed)
        self.speed_m_s = float(speed_m_s)
        self.walk_m_per_sqrt_s = float(walk_m_per_sqrt_s)
        self._direction = _unit_vector(self.seed, "sample-drift")
        self._walk = np.zeros((1, 2))  # walk at grid points 0, 1, 2, ... s
        self._lock = threading.Lock()  # a survey (main thread) and a measurement (worker) may both ask

    @classmethod
    def from_options(cls, seed: int, opts: PlacementOptions) -> SampleDrift | None:
        """The options' drift, or ``None`` when both terms are 0."""
        if opts.drift_nm_per_min == 0 and opts.drift_walk_nm_per_sqrt_min == 0:
            return None
        return cls(seed, opts.drift_nm_per_min * 1e-9 / 60.0, opts.drift_walk_nm_per_sqrt_min * 1e-9 / math.sqrt(60.0))

    def _walk_at(self, t: float) -> np.ndarray:
        if self.walk_m_per_sqrt_s == 0:
            return np.zeros(2)
        k = int(math.floor(t / _WALK_STEP_S))
        with self._lock:
            while len(self._walk) <= k + 1:
                block = (len(self._walk) - 1) // _WALK_BLOCK
                steps = rng_for(self.seed, "drift-walk", block).normal(
                    0.0, self.walk_m_per_sqrt_s * math.sqrt(_WALK_STEP_S), size=(_WALK_BLOCK, 2))
                self._walk = np.concatenate([self._walk, self._walk[-1] + np.cumsum(steps, axis=0)])
            a, b = self._walk[k], self._walk[k + 1]
        frac = t / _WALK_STEP_S - k
        return a + frac * (b - a)

    def at(self, t_s: float) -> np.ndarray:
        """Sample displacement ``2`` (x, y) in metres at twin time ``t_s >= 0``."""
        t = max(0.0, float(t_s))
        return self.speed_m_s * t * self._direction + self._walk_at(t)


@dataclass(frozen=True)
class ProbePlacement:
    """Where the probe lands when ``position`` is asked for: drift plus a placement error.

    ``actual = requested + drift_offset u1 + drift_rate t u2 - s(t) + e``, with unit vectors ``u1``,
    ``u2`` drawn from the seed, ``t`` the twin's clock, ``s`` the sample's own drift
    (:class:`SampleDrift`: the probe lands on the sample point that sat at ``requested - s`` when the
    survey was taken) and ``e ~ N(0, probe_error^2 I)`` keyed on (seed, position, repeat).

    Example:
        >>> ProbePlacement.from_options(7, opts).actual((1e-9, 2e-9), clock_s=0.5, repeat=0)
    """

    seed: int
    drift_offset_m: float = 0.0
    drift_rate_m_per_s: float = 0.0
    probe_error_m: float = 0.0
    sample: SampleDrift | None = field(default=None, compare=False)

    @classmethod
    def from_options(cls, seed: int, opts: PlacementOptions) -> ProbePlacement:
        return cls(seed, opts.drift_offset_m, opts.drift_rate_m_per_s, opts.probe_error_m,
                   SampleDrift.from_options(seed, opts))

    def sample_drift_m(self, clock_s: float) -> np.ndarray:
        """The sample's displacement ``2`` (x, y) m at ``clock_s`` (zeros without sample drift)."""
        return np.zeros(2) if self.sample is None else self.sample.at(clock_s)

    def drift_m(self, clock_s: float) -> np.ndarray:
        """Drift ``2`` (x, y) in metres at simulated time ``clock_s``."""
        out = np.zeros(2)
        if self.drift_offset_m > 0:
            out += self.drift_offset_m * _unit_vector(self.seed, "drift-offset")
        if self.drift_rate_m_per_s > 0:
            out += self.drift_rate_m_per_s * float(clock_s) * _unit_vector(self.seed, "drift-rate")
        return out

    def actual(self, position: Iterable[float], clock_s: float, repeat: int) -> tuple[float, float]:
        """The (x, y) in metres that is really probed for the requested ``position``."""
        xy = np.array([float(v) for v in position])
        shifted = xy + self.drift_m(clock_s) - self.sample_drift_m(clock_s)
        if self.probe_error_m > 0:
            rng = rng_for(self.seed, "probe-error", *position_key(xy), int(repeat))
            shifted = shifted + rng.normal(0.0, self.probe_error_m, size=2)
        return float(shifted[0]), float(shifted[1])


class DoseLedger:
    """Exposure accumulated by the sample: each measurement leaves a Gaussian footprint.

    ``exposure(p) = sum_k amount_k exp(-|p - q_k|^2 / (2 radius^2))`` over the measured places
    ``q_k``. A sum, so the state after a set of measurements does not depend on their order.

    Example:
        >>> ledger = DoseLedger(radius_m=2e-10); ledger.deposit((0.0, 0.0))
        >>> ledger.exposure(np.array([[0.0, 0.0]]))
        array([1.])
    """

    def __init__(self, radius_m: float) -> None:
        if not radius_m > 0:
            raise ValueError(f"a dose footprint needs radius_m > 0, got {radius_m}")
        self.radius_m = float(radius_m)
        self._places: list[tuple[float, float]] = []
        self._amounts: list[float] = []

    def deposit(self, position: Iterable[float], amount: float = 1.0) -> None:
        x, y = (float(v) for v in position)
        self._places.append((x, y))
        self._amounts.append(float(amount))

    def exposure(self, sites: np.ndarray) -> np.ndarray:
        """Accumulated exposure ``N`` at ``sites`` ``N x 2`` (x, y) m."""
        sites = np.asarray(sites, dtype=float).reshape(-1, 2)
        if not self._places:
            return np.zeros(len(sites))
        d2 = ((sites[:, None, :] - np.asarray(self._places)[None]) ** 2).sum(-1)
        return np.exp(-d2 / (2 * self.radius_m**2)) @ np.asarray(self._amounts)

    def __len__(self) -> int:
        return len(self._places)


class SquareScan:
    """The Instrument-protocol pieces every twin with a square survey of square pixels shares.

    A subclass names itself (``twin_name``, its entry point) and its options (``options_model``, a
    :class:`PlacementOptions` with ``survey_pixels``, ``pixel_size_m`` and ``measurement_time_s``),
    begins its ``__init__`` with this class's, sets ``_axis``, its spectrum axis, and draws its
    survey in ``_render_survey`` (for :meth:`_cached_survey`). The real-time helpers
    (:meth:`_move_to`, :meth:`_drifted_survey`, :meth:`_land`) run on the clock and the placement
    that ``__init__`` sets up.
    """

    twin_name: ClassVar[str]
    options_model: ClassVar[type[PlacementOptions]]
    options: Any
    _axis: SpectrumAxis
    _repeats: dict[tuple[int, ...], int]
    clock: Any
    _placement: ProbePlacement

    def __init__(self, seed: int = 0, **options: Any) -> None:
        """What every twin's ``__init__`` begins with: the seed and the options checked (errors name
        the twin), the clock, where the probe really lands, the dose ledger when the twin records
        damage, and no attempts or survey yet."""
        self.seed = check_seed(seed, self.twin_name)
        self.options = self.options_model.parse(options, self.twin_name)
        self.clock = make_clock(self.options.clock)
        self._placement = ProbePlacement.from_options(self.seed, self.options)
        radius = getattr(self.options, "damage_radius_m", 0.0)
        self._ledger = DoseLedger(radius) if radius > 0 else None
        self._repeats = {}
        self._survey_image: np.ndarray | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any], seed: int = 0) -> Self:
        """Factory used by ``aexp.instrument.load_instrument``."""
        opts = cls.options_model.parse(options, cls.twin_name)
        return cls(seed=seed, **opts.model_dump())

    def _render_survey(self) -> np.ndarray:
        """The still sample's survey, ``C x H x W`` (or ``H x W`` for one channel)."""
        raise NotImplementedError

    def _cached_survey(self, channels: tuple[str, ...]) -> Survey:
        """The survey as taken now: rendered once, then moved by the drift (:meth:`_drifted_survey`)."""
        if self._survey_image is None:
            self._survey_image = self._render_survey()
        image = self._survey_image if self._survey_image.ndim == 3 else self._survey_image[None]
        return Survey(image=self._drifted_survey(image.copy()), transform=self.transform, channels=channels)

    def _move_to(self, position: Iterable[float]) -> float:
        """Spend the time a move from the last probe position takes (``settle_s + distance /
        stage_speed_m_s``, nothing without a stage speed or for the first move); returns it."""
        xy = tuple(float(v) for v in position)
        last = getattr(self, "_probe_at", None)
        self._probe_at = xy
        o = self.options
        if last is None or o.stage_speed_m_s is None:
            return 0.0
        distance = math.hypot(xy[0] - last[0], xy[1] - last[1])
        seconds = (o.settle_s + distance / o.stage_speed_m_s) if distance > 0 else 0.0
        self.clock.advance(seconds)
        return seconds

    def _drifted_survey(self, image: np.ndarray) -> np.ndarray:
        """A survey ``C x H x W`` as taken now: the clock spends ``survey_time_s``, and the field shows
        the sample moved by its drift at the survey's start (cubic-spline shift, borders repeated)."""
        start = self.clock.now_s
        if self.options.survey_time_s > 0:
            self.clock.advance(self.options.survey_time_s)
        s = self._placement.sample_drift_m(start)
        if not s.any():
            return image
        from scipy import ndimage  # a dependency of scikit-image, needed only with drift

        px = self.options.pixel_size_m
        shift = (0.0, s[1] / px, s[0] / px)  # (channel, row = y, col = x)
        return ndimage.shift(image, shift, order=3, mode="nearest").astype(image.dtype)

    def _land(self, position: Iterable[float], clock_s: float, repeat: int) -> tuple[float, float]:
        """Where the probe really lands (``_placement.actual``), logged for :meth:`probe_log`."""
        actual = self._placement.actual(position, clock_s, repeat)
        log = self.__dict__.setdefault("_probe_log", [])
        log.append((tuple(float(v) for v in position), actual, float(clock_s)))
        return actual

    def probe_log(self) -> list[tuple[tuple[float, float], tuple[float, float], float]]:
        """Hidden truth: every measurement's (requested (x, y), sample point really probed (x, y),
        twin time) in metres and seconds, in order; the benchmark's position error comes from it."""
        return list(self.__dict__.get("_probe_log", []))

    def sample_drift_m(self, clock_s: float | None = None) -> np.ndarray:
        """Hidden truth: the sample's drift ``2`` (x, y) m at ``clock_s`` (default: now)."""
        return self._placement.sample_drift_m(self.clock.now_s if clock_s is None else clock_s)

    def _next_attempt(self, position: tuple[float, float]) -> tuple[tuple[int, ...], int]:
        """Check ``position`` against the bounds (``OutOfBounds`` before anything happens), then
        count one more attempt there: its noise key and how many attempts preceded this one."""
        check_position(self.bounds, position)
        key = position_key(position)
        repeat = self._repeats.get(key, 0)
        self._repeats[key] = repeat + 1
        return key, repeat

    @property
    def bounds(self) -> Bounds:
        """Extent of the survey pixel centres: ``[0, (W-1) s] x [0, (H-1) s]``."""
        extent = (self.options.survey_pixels - 1) * self.options.pixel_size_m
        return Bounds(0.0, extent, 0.0, extent)

    @property
    def transform(self) -> PixelTransform:
        return PixelTransform.square(self.options.pixel_size_m)

    @property
    def axis(self) -> SpectrumAxis:
        return self._axis

    def _stage_extra(self) -> dict[str, Any]:
        """``stage_speed_m_s`` and ``settle_s`` for the campaign's travel cost, when the twin has a stage."""
        speed = getattr(self.options, "stage_speed_m_s", None)
        if speed is None:
            return {}
        return {"stage_speed_m_s": speed, "settle_s": self.options.settle_s}

    def _description(self, name: str, channels: tuple[str, ...], extra: dict[str, Any]) -> InstrumentDescription:
        """What ``describe()`` returns: the shared fields plus the twin's own ``extra``."""
        n = self.options.survey_pixels
        return InstrumentDescription(
            name=name,
            bounds=self.bounds,
            survey_shape=(len(channels), n, n),
            channels=channels,
            spectrum_axis=self._axis,
            units="m",
            measurement_time_s=self.options.measurement_time_s,
            extra={"pixel_size_m": self.options.pixel_size_m, **self._stage_extra(), **extra},
        )
