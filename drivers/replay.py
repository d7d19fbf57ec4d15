"""The ``replay`` instrument: recorded data behind the Instrument protocol.

``instrument: {driver: replay, options: {path: ...}}`` where ``path`` is either

- a full-grid data set (``.npz``, or ``.h5``/``.hdf5``; layout in ``docs/grid-dataset.md``): the
  survey plus a spectrum at every grid point. Any grid point can be measured, as often as asked (the
  same recorded spectrum comes back), so another policy or model can be tried on real data
  ("what-if"). :meth:`ReplayInstrument.truth` scores the whole grid, so ``aexp bench`` computes
  discovery from the data set's own targets;
- a recording as a microscope wrote it (``scan.dm4``, ``grid.3ds``, ``si.emd``, a ``.npy`` cube, ...),
  imported on the fly by :func:`aexp.io.import_recording` with the options of ``aexp import``
  (``signal``, ``survey``, ``survey_signal``, ``survey_band``, ``pixel_size``, ``stride``, ``axis``,
  ``register``, and ``bias``, ``cycle`` for a hysteresis-loop map; see ``docs/real-data.md``), so no
  conversion is needed to try a policy on it;
- a session folder: only its measured positions exist (:class:`aexp.session.replay.SessionInstrument`);
  asking for another raises :class:`~aexp.session.replay.NotRecorded`.

A relative ``path`` is taken from the working directory. A position off the grid is an error, never
rounded to a neighbour.

Example:
    >>> inst = load_instrument("replay", {"path": "data/grid.npz"})
    >>> inst.measure((0.0, 0.0)).spectrum.shape
    (256,)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from aexp.griddata import GridDataset, load_grid
from aexp.instrument import check_position
from aexp.session.replay import NotRecorded, SessionInstrument
from aexp.session.store import SessionReader
from aexp.targets import Target
from aexp.types import Bounds, InstrumentDescription, Measurement, Survey

__all__ = ["ReplayInstrument", "NotRecorded"]

NAME = "replay"
_GRID_SUFFIXES = (".npz", ".h5", ".hdf5")


def _is_grid_file(path: Path) -> bool:
    """A data set in the documented layout (an HDF5 file may also be a USID/HyperSpy recording)."""
    if path.suffix.lower() == ".npz":
        return True
    if path.suffix.lower() not in _GRID_SUFFIXES or not path.is_file():
        return False
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "spectra" in f and "survey" in f
    except OSError:
        return True  # let load_grid name the problem


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ReplayInstrument:
    """An instrument backed by a full-grid data set.

    Args:
        path: the data set file (or the recording ``data`` was imported from).
        seed: accepted for the driver interface; recorded data has no randomness.
        data: the data set, when already imported from a recording; read from ``path`` otherwise.
    """

    def __init__(self, path: str | Path, seed: int = 0, data: GridDataset | None = None) -> None:
        self.path = Path(path).resolve()
        self.data: GridDataset = load_grid(self.path) if data is None else data
        self._sha256 = _sha256(self.path)

    @classmethod
    def from_options(cls, options: Mapping[str, Any], seed: int = 0) -> ReplayInstrument | SessionInstrument:
        """Build from config options: ``path`` (required). A folder gives a session replay; a
        recording takes the import options besides (module docstring)."""
        if "path" not in options:
            raise ValueError("instrument 'replay': options.path is required (a data set file, a recording "
                             "or a session folder)")
        path = Path(options["path"])
        rest = {k: v for k, v in options.items() if k != "path"}
        if path.is_dir() or _is_grid_file(path):
            if rest:
                raise ValueError(f"instrument 'replay': unknown options {sorted(rest)}; a data set or session "
                                 f"takes only 'path' (the import options are for recordings)")
            return SessionInstrument(SessionReader(path)) if path.is_dir() else cls(path, seed=seed)
        from aexp.io.recordings import ImportOptions, import_recording

        opts = ImportOptions.from_mapping(rest, "instrument 'replay' options")
        return cls(path, seed=seed, data=import_recording(path, opts))

    @property
    def bounds(self) -> Bounds:
        return self.data.bounds

    def describe(self) -> InstrumentDescription:
        return InstrumentDescription(
            name=NAME,
            bounds=self.bounds,
            survey_shape=tuple(int(v) for v in self.data.survey.shape),
            channels=self.data.channels,
            spectrum_axis=self.data.axis,
            measurement_axes=self.data.signal_axes,
            units="m",
            extra={
                "path": str(self.path),
                "sha256": self._sha256,
                "grid_shape": list(self.data.spectra.shape[:2]),
                "stride": self.data.stride,
                "spectrum_units": self.data.spectrum_units,
                "survey_source": self.data.survey_source,
                "recording": self.data.metadata,
            },
        )

    def survey(self) -> Survey:
        return Survey(self.data.survey.copy(), self.data.transform, self.data.channels)

    def _rows(self, positions: np.ndarray) -> np.ndarray:
        """Recorded spectra ``N x L`` (patterns ``N x ky x kx``) at positions ``N x 2``; off-grid
        positions are an error."""
        r, q, ok = self.data.grid_index(positions)
        if not ok.all():
            x, y = np.atleast_2d(positions)[int(np.flatnonzero(~ok)[0])]
            raise NotRecorded(
                f"{self.path.name} holds no spectrum at (x={x:.6g} m, y={y:.6g} m): its grid has a "
                f"spectrum every {self.data.stride} survey pixel(s); choose a candidate stride that "
                f"is a multiple of it"
            )
        return np.asarray(self.data.spectra[r, q], dtype=np.float64)

    def measure(self, position: tuple[float, float], command_id: str = "") -> Measurement:
        check_position(self.bounds, position)
        xy = (float(position[0]), float(position[1]))
        return Measurement(self._rows(np.array([xy]))[0], self.data.axis, xy,
                           metadata={"command_id": command_id}, axes=self.data.signal_axes)

    def truth(self, positions: np.ndarray, target: Target) -> np.ndarray:
        """The target of the recorded spectrum (or pattern) at each position ``N x 2`` -> ``N``."""
        axes = self.data.signal_axes
        values = tuple(a.values() for a in axes) if axes else self.data.axis.values()
        return np.asarray(target(self._rows(positions), values), dtype=float)
