"""The shared vocabulary of an experiment: surveys, candidates, measurements and steps.

Coordinates: an instrument position is ``(x, y)`` in metres. A pixel of the survey image is
``(row, col)``; rows run down the image, columns across. The :class:`PixelTransform` carried by a
:class:`Survey` is the single place where the two frames meet.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Bounds",
    "PixelTransform",
    "Survey",
    "Candidates",
    "SpectrumAxis",
    "axes_from_dicts",
    "Measurement",
    "InstrumentDescription",
    "Step",
    "Directive",
]


@dataclass(frozen=True)
class Bounds:
    """Axis-aligned region the probe may visit, in instrument units (metres), edges included."""

    xmin: float
    xmax: float
    ymin: float
    ymax: float

    def __post_init__(self) -> None:
        if not (self.xmin < self.xmax and self.ymin < self.ymax):
            raise ValueError(f"empty bounds: {self}")

    def contains(self, xy: np.ndarray) -> np.ndarray:
        """Whether each position lies inside. ``xy``: ``[..., 2]`` -> bool ``[...]``."""
        xy = np.asarray(xy, dtype=float)
        x, y = xy[..., 0], xy[..., 1]
        ok = (x >= self.xmin) & (x <= self.xmax) & (y >= self.ymin) & (y <= self.ymax)
        return ok & np.isfinite(x) & np.isfinite(y)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class PixelTransform:
    """Affine map from pixel ``(row, col)`` to instrument ``(x, y)``.

    ``[x, y] = origin + matrix @ [row, col]``; ``origin`` is the position of the centre of pixel
    (0, 0). A plain scan with square pixels of size ``s`` whose columns run along +x and rows along
    +y has ``matrix = [[0, s], [s, 0]]``. Rotation and skew are allowed.

    Example:
        >>> t = PixelTransform.square(pixel_size=1e-9)
        >>> t.to_instrument(np.array([[2.0, 5.0]]))   # row 2, col 5
        array([[5.e-09, 2.e-09]])
    """

    origin: tuple[float, float]
    matrix: tuple[tuple[float, float], tuple[float, float]]

    @classmethod
    def square(cls, pixel_size: float, origin: tuple[float, float] = (0.0, 0.0)) -> PixelTransform:
        s = float(pixel_size)
        return cls(origin=(float(origin[0]), float(origin[1])), matrix=((0.0, s), (s, 0.0)))

    def to_instrument(self, rc: np.ndarray) -> np.ndarray:
        """Pixel ``[..., 2]`` (row, col) -> instrument ``[..., 2]`` (x, y)."""
        rc = np.asarray(rc, dtype=float)
        return rc @ np.asarray(self.matrix).T + np.asarray(self.origin)

    def to_pixel(self, xy: np.ndarray) -> np.ndarray:
        """Instrument ``[..., 2]`` (x, y) -> pixel ``[..., 2]`` (row, col), fractional."""
        xy = np.asarray(xy, dtype=float)
        return (xy - np.asarray(self.origin)) @ np.linalg.inv(np.asarray(self.matrix)).T

    @property
    def pixel_size(self) -> float:
        """Geometric mean of the two pixel edge lengths (metres)."""
        return float(np.sqrt(abs(np.linalg.det(np.asarray(self.matrix)))))

    def to_dict(self) -> dict[str, Any]:
        return {"origin": list(self.origin), "matrix": [list(r) for r in self.matrix]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PixelTransform:
        m = d["matrix"]
        return cls(origin=tuple(d["origin"]), matrix=(tuple(m[0]), tuple(m[1])))


@dataclass
class Survey:
    """An overview image of the sample.

    Attributes:
        image: ``C x H x W`` float32.
        transform: pixel -> instrument map.
        channels: one name per image channel (e.g. ``("haadf",)``).
    """

    image: np.ndarray
    transform: PixelTransform
    channels: tuple[str, ...]

    def __post_init__(self) -> None:
        self.image = np.asarray(self.image, dtype=np.float32)
        if self.image.ndim != 3:
            raise ValueError(f"survey image must be C x H x W, got shape {self.image.shape}")
        if len(self.channels) != self.image.shape[0]:
            raise ValueError(
                f"survey has {self.image.shape[0]} channels but {len(self.channels)} channel names"
            )

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` in pixels."""
        return int(self.image.shape[1]), int(self.image.shape[2])


@dataclass
class Candidates:
    """The discrete set of places the probe may be sent, with the local patch around each.

    Attributes:
        positions: ``N x 2`` instrument (x, y), metres.
        pixels: ``N x 2`` survey (row, col) of each patch centre.
        patches: ``N x C x p x p`` float32.
        grid_shape: ``(rows, cols)`` when the candidates form a regular grid in row-major order
            (``N == rows * cols``), else ``None``. Used to draw maps.
        context: ``N x C x p x p`` float32 or ``None``: a wider view around each candidate,
            average-pooled to the patch's size (``candidates.context`` in the config).
    """

    positions: np.ndarray
    pixels: np.ndarray
    patches: np.ndarray
    grid_shape: tuple[int, int] | None = None
    context: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.positions)
        if self.positions.shape != (n, 2) or self.pixels.shape != (n, 2):
            raise ValueError("positions and pixels must both be N x 2")
        if self.patches.ndim != 4 or len(self.patches) != n:
            raise ValueError(f"patches must be N x C x p x p with N={n}, got {self.patches.shape}")
        if self.grid_shape is not None and self.grid_shape[0] * self.grid_shape[1] != n:
            raise ValueError(f"grid_shape {self.grid_shape} does not hold {n} candidates")
        if self.context is not None and (self.context.ndim != 4 or len(self.context) != n):
            raise ValueError(f"context must be N x C x p x p with N={n}, got {self.context.shape}")

    def __len__(self) -> int:
        return len(self.positions)


@dataclass(frozen=True)
class SpectrumAxis:
    """The independent axis of a spectrum: ``n`` values from ``start`` to ``stop`` (inclusive)."""

    name: str
    units: str
    start: float
    stop: float
    n: int

    def values(self) -> np.ndarray:
        return np.linspace(self.start, self.stop, self.n)

    @property
    def scale(self) -> float:
        """Spacing of neighbouring values (``1.0`` for a one-value axis)."""
        return (self.stop - self.start) / (self.n - 1) if self.n > 1 else 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def axes_from_dicts(raw: Any) -> tuple[SpectrumAxis, ...]:
    """Axes from their ``to_dict()`` forms (a list of objects); ``ValueError`` names the bad one."""
    if not isinstance(raw, (list, tuple)) or not raw:
        raise ValueError(f"measurement_axes must be a non-empty list of axes, got {raw!r}")
    out = []
    for i, d in enumerate(raw):
        if not isinstance(d, dict):
            raise ValueError(f"measurement_axes[{i}] must be an object, got {d!r}")
        try:
            axis = SpectrumAxis(**d)
        except TypeError as exc:
            raise ValueError(f"measurement_axes[{i}]: {exc}") from None
        if not isinstance(axis.n, int) or isinstance(axis.n, bool) or axis.n < 1:
            raise ValueError(f"measurement_axes[{i}].n must be an integer >= 1, got {axis.n!r}")
        out.append(axis)
    return tuple(out)


@dataclass
class Measurement:
    """One measurement at one probe position: a spectrum (``L``) or an array with named, calibrated
    axes, e.g. a diffraction pattern (``ky x kx``).

    Attributes:
        spectrum: the values (counts, pm/V, ...): ``L`` for a spectrum, ``n_0 x n_1 x ...`` for an
            N-D measurement (``spectrum.shape == tuple(a.n for a in signal_axes)``).
        axis: the spectrum's axis (``L == axis.n``); for an N-D measurement its first axis.
        position: instrument (x, y) where it was taken, metres.
        duration_s: instrument time it took (simulated clock for a simulator).
        metadata: anything else the instrument reports (JSON-serialisable).
        axes: every axis of an N-D measurement, in the array's order (``axes[0] == axis``); ``None``
            for a spectrum.

    Example:
        >>> ky = SpectrumAxis("ky", "mrad", -11.0, 11.0, 64); kx = SpectrumAxis("kx", "mrad", -11.0, 11.0, 64)
        >>> m = Measurement(pattern, ky, (0.0, 0.0), axes=(ky, kx))   # pattern: 64 x 64
        >>> [a.name for a in m.signal_axes]
        ['ky', 'kx']
    """

    spectrum: np.ndarray
    axis: SpectrumAxis
    position: tuple[float, float]
    duration_s: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)
    axes: tuple[SpectrumAxis, ...] | None = None

    def __post_init__(self) -> None:
        if self.axes is None:
            return
        self.axes = tuple(self.axes)
        shape = tuple(a.n for a in self.axes)
        if np.shape(self.spectrum) != shape or self.axes[0] != self.axis:
            raise ValueError(
                f"a measurement of shape {np.shape(self.spectrum)} on axes {[a.name for a in self.axes]} "
                f"{list(shape)}; axis must be axes[0]"
            )

    @property
    def signal_axes(self) -> tuple[SpectrumAxis, ...]:
        """The measurement's axes: ``(axis,)`` for a spectrum."""
        return self.axes if self.axes else (self.axis,)


@dataclass
class InstrumentDescription:
    """What an instrument tells about itself before an experiment (``describe()``)."""

    name: str
    bounds: Bounds
    survey_shape: tuple[int, int, int]
    channels: tuple[str, ...]
    spectrum_axis: SpectrumAxis
    units: str = "m"
    measurement_time_s: float = 0.0
    protocol_version: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
    #: every axis of an N-D measurement (``spectrum_axis`` is the first); ``None`` for spectra
    measurement_axes: tuple[SpectrumAxis, ...] | None = None

    @property
    def signal_axes(self) -> tuple[SpectrumAxis, ...]:
        """The axes of each measurement: ``(spectrum_axis,)`` for a spectrum."""
        return self.measurement_axes if self.measurement_axes else (self.spectrum_axis,)

    def to_dict(self) -> dict[str, Any]:
        nd = {"measurement_axes": [a.to_dict() for a in self.measurement_axes]} if self.measurement_axes else {}
        return {
            "name": self.name,
            "bounds": self.bounds.to_dict(),
            "survey_shape": list(self.survey_shape),
            "channels": list(self.channels),
            "spectrum_axis": self.spectrum_axis.to_dict(),
            "units": self.units,
            "measurement_time_s": self.measurement_time_s,
            "protocol_version": self.protocol_version,
            "extra": self.extra,
            **nd,  # absent for spectra, so 1-D sessions keep their bytes
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InstrumentDescription:
        return cls(
            name=d["name"],
            bounds=Bounds(**d["bounds"]),
            survey_shape=tuple(d["survey_shape"]),
            channels=tuple(d["channels"]),
            spectrum_axis=SpectrumAxis(**d["spectrum_axis"]),
            units=d.get("units", "m"),
            measurement_time_s=d.get("measurement_time_s", 0.0),
            protocol_version=d.get("protocol_version", 1),
            extra=d.get("extra", {}),
            measurement_axes=axes_from_dicts(d["measurement_axes"]) if d.get("measurement_axes") else None,
        )


@dataclass
class Step:
    """One completed measurement of the experiment, as recorded in ``steps.jsonl``.

    ``status`` is ``"ok"`` or ``"failed"``; a failed step has ``target = None`` and an ``error``.
    ``phase`` is ``"initial"`` for the random seed measurements and ``"policy"`` afterwards;
    ``"operator"`` for a point the operator chose (``aexp control FOLDER goto``, or a replaced proposal).
    ``pending`` lists the candidates in flight when this step was decided; ``travel_m`` is the
    distance from the previous step's position (``None`` for the first step). ``weights``: input
    group -> the weight it carried in the surrogate's decision (``surrogate.kind: groups``), else ``None``.
    ``rescored``: the pending candidates whose outcomes the decision was taken again on before it was
    sent (``policy.rescore``), in step order.
    """

    step: int
    index: int
    position: tuple[float, float]
    pixel: tuple[float, float]
    target: float | None
    status: str
    phase: str
    acquisition: float | None = None
    predicted_mean: float | None = None
    predicted_std: float | None = None
    best_so_far: float | None = None
    command_id: str = ""
    spectrum_row: int | None = None
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    pending: list[int] = field(default_factory=list)
    travel_m: float | None = None
    weights: dict[str, float] | None = None
    rescored: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["position"] = [float(v) for v in self.position]
        d["pixel"] = [float(v) for v in self.pixel]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Step:
        """A step from its JSON record; a ``KeyError``/``TypeError``/``ValueError`` names the bad field."""
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in known}
        for name in ("step", "index"):
            if not isinstance(kw.get(name), int) or isinstance(kw[name], bool) or kw[name] < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {kw.get(name)!r}")
        for name in ("position", "pixel"):
            xy = kw[name]
            if not (isinstance(xy, (list, tuple)) and len(xy) == 2
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xy)):
                raise ValueError(f"{name} must be two numbers, got {xy!r}")
            kw[name] = (float(xy[0]), float(xy[1]))
        if kw.get("status") not in ("ok", "failed"):
            raise ValueError(f"status must be 'ok' or 'failed', got {kw.get('status')!r}")
        target = kw.get("target")
        if target is not None and (not isinstance(target, (int, float)) or isinstance(target, bool)):
            raise ValueError(f"target must be a number or null, got {target!r}")
        return cls(**kw)


@dataclass
class Directive:
    """What an operator wants at a decision boundary (empty: let the policy decide).

    Attributes:
        goto: measure this candidate next (a step with ``phase: "operator"``), or ``None``.
        exclude: candidates never to be measured from now on.
        settings: policy settings to change from this decision on (``{"beta": 1.0}``).
        stop: end the campaign before this decision (``stop_reason`` is ``stop_reason``).
        stop_reason: why it stops (``"operator"``, ``"stagnation"``).
    """

    goto: int | None = None
    exclude: list[int] = field(default_factory=list)
    settings: dict[str, float] = field(default_factory=dict)
    stop: bool = False
    stop_reason: str = "operator"
