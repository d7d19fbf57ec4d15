"""``aexp export FOLDER --format hdf5|hspy|zspy|nsid OUT``: a session in the field's file formats.

- ``hdf5`` (the default; also ``--hdf5 OUT``): the whole session in one HDF5 file of our own layout.
- ``hspy`` / ``zspy``: HyperSpy's own formats, written by rosettasciio: ``OUT`` is a ``Signal1D``
  with a spectrum per measured point (navigation axis ``step``, the spectrum axis with its units)
  and ``OUT``'s sibling ``<stem>_survey<suffix>`` the survey as a calibrated ``Signal2D``.
- ``nsid``: pycroscopy's N-dimensional spectroscopy and imaging format (HDF5), written by pyNSID:
  the spectra as a sidpy point cloud (coordinates = positions) and the survey, in one file.

Layouts and examples: ``docs/export.md`` (and ``docs/session-format.md`` for ``hdf5``).

The session is only read. Every file is written beside its final name and renamed when complete, so a
crash never leaves half a file under ``OUT``. Only regular files are created or replaced: an
existing folder, link, device, socket or pipe under the name is refused, with or without
``--overwrite``. Failed steps keep their row in ``/steps`` (``hdf5``) with NaN values; missing numbers
are NaN, missing strings empty, a missing spectrum row is -1. The other formats hold the measured
spectra only (a failed step has none).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..types import PixelTransform, Step
from .store import SessionError, SessionReader

__all__ = ["EXPORT_VERSION", "FORMATS", "ExportError", "export_hdf5", "export_session", "survey_path"]

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
    _write_weights(group, steps)
    timings = group.create_group("timings")
    for key in sorted({k for s in steps for k in s.timings}):
        timings.create_dataset(key, data=np.array([s.timings.get(key, np.nan) for s in steps], dtype=np.float64))
        timings[key].attrs["units"] = "s"


def _write_weights(group: Any, steps: list[Step]) -> None:
    """``weights/<name>``: the surrogate's weight of each input group (and of the ``joint`` and ``dkl`` members) at
    every step, NaN where a step recorded none (initial points, other surrogates); 0 where a step
    recorded weights without that name. Absent when no step has weights."""
    names: list[str] = []
    for s in steps:
        names += [g for g in (s.weights or {}) if g not in names]
    if not names:
        return
    weights = group.create_group("weights")
    weights.attrs["order"] = json.dumps(names)
    for name in names:
        weights.create_dataset(name, data=np.array(
            [float(s.weights.get(name, 0.0)) if s.weights else np.nan for s in steps], dtype=np.float64))


def _write(f: Any, reader: SessionReader) -> None:
    man, steps = reader.manifest, reader.steps
    f.attrs["aexp_export_version"] = EXPORT_VERSION
    f.attrs["session_format_version"] = man.format_version
    for key, value in (("session_id", man.session_id), ("created", man.created), ("seed", man.seed),
                       ("budget", man.budget)):
        f.attrs[key] = value
    f.attrs["config"] = json.dumps(man.config)
    f.attrs["manifest"] = json.dumps(man.to_dict())
    f.attrs["summary"] = json.dumps(reader.summary or {})
    f.attrs["dropped"] = json.dumps(reader.dropped)

    survey = f.create_dataset("survey", data=reader.array("survey"), compression="gzip")
    survey.attrs["channels"] = json.dumps(list(man.survey.channels))
    survey.attrs["transform"] = json.dumps(man.survey.transform.to_dict())
    cands = f.create_group("candidates")
    cands.create_dataset("positions", data=reader.array("candidates")).attrs["units"] = "m"
    cands.create_dataset("pixels", data=reader.array("pixels")).attrs["units"] = "survey pixels (row, col)"
    _write_steps(f.create_group("steps"), steps)

    spectra = f.create_group("spectra")
    rows = reader.spectra()
    with_spectrum = [s for s in steps if s.spectrum_row is not None and s.spectrum_row < len(rows)]
    data = rows[_spectrum_rows(with_spectrum)] if with_spectrum else np.empty((0, *rows.shape[1:]))
    spectra.create_dataset("data", data=data, compression="gzip")
    spectra.create_dataset("step", data=np.array([s.step for s in with_spectrum], dtype=np.int64))
    spectra.create_dataset("position", data=np.array([s.position for s in with_spectrum],
                                                     dtype=np.float64).reshape(-1, 2)).attrs["units"] = "m"
    spectra.create_dataset("target", data=_column(with_spectrum, "target"))
    axes = man.signal_axes
    if len(axes) == 1:
        energy = spectra.create_dataset("axis", data=axes[0].values())
        energy.attrs["name"], energy.attrs["units"] = axes[0].name, axes[0].units
    else:  # N-D measurements (diffraction patterns): one calibrated axis per dimension of ``data``
        group = spectra.create_group("axes")
        for i, a in enumerate(axes):
            values = group.create_dataset(a.name, data=a.values())
            values.attrs["units"], values.attrs["dimension"] = a.units, i + 1
        spectra.attrs["axes"] = json.dumps([a.name for a in axes])
    spectra.attrs["units"] = _spectrum_units(reader)


def _spectrum_rows(steps: list[Step]) -> list[int]:
    """The row of ``spectra.bin`` of each step; the callers keep only steps that have one."""
    return [s.spectrum_row for s in steps if s.spectrum_row is not None]


def _spectrum_units(reader: SessionReader) -> str:
    """What the spectra count (``counts``, ``pm/V``...), as the instrument described it."""
    return str(reader.manifest.instrument.extra.get("spectrum_units", ""))


class ExportError(SessionError):
    """The export cannot be written: the output path, the session's content or a missing package."""


def _check_output(out: Path, session: Path, overwrite: bool) -> None:
    """Refuse every ``out`` but a new file, or (with ``overwrite``) an existing regular file."""
    if out.resolve().is_relative_to(session.resolve()):
        raise ExportError(f"{out} lies inside the session folder; export writes outside it")
    parent = out.absolute().parent
    if not parent.exists():
        raise ExportError(f"{out}: the folder {parent} does not exist; create it first")
    if not parent.is_dir():
        raise ExportError(f"{out}: {parent} is not a folder")
    try:
        mode = os.lstat(out).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        raise ExportError(f"{out} is a folder; export writes one file: give a file name, e.g. {out / 'session'}")
    if not stat.S_ISREG(mode):
        kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file (a device, socket or pipe)"
        raise ExportError(f"{out} is {kind}; export creates or replaces regular files only")
    if not overwrite:
        raise ExportError(f"{out} already exists; choose another name or pass --overwrite")


@contextmanager
def _replacing(outs: list[Path], session: Path, overwrite: bool) -> Iterator[list[Path]]:
    """Temporary files beside each of ``outs``; renamed onto them when the block ends without error."""
    for out in outs:
        _check_output(out, session, overwrite)
    tmps: list[Path] = []
    try:
        for out in outs:
            tmp = out.absolute().parent / f".{out.name}.{secrets.token_hex(4)}.partial"
            # O_EXCL: never write through a name someone else made; 0o666 & umask, as a plain open would
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            tmps.append(tmp)
        yield tmps
        for out in outs:  # the names may have changed while we wrote: check again before replacing
            _check_output(out, session, overwrite)
        for tmp, out in zip(tmps, outs):
            os.replace(tmp, out)
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)


def export_hdf5(folder: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Write the session in ``folder`` to the HDF5 file ``out``; returns ``out``.

    Raises:
        SessionError: not a session; ``out`` exists (without ``overwrite``), is not a regular file,
            has no parent folder, or lies inside the session.
    """
    import h5py

    reader = SessionReader(folder)
    out = Path(out)
    with _replacing([out], reader.folder, overwrite) as (tmp,):
        with h5py.File(tmp, "w") as f:
            _write(f, reader)
    return out


# --- what the field's formats hold: the measured spectra and the calibrated survey ------------------


@dataclass(frozen=True)
class _Measured:
    """The steps that have a spectrum, in step order (``m`` of them) and what the formats need of the rest.

    Attributes:
        spectra: ``m x L`` float64.
        spectra: ``m x L``, or ``m x ky x kx`` for diffraction patterns.
        axes: ``(name, units, offset, scale)`` of each axis of a measurement.
        units: the spectra's units (e.g. ``counts``), ``""`` if unknown.
        step, index: ``m`` int64; position: ``m x 2`` (x, y) m; pixel: ``m x 2`` (row, col); target: ``m``.
    """

    spectra: np.ndarray
    axes: list[tuple[str, str, float, float]]
    units: str
    step: np.ndarray
    index: np.ndarray
    position: np.ndarray
    pixel: np.ndarray
    target: np.ndarray


def _measured(reader: SessionReader) -> _Measured:
    rows = reader.spectra()
    steps = [s for s in reader.steps if s.spectrum_row is not None and s.spectrum_row < len(rows)]
    if not steps:
        raise ExportError(
            f"{reader.folder}: no step has a recorded spectrum (recording.spectra was off, or every "
            f"step failed); --format hdf5 exports the steps without spectra"
        )
    axes = [(ax.name, ax.units, float(ax.start), float(ax.scale)) for ax in reader.manifest.signal_axes]
    return _Measured(
        spectra=rows[_spectrum_rows(steps)],
        axes=axes,
        units=_spectrum_units(reader),
        step=np.array([s.step for s in steps], dtype=np.int64),
        index=np.array([s.index for s in steps], dtype=np.int64),
        position=np.array([s.position for s in steps], dtype=np.float64).reshape(-1, 2),
        pixel=np.array([s.pixel for s in steps], dtype=np.float64).reshape(-1, 2),
        target=_column(steps, "target"),
    )


@dataclass(frozen=True)
class _ImageAxis:
    """One axis of the survey image: ``value = offset + scale * pixel`` in ``units``."""

    name: str
    units: str
    offset: float
    scale: float

    def values(self, n: int) -> np.ndarray:
        return self.offset + self.scale * np.arange(n)


def _survey_axes(transform: PixelTransform) -> tuple[_ImageAxis, _ImageAxis]:
    """Axes of the image's rows and columns in instrument metres, when the scan is axis-aligned.

    ``[x, y] = origin + matrix @ [row, col]``: rows run along y and columns along x when the
    matrix is anti-diagonal (the usual scan), the other way round when it is diagonal. A rotated or
    skewed scan has no axis-aligned calibration: the axes are then pixel numbers (``px``) and the
    transform is in the metadata.
    """
    (a, b), (c, d) = transform.matrix
    ox, oy = transform.origin
    if a == 0 and d == 0:
        return _ImageAxis("y", "m", oy, c), _ImageAxis("x", "m", ox, b)
    if b == 0 and c == 0:
        return _ImageAxis("x", "m", ox, a), _ImageAxis("y", "m", oy, d)
    return _ImageAxis("row", "px", 0.0, 1.0), _ImageAxis("column", "px", 0.0, 1.0)


@dataclass(frozen=True)
class _SurveyImage:
    """The survey: ``image`` ``H x W`` (one channel) or ``C x H x W``, with its calibrated axes."""

    image: np.ndarray
    channels: list[str]
    rows: _ImageAxis
    cols: _ImageAxis
    transform: dict[str, Any]


def _survey(reader: SessionReader) -> _SurveyImage:
    info = reader.manifest.survey
    image = reader.array("survey")
    rows, cols = _survey_axes(info.transform)
    channels = [str(c) for c in info.channels] or [f"channel {i}" for i in range(len(image))]
    return _SurveyImage(image[0] if len(image) == 1 else image, channels, rows, cols, info.transform.to_dict())


def _provenance(reader: SessionReader) -> dict[str, Any]:
    """The session's record, as JSON strings (they hold nulls and nested lists the formats cannot)."""
    return {
        "aexp_export_version": EXPORT_VERSION,
        "manifest": json.dumps(reader.manifest.to_dict()),
        "summary": json.dumps(reader.summary or {}),
        "dropped": json.dumps(reader.dropped),
    }


def survey_path(out: str | Path) -> Path:
    """Where ``hspy``/``zspy`` export put the survey beside ``out``: ``run.hspy`` -> ``run_survey.hspy``."""
    out = Path(out)
    return out.with_name(f"{out.stem}_survey{out.suffix}")


# --- HyperSpy (rosettasciio writes the files) ---------------------------------------------------------


def _hs_axis(name: str, units: str, offset: float, scale: float, size: int, navigate: bool) -> dict[str, Any]:
    return {"_type": "UniformDataAxis", "name": name, "units": units or None, "offset": offset,
            "scale": scale, "size": size, "navigate": navigate, "is_binned": False}


def _hs_signal(data: np.ndarray, axes: list[dict[str, Any]], title: str, quantity: str,
               extra: dict[str, Any], original: dict[str, Any]) -> dict[str, Any]:
    """A signal dictionary as HyperSpy's ``_to_dictionary`` makes it (what rosettasciio writers take)."""
    folding = {"original_axes_manager": None, "original_shape": None, "signal_unfolded": False, "unfolded": False}
    return {
        "data": data,
        "axes": axes,
        "metadata": {"General": {"title": title}, "Signal": {"signal_type": "", "quantity": quantity},
                     "_HyperSpy": {"Folding": folding}, **extra},
        "original_metadata": original,
        "learning_results": {},
        "models": {},
        "attributes": {"_lazy": False, "ragged": False},
        "tmp_parameters": {},
        "package_info": {"package": "hyperspy", "package_version": "2.0"},
    }


def _hyperspy_signals(reader: SessionReader, survey_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(spectra, survey)`` signal dictionaries: a ``Signal1D`` over the steps and a ``Signal2D``."""
    m, sv = _measured(reader), _survey(reader)
    man = reader.manifest
    sid = man.session_id
    step_axis = {"_type": "DataAxis", "name": "step", "units": None, "axis": m.step.astype(np.float64),
                 "navigate": True, "is_binned": False}
    points = {"session_id": sid, "seed": man.seed, "survey_file": survey_name,
              "step": m.step, "index": m.index, "position_m": m.position, "pixel": m.pixel, "target": m.target}
    signal_axes = [_hs_axis(name, units, offset, scale, size, False)
                   for (name, units, offset, scale), size in zip(m.axes, m.spectra.shape[1:])]
    patterns = len(m.axes) == 2
    spectra = _hs_signal(
        m.spectra, [step_axis, *signal_axes],
        f"aexp {sid} {'diffraction patterns' if patterns else 'spectra'}",
        f"Intensity ({m.units})" if m.units else "Intensity",
        {"aexp": points}, {"aexp": _provenance(reader)},
    )
    if patterns:  # a stack of patterns with calibrated detector axes: pyxem's ElectronDiffraction2D
        spectra["metadata"]["Signal"]["signal_type"] = "electron_diffraction"
    image_axes = [_hs_axis(a.name, a.units, a.offset, a.scale, n, False)
                  for a, n in zip((sv.rows, sv.cols), sv.image.shape[-2:])]
    if sv.image.ndim == 3:
        image_axes.insert(0, _hs_axis("channel", "", 0.0, 1.0, len(sv.image), True))
    survey = _hs_signal(
        sv.image, image_axes, f"aexp {sid} survey", "Intensity",
        {"aexp": {"session_id": sid, "channels": sv.channels, "transform": json.dumps(sv.transform),
                  "spectra_file": ""}},
        {"aexp": _provenance(reader)},
    )
    return spectra, survey


def _need(module: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ExportError(f"this export needs {extra} ({exc}); install it with: pip install 'aexp[export]'") from None


def _write_hspy(reader: SessionReader, outs: list[Path], tmps: list[Path]) -> None:
    writer = _need("rsciio.hspy", "rosettasciio with h5py")
    spectra, survey = _hyperspy_signals(reader, outs[1].name)
    survey["metadata"]["aexp"]["spectra_file"] = outs[0].name
    for signal, tmp in zip((spectra, survey), tmps):
        writer.file_writer(str(tmp), signal, show_progressbar=False)


def _zip_folder(folder: Path, dest: Path) -> None:
    """Pack a zarr folder store as a zip that ``zarr.ZipStore`` reads (stored: chunks are compressed)."""
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                z.write(path, path.relative_to(folder).as_posix())


def _write_zspy(reader: SessionReader, outs: list[Path], tmps: list[Path]) -> None:
    """HyperSpy's zarr format as one zip file per signal (``hs.load`` opens a zipped ``.zspy``).

    rosettasciio writes a zarr folder first and the folder is packed afterwards: its own zip store
    rewrites metadata entries in place, which a zip cannot do without duplicate entries.
    """
    writer = _need("rsciio.zspy", "rosettasciio[zspy] (zarr < 3)")
    spectra, survey = _hyperspy_signals(reader, outs[1].name)
    survey["metadata"]["aexp"]["spectra_file"] = outs[0].name
    for signal, tmp in zip((spectra, survey), tmps):
        folder = Path(tempfile.mkdtemp(prefix=f".{tmp.name}.", dir=tmp.parent))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # zarr 2 announces its v3 store names
                writer.file_writer(str(folder / "store.zspy"), signal, show_progressbar=False)
            _zip_folder(folder / "store.zspy", tmp)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


# --- NSID (pyNSID writes the datasets) ----------------------------------------------------------------


def _write_nsid(reader: SessionReader, outs: list[Path], tmps: list[Path]) -> None:
    """``/Measurement_000/Channel_000``: the spectra, a sidpy point cloud whose coordinates are the
    positions (m); ``/Measurement_000/Channel_001``: the survey image (stack), calibrated in m."""
    import h5py

    sidpy = _need("sidpy", "sidpy")
    hdf_io = _need("pyNSID.io.hdf_io", "pyNSID")
    m, sv = _measured(reader), _survey(reader)
    sid = reader.manifest.session_id
    spectra = sidpy.Dataset.from_array(m.spectra, title="spectra", datatype="point_cloud",
                                       coordinates=m.position, units=m.units or "a.u.", quantity="intensity")
    spectra.set_dimension(0, sidpy.Dimension(m.step.astype(np.float64), name="step", quantity="step",
                                             units="step", dimension_type="point_cloud"))
    # a spectrum's axis is spectral; a diffraction pattern's two are scattering angles (reciprocal)
    kind = "spectral" if len(m.axes) == 1 else "reciprocal"
    for i, (name, units, offset, scale) in enumerate(m.axes, start=1):
        spectra.set_dimension(i, sidpy.Dimension(offset + scale * np.arange(m.spectra.shape[i]), name=name,
                                                 quantity=name, units=units or "channel", dimension_type=kind))
    spectra.metadata = {"aexp": {"session_id": sid, "step": m.step, "index": m.index, "position_m": m.position,
                                 "pixel": m.pixel, "target": m.target}}
    spectra.original_metadata = {"aexp": _provenance(reader)}

    stack = sv.image.ndim == 3
    survey = sidpy.Dataset.from_array(sv.image, title="survey", datatype="image_stack" if stack else "image",
                                      units="a.u.", quantity="intensity")
    dims = [(sv.rows, sv.image.shape[-2]), (sv.cols, sv.image.shape[-1])]
    if stack:
        survey.set_dimension(0, sidpy.Dimension(np.arange(len(sv.image)), name="channel", quantity="channel",
                                                units="channel", dimension_type="channel"))
    for i, (a, n) in enumerate(dims, start=int(stack)):
        survey.set_dimension(i, sidpy.Dimension(a.values(n), name=a.name, quantity="length" if a.units == "m"
                                                else "pixel", units=a.units, dimension_type="spatial"))
    survey.metadata = {"aexp": {"session_id": sid, "channels": sv.channels, "transform": json.dumps(sv.transform)}}
    with h5py.File(tmps[0], "w") as f:
        group = f.create_group("Measurement_000")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # pyNSID's own use of old h5py/numpy names
            warnings.simplefilter("ignore", FutureWarning)  # and of its own soon-removed helpers
            hdf_io.write_nsid_dataset(spectra, group.create_group("Channel_000"), main_data_name="spectra")
            hdf_io.write_nsid_dataset(survey, group.create_group("Channel_001"), main_data_name="survey")


FORMATS: dict[str, Callable[[SessionReader, list[Path], list[Path]], None]] = {
    "hspy": _write_hspy,
    "zspy": _write_zspy,
    "nsid": _write_nsid,
}
"""Writers of the field's formats by ``--format`` name (``hdf5`` is :func:`export_hdf5`)."""


def export_session(folder: str | Path, out: str | Path, format: str = "hdf5", overwrite: bool = False) -> list[Path]:
    """Write the session in ``folder`` to ``out`` in ``format``; returns the files written.

    ``hspy`` and ``zspy`` write two files, ``out`` (the spectra) and :func:`survey_path` of it (the
    survey); ``hdf5`` and ``nsid`` write ``out`` alone.

    Example:
        >>> export_session("runs/s1", "s1.hspy", format="hspy")   # then hs.load("s1.hspy")
        [PosixPath('s1.hspy'), PosixPath('s1_survey.hspy')]

    Raises:
        ExportError: an unknown format, a missing package, a session without spectra, or an output
            that exists (without ``overwrite``), is not a regular file, has no parent folder, or lies
            inside the session. :class:`SessionError` for a folder that is not a session.
    """
    out = Path(out)
    if format == "hdf5":
        return [export_hdf5(folder, out, overwrite=overwrite)]
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; known: hdf5, {', '.join(FORMATS)}")
    reader = SessionReader(folder)
    outs = [out] if format == "nsid" else [out, survey_path(out)]
    with _replacing(outs, reader.folder, overwrite) as tmps:
        FORMATS[format](reader, outs, tmps)
    return outs
