"""Read what microscopes write, through the field's own readers, into a full-grid data set.

Formats: everything rosettasciio reads (DM3/DM4, EMD/Velox, ``.hspy``/``.zspy``, USID HDF5, ...;
HyperSpy's readers), Nanonis ``.3ds`` grids through pycroscopy's SciFiReaders (rosettasciio has no
Nanonis reader), and plain ``.npy`` cubes ``R x Q x L`` whose axes are given by the caller. No
format is parsed here: this module only turns what a reader returns into :class:`Signal` records
and one spectrum image into a :class:`~aexp.griddata.GridDataset`.

A spectrum image is a signal with two spatial axes (named ``x``/``y`` or in length units) and one
other axis (energy loss, X-ray energy, bias, ...). Its navigation axes' scale and units become the
pixel -> metres transform; the signal axis is kept with its units and always runs upwards (a file
whose axis runs backwards has its spectra reversed, so that a window ``[lo, hi]`` means the same
thing everywhere).

Example:
    >>> print(list_recording("data/real/DMReader_SpectrumImage_SI-EELS.dm3"))
    >>> ds = import_recording("data/real/DMReader_SpectrumImage_SI-EELS.dm3",
    ...                       ImportOptions(survey="data/real/DMReader_SI-HAADF.dm3", pixel_size=1e-9))
    >>> ds.spectra.shape, ds.axis.units
    ((49, 6, 1024), 'eV')
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AexpError
from ..griddata import GridDataset
from ..types import PixelTransform, SpectrumAxis

__all__ = [
    "Axis",
    "ImportOptions",
    "RecordingError",
    "Signal",
    "import_recording",
    "list_recording",
    "read_recording",
    "select_signal",
    "sha256",
]

EXTRA_HINT = "pip install 'aexp[io]'"

# metres per unit of the length units readers write
LENGTH_UNITS = {"m": 1.0, "cm": 1e-2, "mm": 1e-3, "um": 1e-6, "µm": 1e-6, "μm": 1e-6, "nm": 1e-9,
                "pm": 1e-12, "Å": 1e-10, "angstrom": 1e-10}
_SPATIAL_NAMES = {"x", "y"}
# rosettasciio readers live in modules named by their plugin; SciFiReaders covers the rest
_SCIFI_SUFFIXES = {".3ds": "Nanonis3dsReader"}
_UNIFORM_RTOL = 1e-3


class RecordingError(AexpError, ValueError):
    """A recording cannot be read or is not a usable spectrum image; the message names file and signal."""


@dataclass(frozen=True)
class Axis:
    """One axis of a recorded signal, as its reader calibrated it.

    ``value(i) = offset + scale * i``; ``scale`` is ``None`` for a non-uniform axis, whose recorded
    values are then in ``values`` (a bias waveform, ``aexp.io.loops``).
    """

    name: str
    size: int
    offset: float
    scale: float | None
    units: str
    spatial: bool
    values: tuple[float, ...] | None = None

    def describe(self) -> str:
        if self.scale is None:
            return f"{self.name} ({self.size}, non-uniform, {self.units or 'no units'})"
        last = self.offset + self.scale * (self.size - 1)
        return f"{self.name} ({self.size}: {self.offset:.6g} .. {last:.6g} {self.units or '(no units)'})"


@dataclass
class Signal:
    """One signal of a recording: the array, its axes in array order, and what the file says of it.

    Attributes:
        name: the signal's title in the file.
        data: the array (any shape; a spectrum image has 3 dimensions).
        axes: one :class:`Axis` per dimension of ``data``.
        metadata: JSON-ready facts about the recording (instrument, beam, acquisition).
        positions: ``R x Q x 2`` metres of every grid point when the file records them (Nanonis),
            else ``None``.
        original: the reader's full original metadata (not stored; for pairing rules).
    """

    name: str
    data: Any
    axes: tuple[Axis, ...]
    metadata: dict[str, Any] = field(default_factory=dict)
    positions: np.ndarray | None = None
    original: Mapping[str, Any] = field(default_factory=dict)

    @property
    def spatial(self) -> list[int]:
        return [i for i, a in enumerate(self.axes) if a.spatial]

    @property
    def kind(self) -> str:
        n_sp, n = len(self.spatial), len(self.axes)
        if n == 3 and n_sp == 2:
            return "spectrum image"
        if n == 4 and n_sp == 2:
            return "4D-STEM"
        if n == 2 and n_sp == 2:
            return "image"
        if n == 1 and n_sp == 0:
            return "spectrum"
        return "other"

    def describe(self) -> str:
        shape = " x ".join(str(a.size) for a in self.axes)
        axes = "; ".join(a.describe() for a in self.axes)
        return f"{self.name!r}: {self.kind}, {shape} [{axes}]"


@dataclass(frozen=True)
class ImportOptions:
    """How one recording becomes a full-grid data set (the options of ``aexp import`` and of the
    ``replay`` driver when its ``path`` is a recording).

    Attributes:
        signal: which signal (title or index) when the file holds several spectrum images.
        survey: a paired image file (HAADF, topography, a Gatan survey); ``None`` for a survey made
            from the spectra over ``survey_band``. The same file as the recording picks an image
            inside it (the HAADF of an EMD file, the topography of a Nanonis grid).
        survey_signal: which image of ``survey`` (title or index); default the first image.
        survey_band: ``(lo, hi)`` in signal-axis units of the band whose intensity makes the survey;
            default the whole axis.
        pixel_size: metres per spectrum-image pixel, for files whose navigation axes are not in
            length units (or to override them).
        stride: survey pixels per grid step of the data set; default 1 for a band survey, else the
            paired image's own sampling rounded and capped at 8.
        axis: ``.npy`` cubes only: ``(name, units, start, stop)`` of the signal axis.
        register: refine a paired image's placement by phase correlation against the spectra.
        bias: a ``.npy`` vector of the applied bias (V) at each point of the signal axis: the data are
            hysteresis loops recorded along that waveform, imported on the unfolded bias axis
            (``aexp.io.loops``; a USID file's own non-uniform bias axis is used without it).
        cycle: of a waveform with several cycles, keep this one (0 = the first to start at
            ``V_min``); default ``None``: average them.
    """

    signal: str | None = None
    survey: str | Path | None = None
    survey_signal: str | None = None
    survey_band: tuple[float, float] | None = None
    pixel_size: float | None = None
    stride: int | None = None
    axis: tuple[str, str, float, float] | None = None
    register: bool = True
    bias: str | Path | None = None
    cycle: int | None = None

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any], where: str) -> ImportOptions:
        """From config-style options (``survey_band: [lo, hi]``, ``axis: [name, units, start, stop]``)."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(options) - known)
        if unknown:
            raise RecordingError(f"{where}: unknown options {unknown}; known: {sorted(known)}")
        kw = dict(options)
        if kw.get("survey_band") is not None:
            band = kw["survey_band"]
            if not isinstance(band, Sequence) or len(band) != 2 or not float(band[0]) < float(band[1]):
                raise RecordingError(f"{where}: survey_band must be [lo, hi] with lo < hi, got {band!r}")
            kw["survey_band"] = (float(band[0]), float(band[1]))
        if kw.get("axis") is not None:
            ax = kw["axis"]
            if not isinstance(ax, Sequence) or len(ax) != 4:
                raise RecordingError(f"{where}: axis must be [name, units, start, stop], got {ax!r}")
            kw["axis"] = (str(ax[0]), str(ax[1]), float(ax[2]), float(ax[3]))
        if kw.get("pixel_size") is not None and not float(kw["pixel_size"]) > 0:
            raise RecordingError(f"{where}: pixel_size must be > 0 metres, got {kw['pixel_size']!r}")
        if kw.get("stride") is not None and (int(kw["stride"]) != kw["stride"] or kw["stride"] < 1):
            raise RecordingError(f"{where}: stride must be a positive integer, got {kw['stride']!r}")
        if kw.get("signal") is not None:
            kw["signal"] = str(kw["signal"])
        if kw.get("bias") is not None and kw.get("axis") is not None:
            raise RecordingError(f"{where}: give the bias waveform (bias) or a uniform signal axis (axis), not both")
        if kw.get("cycle") == "average":
            kw["cycle"] = None
        if kw.get("cycle") is not None and (not isinstance(kw["cycle"], int) or isinstance(kw["cycle"], bool)
                                            or kw["cycle"] < 0):
            raise RecordingError(f"{where}: cycle must be a cycle number 0, 1, ... or 'average', got {kw['cycle']!r}")
        return cls(**kw)


def sha256(path: str | Path) -> str:
    """Of a file's bytes; of a folder store (``.zspy``), of each file's relative name and bytes, in order."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for f in files:
        if path.is_dir():
            h.update(f.relative_to(path).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _missing_extra(exc: ImportError, path: Path) -> RecordingError:
    return RecordingError(f"{path}: reading this format needs the optional readers ({exc.name or exc}); "
                          f"install them with {EXTRA_HINT}")


def _jsonable(value: Any, depth: int = 0) -> Any:
    """A JSON-ready copy of reader metadata: small arrays as lists, big ones and oddities dropped."""
    if depth > 8:
        return None
    if isinstance(value, Mapping):
        out = {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not None}
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, (str, bool, int)) or value is None:
        return value
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (list, tuple, np.ndarray)):
        arr = np.asarray(value, dtype=object) if not isinstance(value, np.ndarray) else value
        if arr.size > 16:
            return None
        return [_jsonable(v, depth + 1) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    return str(value)


def _dig(tree: Mapping[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(tree, Mapping) or key not in tree:
            return None
        tree = tree[key]
    return tree


# ---------------------------------------------------------------------------------------- readers


def _rsciio_reader(path: Path):
    try:
        import rsciio
    except ImportError as exc:
        raise _missing_extra(exc, path) from None
    suffix = path.suffix.lstrip(".").lower()
    plugins = [p for p in rsciio.IO_PLUGINS if suffix in [e.lower() for e in p["file_extensions"]]]
    if not plugins:
        known = sorted({e.lower() for p in rsciio.IO_PLUGINS for e in p["file_extensions"]} | {"3ds", "npy"})
        raise RecordingError(f"{path}: unknown format {path.suffix!r}; readable: .{', .'.join(known)}")
    return plugins


def _rsciio_axis(ax: Mapping[str, Any]) -> Axis:
    name = str(ax.get("name") or "axis")
    units = str(ax.get("units") or "")
    if units in ("<undefined>", "t.b.d."):
        units = ""
    size = int(ax.get("size", len(ax.get("axis", []))))
    spatial = name.lower() in _SPATIAL_NAMES or units in LENGTH_UNITS
    if "axis" in ax and ax.get("scale") is None:  # a non-uniform axis: uniform after all?
        return _axis_from_values(name, units, np.asarray(ax["axis"], dtype=float), spatial)
    return Axis(name, size, float(ax.get("offset", 0.0)), float(ax.get("scale", 1.0)), units, spatial)


def _axis_from_values(name: str, units: str, values: np.ndarray, spatial: bool) -> Axis:
    if len(values) < 2:
        return Axis(name, len(values), float(values[0]) if len(values) else 0.0, 1.0, units, spatial)
    steps = np.diff(values)
    uniform = np.allclose(steps, steps[0], rtol=_UNIFORM_RTOL, atol=0) and steps[0] != 0
    scale = float((values[-1] - values[0]) / (len(values) - 1)) if uniform else None
    kept = None if uniform else tuple(float(v) for v in values)
    return Axis(name, len(values), float(values[0]), scale, units, spatial, kept)


def _dm_metadata(original: Mapping[str, Any]) -> dict[str, Any]:
    """The instrument facts a Gatan file keeps in its image tags."""
    tags = _dig(original, "ImageList", "TagGroup0", "ImageTags") or {}
    keep = {k: tags[k] for k in ("Microscope Info", "EELS", "EELS Spectrometer", "Session Info") if k in tags}
    si = _dig(tags, "SI", "Acquisition")
    if si:
        keep["SI"] = {k: v for k, v in si.items() if k not in ("Scan Options",)}
    return _jsonable(keep)


def _read_rsciio(path: Path) -> list[Signal]:
    errors = []
    missing: ImportError | None = None
    for plugin in _rsciio_reader(path):
        try:
            module = importlib.import_module(plugin["api"])
            with warnings.catch_warnings():  # USID's non-uniform values are read back below (loops.py)
                warnings.filterwarnings("ignore", "Ignoring non-uniformity of dimension", UserWarning)
                dicts = module.file_reader(str(path), lazy=False)
        except ImportError as exc:  # another reader of this suffix may be the file's (.h5: Tofwerk ... USID)
            missing = missing or exc
            continue
        except Exception as exc:  # the readers raise many kinds on a file that is not theirs
            errors.append(f"{plugin['name']}: {type(exc).__name__}: {exc}")
            continue
        out = []
        for i, d in enumerate(dicts):
            meta = d.get("metadata") or {}
            title = str(_dig(meta, "General", "title") or f"signal {i}")
            original = d.get("original_metadata") or {}
            facts = {k: _jsonable(meta[k]) for k in ("General", "Signal", "Acquisition_instrument") if k in meta}
            if plugin["name"] == "DigitalMicrograph":
                facts["tags"] = _dm_metadata(original)
            facts["reader"] = f"rosettasciio {plugin['name']}"
            axes = tuple(_rsciio_axis(ax) for ax in sorted(d["axes"], key=lambda a: a.get("index_in_array", 0)))
            if plugin["name"] == "USID" and original.get("dataset_path"):
                from .loops import restore_usid_axes

                axes = restore_usid_axes(path, str(original["dataset_path"]), axes)
            out.append(Signal(title, d["data"], axes, facts, None, original))
        return out
    if missing is not None:
        raise _missing_extra(missing, path)
    raise RecordingError(f"{path}: no reader could open it ({'; '.join(errors)})")


def _read_nanonis(path: Path) -> list[Signal]:
    try:
        import SciFiReaders
    except ImportError as exc:
        raise _missing_extra(exc, path) from None
    try:
        datasets = SciFiReaders.Nanonis3dsReader(str(path)).read()
    except Exception as exc:
        raise RecordingError(f"{path}: SciFiReaders could not read it as a Nanonis grid ({type(exc).__name__}: "
                             f"{exc})") from None
    datasets = list(datasets.values()) if isinstance(datasets, Mapping) else list(datasets)
    out: list[Signal] = []
    positions = None
    for ds in datasets:
        om: Mapping[str, Any] = dict(getattr(ds, "original_metadata", {}) or {})
        axes = []
        for i in range(ds.ndim):
            a = ds._axes[i]
            spatial = str(getattr(a, "dimension_type", "")).endswith("SPATIAL")
            axes.append(_axis_from_values(str(a.name), str(a.units), np.asarray(a, dtype=float), spatial))
        if positions is None and "X (m)" in om and "Y (m)" in om:
            positions = np.stack([np.asarray(om["X (m)"], float), np.asarray(om["Y (m)"], float)], axis=-1)
        facts = {k: _jsonable(v) for k, v in om.items() if np.size(v) <= 16}
        facts["reader"] = "SciFiReaders Nanonis3dsReader"
        name = str(getattr(ds, "quantity", "") or ds.title)
        out.append(Signal(name, np.asarray(ds), tuple(axes), facts, positions, om))
    # the topography: the tip height recorded at every grid point, an image on the same grid
    om = out[0].original if out else {}
    if "Z (m)" in om and out:
        z = np.asarray(om["Z (m)"], dtype=float)
        sp = [out[0].axes[i] for i in out[0].spatial]
        if z.shape == tuple(a.size for a in sp):
            out.append(Signal("topography", z, tuple(sp), {"reader": "SciFiReaders Nanonis3dsReader",
                                                             "units": "m"}, positions, om))
    return out


def _read_npy(path: Path, axis: tuple[str, str, float, float] | None) -> list[Signal]:
    try:
        data = np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise RecordingError(f"{path}: not a readable .npy array ({exc})") from None
    if data.ndim != 3:
        raise RecordingError(f"{path}: a .npy spectrum image must be rows x cols x L, got shape {data.shape}")
    if axis is None:
        raise RecordingError(f"{path}: a .npy cube has no axes; give the signal axis (--axis NAME UNITS START STOP) "
                             "or the bias waveform of a loop map (--bias FILE.npy), and --pixel-size")
    name, units, start, stop = axis
    r, q, n = data.shape
    scale = (stop - start) / (n - 1) if n > 1 else 1.0
    axes = (Axis("y", r, 0.0, 1.0, "", True), Axis("x", q, 0.0, 1.0, "", True),
            Axis(name, n, float(start), float(scale), units, False))
    return [Signal(path.stem, np.asarray(data), axes, {"reader": "numpy"})]


def read_recording(path: str | Path, axis: tuple[str, str, float, float] | None = None) -> list[Signal]:
    """Every signal in a recording, read by the field's reader for its format.

    Args:
        path: the file.
        axis: ``.npy`` only: ``(name, units, start, stop)`` of the last axis.

    Raises:
        RecordingError: missing file, unknown format, a reader that fails, or the optional readers
            not installed (the message names the ``io`` extra).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not (path.is_file() or (suffix == ".zspy" and path.is_dir())):  # a .zspy may be a zarr folder
        raise RecordingError(f"{path}: no such file")
    if suffix == ".npy":
        return _read_npy(path, axis)
    if suffix in _SCIFI_SUFFIXES:
        return _read_nanonis(path)
    return _read_rsciio(path)


def list_recording(path: str | Path, axis: tuple[str, str, float, float] | None = None) -> str:
    """What is inside a recording: one line per signal with its shape, axes and units."""
    signals = read_recording(path, axis)
    lines = [f"{path}: {len(signals)} signal(s)"]
    lines += [f"  [{i}] {s.describe()}" for i, s in enumerate(signals)]
    return "\n".join(lines)


def select_signal(signals: list[Signal], name: str | None, path: Path, kind: str = "spectrum image") -> Signal:
    """The signal called ``name`` (title, case-insensitive, or index), else the only one of ``kind``."""
    listing = ", ".join(f"[{i}] {s.name!r} ({s.kind})" for i, s in enumerate(signals))
    if name is not None:
        hits = [s for s in signals if s.name.lower() == name.lower()]
        if not hits and re.fullmatch(r"\d+", name) and int(name) < len(signals):
            hits = [signals[int(name)]]
        if not hits:
            raise RecordingError(f"{path}: no signal {name!r}; it holds {listing}")
        if hits[0].kind != kind:
            raise RecordingError(f"{path}: signal {hits[0].name!r} is {hits[0].describe()}, not a {kind} "
                                 f"(two spatial axes{' and one signal axis' if kind == 'spectrum image' else ''})")
        return hits[0]
    hits = [s for s in signals if s.kind == kind]
    if not hits:
        raise RecordingError(f"{path}: holds no {kind}; its signals are {listing}")
    if len(hits) > 1 and kind == "spectrum image":
        names = ", ".join(repr(s.name) for s in hits)
        raise RecordingError(f"{path}: holds several spectrum images ({names}); choose one with --signal "
                             f"(options.signal)")
    return hits[0]


# -------------------------------------------------------------------------------- to a grid data set


def _spectrum_cube(sig: Signal, path: Path) -> tuple[np.ndarray, SpectrumAxis, bool, tuple[int, int]]:
    """``R x Q x L`` float32 with an ascending axis; whether it was reversed; the spatial dims."""
    where = f"{path}, signal {sig.name!r}"
    rows, cols = sig.spatial
    (k,) = [i for i in range(3) if i not in (rows, cols)]
    ax = sig.axes[k]
    if ax.scale is None:
        raise RecordingError(f"{where}: the signal axis {ax.name!r} is non-uniform; aexp needs evenly spaced "
                             f"values (resample it first; a loop map's bias waveform is recognised in V or mV, or "
                             f"give it with --bias FILE.npy)")
    if ax.size < 2:
        raise RecordingError(f"{where}: the signal axis {ax.name!r} has {ax.size} value(s); a spectrum needs 2 or more")
    cube = np.asarray(sig.data, dtype=np.float32).transpose(rows, cols, k)
    start, stop = ax.offset, ax.offset + ax.scale * (ax.size - 1)
    reversed_ = ax.scale < 0
    if reversed_:  # so that windows [lo, hi] and "band intensity" mean the same as for any file
        cube, start, stop = cube[..., ::-1], stop, start
    name = re.sub(r"[^0-9a-z]+", "_", ax.name.lower()).strip("_") or "signal"
    return np.ascontiguousarray(cube), SpectrumAxis(name, ax.units, float(start), float(stop), ax.size), \
        reversed_, (rows, cols)


def _grid_transform(sig: Signal, dims: tuple[int, int], pixel_size: float | None,
                    path: Path) -> tuple[PixelTransform, str]:
    """Grid ``(r, q)`` -> ``(x, y)`` metres, and where its calibration came from."""
    where = f"{path}, signal {sig.name!r}"
    ra, ca = sig.axes[dims[0]], sig.axes[dims[1]]
    for a in (ra, ca):
        if a.scale is None:
            raise RecordingError(f"{where}: the navigation axis {a.name!r} is non-uniform; aexp needs a regular grid")
    if pixel_size is not None:
        s = float(pixel_size)
        return PixelTransform(origin=(0.0, 0.0), matrix=((0.0, s), (s, 0.0))), "pixel size given by the user"
    if sig.positions is not None and sig.positions.shape[:2] == (ra.size, ca.size):
        return _fit_positions(sig.positions, where), "grid point positions recorded in the file"
    if ra.units in LENGTH_UNITS and ca.units in LENGTH_UNITS:
        fr, fc = LENGTH_UNITS[ra.units], LENGTH_UNITS[ca.units]
        assert ra.scale is not None and ca.scale is not None
        return (PixelTransform(origin=(ca.offset * fc, ra.offset * fr),
                               matrix=((0.0, ca.scale * fc), (ra.scale * fr, 0.0))),
                "navigation axes' calibration")
    raise RecordingError(
        f"{where}: the navigation axes carry no length units ({ra.describe()}; {ca.describe()}), so the "
        f"probe positions in metres are unknown; give the spectrum-image pixel size with --pixel-size "
        f"METRES (options.pixel_size)"
    )


def _fit_positions(xy: np.ndarray, where: str) -> PixelTransform:
    """Least-squares affine map from grid ``(r, q)`` to recorded ``(x, y)``; refuses an irregular grid."""
    r, q = np.meshgrid(np.arange(xy.shape[0]), np.arange(xy.shape[1]), indexing="ij")
    design = np.column_stack([np.ones(r.size), r.ravel(), q.ravel()])
    target = xy.reshape(-1, 2)
    ok = np.isfinite(target).all(axis=1)
    if ok.sum() < 3:
        raise RecordingError(f"{where}: fewer than 3 grid points have recorded positions")
    coef, *_ = np.linalg.lstsq(design[ok], target[ok], rcond=None)  # 3 x 2
    matrix = coef[1:].T  # [x, y] = origin + matrix @ [r, q]
    step = math.sqrt(abs(np.linalg.det(matrix)))
    worst = float(np.abs(design[ok] @ coef - target[ok]).max())
    if not step > 0 or worst > 0.05 * step:
        raise RecordingError(f"{where}: the recorded grid positions are not a regular grid (worst point "
                             f"{worst:.3g} m off a fitted grid of step {step:.3g} m)")
    return PixelTransform(origin=(float(coef[0, 0]), float(coef[0, 1])),
                          matrix=((float(matrix[0, 0]), float(matrix[0, 1])),
                                  (float(matrix[1, 0]), float(matrix[1, 1]))))


def import_recording(path: str | Path, options: ImportOptions | None = None) -> GridDataset:
    """One spectrum image of a recording as a full-grid data set (``docs/grid-dataset.md``).

    Spectra holding NaN are kept (the replay driver hands them out and the loop records a failed
    measurement there); a recording where every spectrum is NaN is refused.

    Raises:
        RecordingError: naming the file, the signal and what is wrong (no spectrum image, a
            non-uniform or uncalibrated axis, NaN everywhere, a survey that cannot be placed, ...).
    """
    from .loops import as_loop_map
    from .survey import make_survey

    opts = options or ImportOptions()
    path = Path(path)
    # a loop map's .npy cube takes its axis from the waveform: a placeholder until it is unfolded
    signals = read_recording(path, ("waveform_step", "", 0.0, 1.0) if opts.bias is not None else opts.axis)
    if _is_4d(signals, opts.signal):
        return _import_4d(path, select_signal(signals, opts.signal, path, kind="4D-STEM"), opts)
    sig = select_signal(signals, opts.signal, path)
    where = f"{path}, signal {sig.name!r}"
    loops = as_loop_map(sig, opts.bias, opts.cycle, where)
    if loops is not None:
        sig = loops[0]
    spectra, axis, reversed_, dims = _spectrum_cube(sig, path)
    bad = ~np.isfinite(spectra).all(axis=2)
    if bad.all():
        raise RecordingError(f"{where}: every spectrum holds NaN or inf; nothing to measure")
    grid_t, calibration = _grid_transform(sig, dims, opts.pixel_size, path)
    survey, channels, stride, survey_info = make_survey(path, sig, spectra, axis, grid_t, signals, opts)
    h, w = survey.shape[1:]
    (a, b), (c, d) = grid_t.matrix
    transform = PixelTransform(origin=grid_t.origin,
                               matrix=((a / stride, b / stride), (c / stride, d / stride)))
    metadata = {
        "source": {"file": path.name, "sha256": sha256(path), "signal": sig.name,
                   "shape": [a.size for a in sig.axes]},
        "calibration": calibration,
        "axis_reversed": bool(reversed_),
        "nan_spectra": int(bad.sum()),
        "survey": survey_info,
        "recording": sig.metadata,
    }
    if loops is not None:
        metadata["loops"] = loops[1]
    units = "counts" if "EELS" in json.dumps(sig.metadata) or "EDS" in json.dumps(sig.metadata) else \
        str(sig.metadata.get("Unit") or sig.metadata.get("units") or "a.u.")
    data = GridDataset(survey=survey, spectra=spectra, transform=transform, channels=channels, axis=axis,
                       stride=stride, spectrum_units=units, survey_source=survey_info["summary"],
                       metadata=metadata)
    assert data.survey.shape[1:] == (h, w)
    return data


# -------------------------------------------------------------------------------- 4D-STEM


#: the virtual images a 4D-STEM data set's survey is made of (the 4D-STEM twin's channels but the HAADF,
#: which lies beyond a camera's edge)
VIRTUAL_CHANNELS = ("sum", "adf", "com_x", "com_y")


def _is_4d(signals: list[Signal], name: str | None) -> bool:
    """Whether the signal to import is a 4D-STEM scan: the one named, or the only candidate."""
    if name is not None:
        hits = [s for s in signals if s.name.lower() == name.lower()]
        if not hits and re.fullmatch(r"\d+", name) and int(name) < len(signals):
            hits = [signals[int(name)]]
        return bool(hits) and hits[0].kind == "4D-STEM"
    kinds = [s.kind for s in signals]
    return "4D-STEM" in kinds and "spectrum image" not in kinds


def _detector_axis(ax: Axis, where: str) -> tuple[SpectrumAxis, bool]:
    if ax.scale is None or ax.scale == 0 or ax.size < 2:
        raise RecordingError(f"{where}: the detector axis {ax.describe()} must hold 2 or more evenly spaced values")
    start, stop = ax.offset, ax.offset + ax.scale * (ax.size - 1)
    name = re.sub(r"[^0-9a-z]+", "_", ax.name.lower()).strip("_") or "k"
    return SpectrumAxis(name, ax.units, float(min(start, stop)), float(max(start, stop)), ax.size), ax.scale < 0


def virtual_images(patterns: np.ndarray, axes: tuple[SpectrumAxis, SpectrumAxis]) -> np.ndarray:
    """The survey of a 4D-STEM scan, ``4 x R x Q`` (:data:`VIRTUAL_CHANNELS`): the counts of each
    pattern (``sum``), those at ``|k| >= k_max / 2`` with ``k_max`` the largest angle on the
    detector's inscribed circle (``adf``), and the centre of mass ``<kx>``, ``<ky>`` in the axes'
    units (``com_x``, ``com_y``). ``patterns``: ``R x Q x ky x kx``; NaN patterns give NaN pixels."""
    ky, kx = np.meshgrid(axes[0].values(), axes[1].values(), indexing="ij")
    k = np.hypot(kx, ky)
    k_max = min(abs(axes[0].start), abs(axes[0].stop), abs(axes[1].start), abs(axes[1].stop))
    outer = (k >= k_max / 2).astype(np.float64)
    p = np.asarray(patterns, dtype=np.float64)
    total = p.sum(axis=(2, 3))
    safe = np.where(total != 0, total, 1.0)
    com_x = np.einsum("rqyx,yx->rq", p, kx) / safe
    com_y = np.einsum("rqyx,yx->rq", p, ky) / safe
    adf = np.einsum("rqyx,yx->rq", p, outer)
    return np.stack([total, adf, com_x, com_y]).astype(np.float32)


def _import_4d(path: Path, sig: Signal, opts: ImportOptions) -> GridDataset:
    """A 4D-STEM scan (two navigation, two detector axes) as a full-grid data set of patterns whose
    survey is made of virtual images (:func:`virtual_images`)."""
    where = f"{path}, signal {sig.name!r}"
    if opts.survey is not None or opts.survey_band is not None or (opts.stride or 1) != 1:
        raise RecordingError(f"{where}: a 4D-STEM scan's survey is made of virtual images of its patterns, "
                             f"one pixel per probe position; --survey, --survey-band and --stride do not apply")
    rows, cols = sig.spatial
    det = [i for i in range(4) if i not in (rows, cols)]
    (ky, flip_y), (kx, flip_x) = (_detector_axis(sig.axes[i], where) for i in det)
    patterns = np.asarray(sig.data, dtype=np.float32).transpose(rows, cols, *det)
    if flip_y or flip_x:  # detector axes run upwards, as every pattern target expects
        patterns = patterns[..., :: -1 if flip_y else 1, :: -1 if flip_x else 1]
    patterns = np.ascontiguousarray(patterns)
    bad = ~np.isfinite(patterns).all(axis=(2, 3))
    if bad.all():
        raise RecordingError(f"{where}: every pattern holds NaN or inf; nothing to measure")
    transform, calibration = _grid_transform(sig, (rows, cols), opts.pixel_size, path)
    survey = virtual_images(patterns, (ky, kx))  # a pattern holding NaN gives NaN pixels: masked candidates
    summary = "virtual images of the patterns: sum, adf (|k| >= half the detector), centre of mass (not independent)"
    metadata = {
        "source": {"file": path.name, "sha256": sha256(path), "signal": sig.name, "shape": [a.size for a in sig.axes]},
        "calibration": calibration,
        "axis_reversed": bool(flip_y or flip_x),
        "nan_spectra": int(bad.sum()),
        "survey": {"kind": "virtual images", "channels": list(VIRTUAL_CHANNELS), "independent": False,
                   "summary": summary},
        "recording": sig.metadata,
    }
    return GridDataset(survey=survey, spectra=patterns, transform=transform, channels=VIRTUAL_CHANNELS, axis=ky,
                       stride=1, spectrum_units="counts", survey_source=summary, metadata=metadata,
                       signal_axes=(ky, kx))
