"""Full-grid data sets: a survey image plus a spectrum at every point of a regular grid over it.

The layout (``docs/grid-dataset.md``) is the same in NumPy ``.npz`` and HDF5 (``.h5``/``.hdf5``):

=====================  ==========================  =============================================
key                    shape / type                meaning
=====================  ==========================  =============================================
``survey``             ``C x H x W`` float32       survey image
``spectra``            ``R x Q x L`` float         spectrum at survey pixel ``(r*stride, q*stride)``
``channels``           ``C`` strings               one name per survey channel
``stride``             int                         survey pixels between grid points
``transform_origin``   ``2`` float                 ``(x, y)`` metres of survey pixel (0, 0)
``transform_matrix``   ``2 x 2`` float             pixel ``(row, col)`` -> ``(x, y)`` metres
``axis_start``         float                       first spectrum axis value
``axis_stop``          float                       last spectrum axis value (``L`` evenly spaced)
``axis_name``          string                      e.g. ``energy_loss``
``axis_units``         string                      e.g. ``eV``
``spectrum_units``     string                      e.g. ``counts``
``survey_source``      string                      what the survey is (optional; default ``image``)
``metadata_json``      string                      JSON: the recording's provenance (optional)
``axes_json``          string                      JSON: the axes of N-D measurements (optional)
=====================  ==========================  =============================================

A 4D-STEM data set holds a diffraction pattern at every grid point: ``spectra`` is
``R x Q x ky x kx`` and ``axes_json`` lists the two detector axes (``[{"name": "ky", "units":
"mrad", "start": ..., "stop": ..., "n": ...}, {"name": "kx", ...}]``); the ``axis_*`` keys then
describe the first of them.

with ``R = ceil(H / stride)`` and ``Q = ceil(W / stride)``. In HDF5, ``survey`` and ``spectra`` are
datasets and the rest are attributes of the root group. Nothing is pickled.

Example:
    >>> ds = load_grid("data/grid.npz")
    >>> ds.spectra.shape, ds.axis.n
    ((64, 64, 256), 256)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import AexpError
from .types import Bounds, PixelTransform, SpectrumAxis, axes_from_dicts

__all__ = ["GridDataset", "GridDatasetError", "load_grid", "save_grid"]

_HDF5_SUFFIXES = (".h5", ".hdf5")
_ARRAYS = ("survey", "spectra")
_SCALARS = ("channels", "stride", "transform_origin", "transform_matrix", "axis_start", "axis_stop",
            "axis_name", "axis_units", "spectrum_units", "survey_source", "metadata_json",
            "axes_json")


class GridDatasetError(AexpError, ValueError):
    """A full-grid data set is missing, unreadable, or its parts disagree in shape."""


@dataclass
class GridDataset:
    """A survey and the spectrum at every grid point; see the module docstring for the layout.

    Attributes:
        survey: ``C x H x W`` float32.
        spectra: ``R x Q x L``: the spectrum at survey pixel ``(r * stride, q * stride)``.
        transform: survey pixel -> instrument ``(x, y)`` metres.
        channels: ``C`` names.
        axis: the spectrum axis (``L == axis.n``).
        stride: survey pixels between neighbouring grid points.
        spectrum_units: units of the spectrum values.
        survey_source: what the survey is: ``"image"`` (an independent image; files written before
            this key existed), or e.g. ``"band 455-470 eV of the spectra (not an independent image)"``.
        metadata: provenance of an imported recording (source file and checksum, instrument,
            calibration, survey placement); JSON-ready, ``{}`` when there is none.
        signal_axes: the axes of an N-D measurement (``ky``, ``kx`` of a 4D-STEM scan; ``axis``
            is then the first), ``None`` for spectra.
    """

    survey: np.ndarray
    spectra: np.ndarray
    transform: PixelTransform
    channels: tuple[str, ...]
    axis: SpectrumAxis
    stride: int = 1
    spectrum_units: str = "counts"
    survey_source: str = "image"
    metadata: dict[str, Any] = field(default_factory=dict)
    signal_axes: tuple[SpectrumAxis, ...] | None = None

    def __post_init__(self) -> None:
        self.check()

    def check(self, source: str = "grid data set") -> None:
        """Raise :class:`GridDatasetError` naming the part whose shape disagrees."""
        if self.survey.ndim != 3:
            raise GridDatasetError(f"{source}: survey must be C x H x W, got shape {self.survey.shape}")
        c, h, w = self.survey.shape
        if len(self.channels) != c:
            raise GridDatasetError(f"{source}: {len(self.channels)} channel names for a survey of {c} channels")
        if int(self.stride) != self.stride or self.stride < 1:
            raise GridDatasetError(f"{source}: stride must be a positive integer, got {self.stride!r}")
        want = (math.ceil(h / self.stride), math.ceil(w / self.stride))
        axes = self.signal_axes or (self.axis,)
        dims = " x ".join(a.name for a in self.signal_axes) if self.signal_axes else "L"
        if self.spectra.ndim != 2 + len(axes) or self.spectra.shape[:2] != want:
            raise GridDatasetError(
                f"{source}: spectra must be {want[0]} x {want[1]} x {dims} for a {h} x {w} survey at "
                f"stride {self.stride}, got shape {self.spectra.shape}"
            )
        if self.signal_axes and self.spectra.shape[2:] != tuple(a.n for a in axes):
            raise GridDatasetError(f"{source}: measurements of shape {self.spectra.shape[2:]} but the axes "
                                   f"({', '.join(a.name for a in axes)}) hold {tuple(a.n for a in axes)} values")
        if not self.signal_axes and self.spectra.shape[2] != self.axis.n:
            raise GridDatasetError(
                f"{source}: spectra hold {self.spectra.shape[2]} values each but the axis has {self.axis.n}"
            )
        if abs(np.linalg.det(np.asarray(self.transform.matrix))) == 0:
            raise GridDatasetError(f"{source}: transform_matrix is singular")

    @property
    def bounds(self) -> Bounds:
        """Smallest box holding the centres of the survey's corner pixels."""
        h, w = self.survey.shape[1:]
        corners = self.transform.to_instrument(np.array([[0, 0], [0, w - 1], [h - 1, 0], [h - 1, w - 1]]))
        (xmin, ymin), (xmax, ymax) = corners.min(0), corners.max(0)
        return Bounds(float(xmin), float(xmax), float(ymin), float(ymax))

    def grid_index(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Grid ``(r, q)`` of each position ``N x 2`` and whether it lies on the grid (``N`` bool).

        A position is on the grid when it is within 1e-3 pixel of a survey pixel that is a grid
        point.
        """
        rc = self.transform.to_pixel(np.atleast_2d(np.asarray(positions, dtype=float)))
        near = np.rint(rc)
        r, q = near[:, 0].astype(np.int64), near[:, 1].astype(np.int64)
        rows, cols = self.spectra.shape[:2]
        ok = (np.abs(rc - near).max(axis=1) < 1e-3) & (r % self.stride == 0) & (q % self.stride == 0)
        r, q = r // self.stride, q // self.stride
        ok &= (r >= 0) & (r < rows) & (q >= 0) & (q < cols)
        return np.where(ok, r, 0), np.where(ok, q, 0), ok

    def fields(self) -> dict[str, Any]:
        """The stored keys and values (see the module docstring)."""
        return {
            "survey": np.asarray(self.survey, dtype=np.float32),
            "spectra": np.asarray(self.spectra),
            "channels": np.array(self.channels, dtype=str),
            "stride": int(self.stride),
            "transform_origin": np.asarray(self.transform.origin, dtype=float),
            "transform_matrix": np.asarray(self.transform.matrix, dtype=float),
            "axis_start": float(self.axis.start),
            "axis_stop": float(self.axis.stop),
            "axis_name": self.axis.name,
            "axis_units": self.axis.units,
            "spectrum_units": self.spectrum_units,
            "survey_source": self.survey_source,
            "metadata_json": json.dumps(self.metadata, sort_keys=True),
            # only for N-D measurements, so that a spectra data set keeps its keys
            **({"axes_json": json.dumps([a.to_dict() for a in self.signal_axes])} if self.signal_axes else {}),
        }


def save_grid(path: str | Path, data: GridDataset) -> Path:
    """Write ``data`` as ``.npz`` or, for ``.h5``/``.hdf5``, HDF5. Refuses to replace a file."""
    path = Path(path)
    if path.exists():
        raise GridDatasetError(f"{path} already exists; remove it or choose another name")
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = data.fields()
    if path.suffix in _HDF5_SUFFIXES:
        import h5py

        with h5py.File(path, "w-") as f:
            for key in _ARRAYS:
                f.create_dataset(key, data=fields[key], compression="gzip", compression_opts=4)
            for key in (k for k in _SCALARS if k in fields):
                value = fields[key]
                f.attrs[key] = value.astype(object) if key == "channels" else value
    else:
        with open(path, "xb") as fh:
            np.savez_compressed(fh, **fields)
    return path


def _read_hdf5(path: Path) -> dict[str, Any]:
    import h5py

    with h5py.File(path, "r") as f:
        out: dict[str, Any] = {k: f[k][()] for k in _ARRAYS if k in f}
        for key in _SCALARS:
            if key in f.attrs:
                value = f.attrs[key]
                out[key] = value.decode() if isinstance(value, bytes) else value
    return out


def _read_npz(path: Path) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def load_grid(path: str | Path) -> GridDataset:
    """Read a data set written in the documented layout (by :func:`save_grid` or by hand).

    Raises:
        GridDatasetError: missing file, missing key, or parts whose shapes disagree.
    """
    path = Path(path)
    if not path.is_file():
        raise GridDatasetError(f"{path}: no such data set file")
    try:
        raw = _read_hdf5(path) if path.suffix in _HDF5_SUFFIXES else _read_npz(path)
    except (OSError, ValueError, KeyError) as exc:
        raise GridDatasetError(f"{path}: not a readable {path.suffix or 'npz'} data set ({exc})") from None
    missing = [k for k in (*_ARRAYS, "transform_origin", "transform_matrix", "axis_start", "axis_stop")
               if k not in raw]
    if missing:
        raise GridDatasetError(f"{path}: missing {', '.join(missing)} (see docs/grid-dataset.md)")
    spectra = np.asarray(raw["spectra"])
    channels = raw.get("channels", np.array(["haadf"]))
    matrix = np.asarray(raw["transform_matrix"], dtype=float)
    origin = np.asarray(raw["transform_origin"], dtype=float)
    if matrix.shape != (2, 2) or origin.shape != (2,):
        raise GridDatasetError(f"{path}: transform_matrix must be 2 x 2 and transform_origin 2 values")
    data = GridDataset.__new__(GridDataset)
    data.survey = np.asarray(raw["survey"], dtype=np.float32)
    data.spectra = spectra
    data.transform = PixelTransform(origin=tuple(origin), matrix=(tuple(matrix[0]), tuple(matrix[1])))
    data.channels = tuple(str(c.decode() if isinstance(c, bytes) else c) for c in np.atleast_1d(channels))
    n = spectra.shape[-1] if spectra.ndim else 0
    data.axis = SpectrumAxis(str(raw.get("axis_name", "energy_loss")), str(raw.get("axis_units", "eV")),
                             float(raw["axis_start"]), float(raw["axis_stop"]), int(n))
    data.stride = int(raw.get("stride", 1))
    data.spectrum_units = str(raw.get("spectrum_units", "counts"))
    data.survey_source = str(raw.get("survey_source", "image"))
    try:
        data.metadata = json.loads(str(raw.get("metadata_json", "{}")))
    except json.JSONDecodeError as exc:
        raise GridDatasetError(f"{path}: metadata_json is not valid JSON ({exc})") from None
    data.signal_axes = None
    try:
        axes = json.loads(str(raw.get("axes_json", "[]")))
        if axes:
            data.signal_axes = axes_from_dicts(axes)
    except (json.JSONDecodeError, ValueError) as exc:
        raise GridDatasetError(f"{path}: axes_json is not a list of axes ({exc})") from None
    if data.signal_axes:
        data.axis = data.signal_axes[0]
    data.check(str(path))
    return data
