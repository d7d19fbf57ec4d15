"""``aexp export FOLDER --hdf5 OUT.h5``: a session as one HDF5 file (layout in ``docs/session-format.md``).

The session is only read. The file is written beside its final name and renamed when complete, so a
crash never leaves half a file under ``OUT``. Failed steps keep their row in ``/steps`` with NaN
values; missing numbers are NaN, missing strings empty, a missing spectrum row is -1.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..types import SpectrumAxis, Step
from .store import SessionError, SessionReader

__all__ = ["EXPORT_VERSION", "export_hdf5"]

EXPORT_VERSION = 1
_FLOATS = ("target", "acquisition", "predicted_mean", "predicted_std", "best_so_far")
_STRINGS = ("status", "phase", "command_id", "error")


def _column(steps: list[Step], name: str) -> np.ndarray:
    values = [getattr(s, name) for s in steps]
    if name in _FLOATS:
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return np.array(["" if v is None else str(v) for v in values], dtype=object)


def _write_steps(group: Any, steps: list[Step]) -> None:
    import h5py

    text = h5py.string_dtype()
    group.create_dataset("step", data=np.array([s.step for s in steps], dtype=np.int64))
    group.create_dataset("index", data=np.array([s.index for s in steps], dtype=np.int64))
    group.create_dataset("position", data=np.array([s.position for s in steps], dtype=np.float64).reshape(-1, 2))
    group.create_dataset("pixel", data=np.array([s.pixel for s in steps], dtype=np.float64).reshape(-1, 2))
    group["position"].attrs["units"] = "m"
    group.create_dataset("spectrum_row", data=np.array(
        [-1 if s.spectrum_row is None else s.spectrum_row for s in steps], dtype=np.int64))
    for name in _FLOATS:
        group.create_dataset(name, data=_column(steps, name))
    for name in _STRINGS:
        group.create_dataset(name, data=_column(steps, name), dtype=text)
    timings = group.create_group("timings")
    for key in sorted({k for s in steps for k in s.timings}):
        timings.create_dataset(key, data=np.array([s.timings.get(key, np.nan) for s in steps], dtype=np.float64))
        timings[key].attrs["units"] = "s"


def _write(f: Any, reader: SessionReader) -> None:
    man, steps = reader.manifest.to_dict(), reader.steps
    f.attrs["aexp_export_version"] = EXPORT_VERSION
    f.attrs["session_format_version"] = man["format_version"]
    for key in ("session_id", "created", "seed", "budget"):
        if key in man:
            f.attrs[key] = man[key]
    f.attrs["config"] = json.dumps(man.get("config", {}))
    f.attrs["manifest"] = json.dumps(man)
    f.attrs["summary"] = json.dumps(reader.summary or {})
    f.attrs["dropped"] = json.dumps(reader.dropped)

    survey = f.create_dataset("survey", data=reader.array("survey"), compression="gzip")
    survey.attrs["channels"] = json.dumps(man.get("survey", {}).get("channels", []))
    survey.attrs["transform"] = json.dumps(man.get("survey", {}).get("transform", {}))
    cands = f.create_group("candidates")
    cands.create_dataset("positions", data=reader.array("candidates")).attrs["units"] = "m"
    cands.create_dataset("pixels", data=reader.array("pixels")).attrs["units"] = "survey pixels (row, col)"
    _write_steps(f.create_group("steps"), steps)

    spectra = f.create_group("spectra")
    rows = reader.spectra()
    with_spectrum = [s for s in steps if s.spectrum_row is not None and s.spectrum_row < len(rows)]
    data = rows[[s.spectrum_row for s in with_spectrum]] if with_spectrum else np.empty((0, rows.shape[1]))
    spectra.create_dataset("data", data=data, compression="gzip")
    spectra.create_dataset("step", data=np.array([s.step for s in with_spectrum], dtype=np.int64))
    spectra.create_dataset("position", data=np.array([s.position for s in with_spectrum],
                                                     dtype=np.float64).reshape(-1, 2)).attrs["units"] = "m"
    spectra.create_dataset("target", data=_column(with_spectrum, "target"))
    axis_info = man.get("spectrum_axis")
    if axis_info:
        axis = SpectrumAxis(**axis_info)
        energy = spectra.create_dataset("axis", data=axis.values())
        energy.attrs["name"], energy.attrs["units"] = axis.name, axis.units
    spectra.attrs["units"] = str(man.get("instrument", {}).get("extra", {}).get("spectrum_units", ""))


def export_hdf5(folder: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Write the session in ``folder`` to the HDF5 file ``out``; returns ``out``.

    Raises:
        SessionError: not a session; ``out`` exists (without ``overwrite``) or lies inside the session.
    """
    import h5py

    reader = SessionReader(folder)
    out = Path(out)
    if out.resolve().is_relative_to(reader.folder.resolve()):
        raise SessionError(f"{out} lies inside the session folder; export writes outside it")
    if out.exists() and not overwrite:
        raise SessionError(f"{out} already exists; choose another name or pass --overwrite")
    tmp = out.with_name(out.name + ".partial")
    try:
        with h5py.File(tmp, "w") as f:
            _write(f, reader)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
