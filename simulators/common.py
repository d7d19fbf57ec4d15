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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aexp.instrument import check_position
from aexp.types import Bounds, InstrumentDescription, PixelTransform, SpectrumAxis

__all__ = [
    "check_seed",
    "as_positions",
    "stable_hash",
    "rng_for",
    "position_key",
    "PICOMETRE",
    "SimClock",
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


@dataclass(frozen=True)
class ProbePlacement:
    """Where the probe lands when ``position`` is asked for: drift plus a placement error.

    ``actual = requested + drift_offset u1 + drift_rate t u2 + e``, with unit vectors ``u1``,
    ``u2`` drawn from the seed, ``t`` the simulated clock and ``e ~ N(0, probe_error^2 I)`` keyed
    on (seed, position, repeat).

    Example:
        >>> ProbePlacement.from_options(7, opts).actual((1e-9, 2e-9), clock_s=0.5, repeat=0)
    """

    seed: int
    drift_offset_m: float = 0.0
    drift_rate_m_per_s: float = 0.0
    probe_error_m: float = 0.0

    @classmethod
    def from_options(cls, seed: int, opts: PlacementOptions) -> ProbePlacement:
        return cls(seed, opts.drift_offset_m, opts.drift_rate_m_per_s, opts.probe_error_m)

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
        shifted = xy + self.drift_m(clock_s)
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

    A subclass has ``options`` with ``survey_pixels``, ``pixel_size_m`` and ``measurement_time_s``,
    ``_axis``, its spectrum axis, and ``_repeats``, an empty dict at the start.
    """

    options: Any
    _axis: SpectrumAxis
    _repeats: dict[tuple[int, ...], int]

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
            extra={"pixel_size_m": self.options.pixel_size_m, **extra},
        )
