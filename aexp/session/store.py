"""The session folder: an append-only, crash-safe record of one experiment.

Layout (format version 1)::

    manifest.json      config, seed, versions, instrument description, spectrum layout
    survey.npy         C x H x W float32 survey image
    candidates.npy     N x 2 float64 instrument positions (x, y) of the candidates, metres
    pixels.npy         N x 2 float64 survey (row, col) of the candidates
    steps.jsonl        one JSON object per completed measurement (a :class:`aexp.types.Step`)
    spectra.bin        raw little-endian float64, one row of L values per recorded spectrum;
                       a step's ``spectrum_row`` points into it
    measurements.zarr  N-D measurements (diffraction patterns ``ky x kx``) instead of spectra.bin:
                       a Zarr v2 folder, one chunk per row (:mod:`aexp.session.zarr_rows`)
    summary.json       written when the run ends (completed, interrupted or failed)

A step is durable before the next command goes to the instrument: its spectrum row is appended and
fsynced (an N-D row: its chunk written, fsynced and renamed), then its JSON line is appended and fsynced. A reader trusts only complete lines; a torn last
line (a crash mid-write) is reported in :attr:`SessionReader.dropped` and ignored, never silently.
Nothing is pickled.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..types import Step
from .durable import _fsync_dir, _write_durable
from .manifest import FORMAT_VERSION, Manifest, SessionError
from .zarr_rows import MEASUREMENTS, ZarrRows

__all__ = [
    "FORMAT_VERSION",
    "Recorder",
    "SessionError",
    "SessionWriter",
    "SessionReader",
    "MemoryRecorder",
    "write_json",
]

SPECTRUM_DTYPE = "<f8"


@runtime_checkable
class Recorder(Protocol):
    """Where a campaign's record goes: a session folder (:class:`SessionWriter`), memory
    (:class:`MemoryRecorder`, for benchmarks), or the replay checker that compares each step with the
    recorded one.

    ``append_step`` must make the step durable (for a writer: on disk) before it returns, since the
    next command goes to the instrument right after.

    Example:
        >>> rec = MemoryRecorder()
        >>> rec.append_step(step, spectrum)      # spectrum: ``L`` floats, or None
    """

    def write_json(self, name: str, data: dict[str, Any]) -> Any: ...

    def write_array(self, name: str, array: np.ndarray) -> Any: ...

    def append_step(self, step: Step, spectrum: np.ndarray | None = None) -> Step: ...

    def close(self) -> None: ...


def _set_aside(path: Path, size: int) -> Path:
    """Move the bytes of ``path`` past ``size`` to a new ``recovered-<n>.bin``, then cut them off."""
    n = 0
    while (path.parent / f"recovered-{n}.bin").exists():
        n += 1
    with open(path, "rb") as fh:
        fh.seek(size)
        tail = fh.read()
    aside = path.parent / f"recovered-{n}.bin"
    header = json.dumps({"from": path.name, "offset": size, "bytes": len(tail)}).encode() + b"\n"
    _write_durable(aside, lambda out: out.write(header + tail))
    with open(path, "r+b") as fh:
        fh.truncate(size)
        fh.flush()
        os.fsync(fh.fileno())
    return aside


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Replace ``path`` with ``data`` as JSON, atomically and durably."""
    _write_durable(path, lambda fh: fh.write(json.dumps(data, indent=2).encode()))
    return path


@contextmanager
def _no_interrupt() -> Iterator[None]:
    """Defer Ctrl-C until a record is fully written (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[Any] = []
    previous = signal.signal(signal.SIGINT, lambda *a: pending.append(a))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending and callable(previous):
            previous(*pending[0])


#: The marker a session folder carries from the moment aexp creates it (before any training or
#: measurement), so a folder left by a crash at any point is still recognised as aexp's own.
MARKER = ".aexp-session"
LOCK = ".aexp-lock"
#: What aexp writes into a session folder; ``--overwrite`` deletes a folder holding nothing else.
SESSION_FILES = (
    MARKER, LOCK, "manifest.json", "survey.npy", "candidates.npy", "pixels.npy", "steps.jsonl",
    "spectra.bin", MEASUREMENTS, "summary.json", "session.png", "recovered-*.bin", "*.tmp", "aexp.log",
    "registrations.jsonl",  # drift corrections (aexp.drift)
    # the operator's channel and record (aexp.live): commands in, applied actions, the page's state
    "control.jsonl", "actions.jsonl", "live.json", "maps.npz",
)


def is_session_folder(folder: Path) -> bool:
    """Whether ``folder`` was made by aexp: it has the marker, or aexp's lock and nothing but session
    files (a kill before the marker was written), or (written before the marker existed) a
    ``manifest.json`` with a format version."""
    if (folder / MARKER).is_file():
        return True
    if (folder / LOCK).is_file() and not foreign_entries(folder):
        return True  # killed between taking the lock and writing the marker
    try:
        raw = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(raw, dict) and isinstance(raw.get("format_version"), int)


def foreign_entries(folder: Path) -> list[str]:
    """Entries of ``folder`` that aexp does not write into a session (sub-folders included)."""
    return sorted(
        e.name for e in folder.iterdir()
        if not (e.is_file() and not e.is_symlink() and any(fnmatch.fnmatchcase(e.name, pat) for pat in SESSION_FILES))
        and not _is_measurement_store(e)
    )


def _is_measurement_store(entry: Path) -> bool:
    """Whether ``entry`` is the session's ``measurements.zarr`` (a real folder of plain files only)."""
    return (entry.name == MEASUREMENTS and entry.is_dir() and not entry.is_symlink()
            and all(c.is_file() and not c.is_symlink() for c in entry.iterdir()))


class SessionLock:
    """An exclusive lock on a session folder, held by the one process that writes it.

    The operating system releases it when the process ends, however it ends (kill -9 included), so
    a crashed run never blocks its own ``resume``. The holder's process id is written into the lock
    file, so a refused writer can say who holds it.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK
        self._fh = open(self.path, "a+b")  # noqa: SIM115 (held open while the lock is held)
        try:
            _try_lock(self._fh)
        except OSError:
            self._fh.seek(0)
            holder = self._fh.read(200).decode("utf-8", "replace").strip() or "another process"
            self._fh.close()
            raise SessionError(
                f"{folder} is being written by {holder}; wait for it to end or stop it first "
                f"(one writer per session: run, resume)"
            ) from None
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(f"process {os.getpid()} ({' '.join(sys.argv[:2]) or 'python'})".encode())
        self._fh.flush()

    def release(self) -> None:
        if not self._fh.closed:
            self._fh.close()  # closing the file releases the lock


def _try_lock(fh: Any) -> None:
    if sys.platform == "win32":  # no fcntl there; a platform test, so type checkers see one branch
        import msvcrt

        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
        return
    import fcntl

    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def writer_running(folder: Path) -> bool:
    """Whether a process holds ``folder``'s :class:`SessionLock` now (a run or resume is writing it).

    Probes with a shared lock that is released at once: nothing is written, so a finished or
    crashed session is never touched."""
    path = Path(folder) / LOCK
    if not path.is_file():
        return False
    with open(path, "rb") as fh:
        if sys.platform == "win32":  # msvcrt has no shared probe: a non-blocking try, released at once
            import msvcrt

            try:
                msvcrt.locking(fh.fileno(), msvcrt.LK_NBRLCK, 1)
            except OSError:
                return True
            msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
            return False
        import fcntl

        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return False


def check_out_folder(folder: Path, overwrite: bool) -> None:
    """Raise :class:`SessionError` unless a new session may be written to ``folder`` (nothing is changed)."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise SessionError(f"{folder} exists and is not a folder; choose another --out")
    if not any(e.name != LOCK for e in folder.iterdir()):
        return
    if not overwrite:
        raise SessionError(
            f"{folder} already exists and is not empty; choose another --out or pass "
            f"--overwrite to replace a previous session"
        )
    if not is_session_folder(folder):
        raise SessionError(f"{folder} is not a session folder made by aexp; refusing to overwrite it")
    foreign = foreign_entries(folder)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise SessionError(
            f"{folder} holds files aexp did not write ({shown}); refusing to overwrite it: move them or "
            f"choose another --out"
        )


class SessionWriter:
    """Creates a session folder and appends to it; holds the folder's :class:`SessionLock` until closed.

    Refuses to write into an existing non-empty folder unless ``overwrite`` is set, and even then
    only replaces a folder that aexp made (:func:`is_session_folder`) and that holds nothing but
    session files (:data:`SESSION_FILES`), and only while no other process writes it.
    """

    def __init__(self, folder: str | Path, overwrite: bool = False) -> None:
        self.folder = Path(folder)
        check_out_folder(self.folder, overwrite)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = SessionLock(self.folder)
        try:
            check_out_folder(self.folder, overwrite)  # again, now that no other writer can start
            for entry in self.folder.iterdir():
                if entry.name == MEASUREMENTS and _is_measurement_store(entry):
                    shutil.rmtree(entry)
                elif entry.name != LOCK:
                    entry.unlink()
            write_json(self.folder / MARKER, {"format": "aexp-session", "format_version": FORMAT_VERSION})
            self._open(rows=0, length=None)
        except BaseException:
            self._lock.release()
            raise

    def _open(self, rows: int, length: int | None, nd: ZarrRows | None = None) -> None:
        self._steps = open(self.folder / "steps.jsonl", "ab")
        self._spectra = open(self.folder / "spectra.bin", "ab")
        self._rows = rows
        self._length = length
        self._nd = nd  # the N-D store, once the first N-D measurement came (or on resume)
        _fsync_dir(self.folder)

    @classmethod
    def append_to(cls, reader: SessionReader, lock: SessionLock | None = None) -> SessionWriter:
        """Reopen a recorded session to add steps after its last complete one (``aexp resume``).

        Bytes past the last complete record (a torn step line, a spectrum row whose step line was
        never written, a torn row) are first moved, unchanged, to ``recovered-<n>.bin`` in the
        folder, so appending can never glue a new record onto a torn one and nothing is lost.
        """
        folder = reader.folder
        if lock is None:
            lock = SessionLock(folder)  # before anything is moved aside
        elif Path(lock.path).parent.resolve() != folder.resolve():
            raise SessionError(f"the lock held is not {folder}'s")
        length = reader.spectrum_length
        rows = sum(1 for s in reader.steps if s.spectrum_row is not None)
        nd = reader.measurement_store()
        keep = {
            "steps.jsonl": reader.steps_bytes,
            "spectra.bin": 0 if nd else rows * (length or 0) * np.dtype(SPECTRUM_DTYPE).itemsize,
        }
        for name, size in keep.items():
            path = folder / name
            if path.exists() and path.stat().st_size > size:
                extra = path.stat().st_size - size
                aside = _set_aside(path, size)
                reader.dropped.append(f"{name}: {extra} bytes past the last complete step moved to {aside.name}")
        if nd is not None:
            reader.dropped.extend(nd.set_aside(rows))
        self = cls.__new__(cls)
        self.folder = folder
        self._lock = lock
        self._open(rows=rows, length=length if rows and nd is None else None, nd=nd)
        return self

    def write_json(self, name: str, data: dict[str, Any]) -> Path:
        return write_json(self.folder / name, data)

    def write_array(self, name: str, array: np.ndarray) -> Path:
        path = self.folder / f"{name}.npy"
        _write_durable(path, lambda fh: np.save(fh, np.asarray(array), allow_pickle=False))
        return path

    def append_step(self, step: Step, spectrum: np.ndarray | None = None) -> Step:
        """Make ``step`` (and its spectrum) durable. Returns the step with ``spectrum_row`` set."""
        row = None
        nd = spectrum is not None and (np.ndim(spectrum) > 1 or self._nd is not None)
        if spectrum is not None:
            row = np.ascontiguousarray(spectrum, dtype=SPECTRUM_DTYPE)
            if nd:
                self._check_nd(row)
            else:
                row = row.ravel()
                if self._length is not None and row.size != self._length:
                    raise SessionError(f"spectrum of {row.size} values; this session records {self._length}")
            step.spectrum_row = self._rows
        # serialise first: a record that cannot be written leaves nothing half-done on disk
        line = (json.dumps(step.to_dict(), allow_nan=False) + "\n").encode()
        with _no_interrupt():
            if row is not None and nd:
                assert self._nd is not None
                self._nd.append(self._rows, row)
                self._rows += 1
            elif row is not None:
                self._spectra.write(row.tobytes())
                self._spectra.flush()
                os.fsync(self._spectra.fileno())
                self._length = row.size
                self._rows += 1
            self._steps.write(line)
            self._steps.flush()
            os.fsync(self._steps.fileno())
        return step

    def _check_nd(self, row: np.ndarray) -> None:
        """An N-D measurement goes to ``measurements.zarr``; a session records one shape, one kind."""
        if self._nd is None:
            if self._rows:
                raise SessionError(f"a measurement of shape {row.shape}; this session records spectra of "
                                   f"{self._length} values")
            self._nd = ZarrRows(self.folder / MEASUREMENTS, row.shape, axes=self._recorded_axes(row.shape))
        elif row.shape != self._nd.shape:
            raise SessionError(f"a measurement of shape {row.shape}; this session records {self._nd.shape}")

    def _recorded_axes(self, shape: tuple[int, ...]) -> tuple[Any, ...] | None:
        """The measurement axes the manifest (written before the first step) describes, if they fit."""
        try:
            axes = Manifest.from_dict(json.loads((self.folder / "manifest.json").read_text())).signal_axes
        except (OSError, ValueError, SessionError):
            return None
        return axes if tuple(a.n for a in axes) == tuple(shape) else None

    def close(self) -> None:
        for fh in (self._steps, self._spectra):
            if not fh.closed:
                fh.close()
        self._lock.release()

    def __enter__(self) -> SessionWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class MemoryRecorder:
    """Keeps steps in memory (benchmarks): same interface as :class:`SessionWriter`, no files."""

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.spectra: list[np.ndarray] = []
        self.json: dict[str, dict[str, Any]] = {}
        self.folder = None

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        self.json[name] = data

    def write_array(self, name: str, array: np.ndarray) -> None:
        pass

    def append_step(self, step: Step, spectrum: np.ndarray | None = None) -> Step:
        if spectrum is not None:
            step.spectrum_row = len(self.spectra)
            self.spectra.append(np.asarray(spectrum, dtype=float))
        self.steps.append(step)
        return step

    def close(self) -> None:
        pass


class SessionReader:
    """Reads a session folder, recovering every complete step.

    Attributes:
        manifest: the parsed ``manifest.json``.
        steps: complete steps, in order.
        dropped: human-readable notes on anything ignored (a torn last line, a short spectrum row,
            steps whose spectrum row was cut off by a truncated ``spectra.bin``).
        steps_bytes: length of ``steps.jsonl`` up to the end of the last complete step.

    Raises:
        SessionError: the folder is not a session, its manifest is unreadable, it was written by a
            newer format version, or a record before the last one is corrupt.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        manifest = self.folder / "manifest.json"
        if not self.folder.is_dir():
            raise SessionError(f"{self.folder} is not a session folder (no such folder)")
        if not manifest.is_file():
            if (self.folder / MARKER).is_file() or (self.folder / LOCK).is_file():
                raise SessionError(
                    f"{self.folder}: the run stopped before its first measurement (no manifest.json), so "
                    f"there is nothing to replay or resume; run it again with --overwrite"
                )
            raise SessionError(f"{self.folder} is not a session folder (no manifest.json)")
        try:
            raw = json.loads(manifest.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SessionError(f"{manifest}: not valid JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise SessionError(f"{manifest}: not a JSON object (got {type(raw).__name__})")
        self.manifest: Manifest = Manifest.from_dict(raw, source=str(manifest))
        self.dropped: list[str] = []
        self.steps_bytes = 0
        self.steps = self._read_steps()
        self._drop_steps_without_spectra()

    @property
    def spectrum_length(self) -> int | None:
        """``L``, values per spectrum row (``None`` if the manifest has no spectrum axis)."""
        return self.manifest.spectrum_axis.n

    @property
    def measurement_shape(self) -> tuple[int, ...]:
        """The shape of one recorded measurement: ``(L,)``, or ``(ky, kx)`` for diffraction patterns."""
        return tuple(a.n for a in self.manifest.signal_axes)

    def measurement_store(self) -> ZarrRows | None:
        """The session's ``measurements.zarr`` when it records N-D measurements, else ``None``."""
        axes = self.manifest.signal_axes
        if len(axes) < 2:
            return None
        return ZarrRows(self.folder / MEASUREMENTS, self.measurement_shape, axes=axes)

    @property
    def summary(self) -> dict[str, Any] | None:
        """The parsed ``summary.json``; ``None`` while a run is going on or after a hard crash."""
        path = self.folder / "summary.json"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise SessionError(f"{path}: not valid JSON ({exc})") from None

    def _read_steps(self) -> list[Step]:
        path = self.folder / "steps.jsonl"
        raw = path.read_bytes() if path.exists() else b""
        steps: list[Step] = []
        lines = raw.split(b"\n")
        tail = lines.pop()  # text after the last newline: empty unless the last write was torn
        if tail:
            self.dropped.append(f"steps.jsonl: torn last record ({len(tail)} bytes) ignored")
        next_row = 0  # spectrum rows are appended one per recorded spectrum, in step order
        for n, line in enumerate(lines, start=1):
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise TypeError(f"a step record is a JSON object, not {type(record).__name__}")
                step = Step.from_dict(record)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
                raise SessionError(f"{path}: line {n} is not a valid step record: {exc}") from None
            if step.step != n - 1:
                raise SessionError(f"{path}: line {n} records step {step.step}, expected {n - 1}")
            if step.spectrum_row is not None:
                if not isinstance(step.spectrum_row, int) or step.spectrum_row < next_row:
                    raise SessionError(f"{path}: line {n}: spectrum_row {step.spectrum_row!r} out of order "
                                       f"(rows only grow; expected at least {next_row}); the record is damaged")
                next_row = step.spectrum_row + 1
            steps.append(step)
        self.steps_bytes = len(raw) - len(tail)
        return steps

    def _spectrum_rows(self) -> int:
        """Complete rows in ``spectra.bin`` (from its size; nothing is read), or chunks in
        ``measurements.zarr``."""
        nd = self.measurement_store()
        if nd is not None:
            if not nd.path.is_dir() and any(s.spectrum_row is not None for s in self.steps):
                raise SessionError(f"{nd.path} is missing while steps.jsonl points into it; the session is damaged")
            return nd.present()
        length, path = self.spectrum_length, self.folder / "spectra.bin"
        if not path.exists() and any(s.spectrum_row is not None for s in self.steps):
            raise SessionError(f"{path} is missing while steps.jsonl points into it; the session is damaged "
                               f"(a crash never removes it: it is created with the folder)")
        if not length or not path.exists():
            return 0
        return path.stat().st_size // (length * np.dtype(SPECTRUM_DTYPE).itemsize)

    def _drop_steps_without_spectra(self) -> None:
        """A step line is written after its spectrum row, so a missing row means a truncated file:
        keep the steps before the first one whose row is gone, and say what was dropped."""
        rows = self._spectrum_rows()
        for n, step in enumerate(self.steps):
            if step.spectrum_row is not None and step.spectrum_row - rows >= len(self.steps) - n:
                # a cut-off spectra.bin loses at most the rows of the steps from here on
                raise SessionError(f"{self.folder / 'steps.jsonl'}: line {n + 1}: spectrum_row {step.spectrum_row} "
                                   f"out of range (spectra.bin holds {rows} rows); the record is damaged")
            if step.spectrum_row is not None and step.spectrum_row >= rows:
                lost = self.steps[n:]
                self.dropped.append(
                    f"{MEASUREMENTS if self.measurement_store() else 'spectra.bin'}: holds {rows} complete rows; steps {lost[0].step}..{lost[-1].step} "
                    f"({len(lost)}) point past it and are ignored"
                )
                raw = (self.folder / "steps.jsonl").read_bytes()
                self.steps_bytes = _line_offset(raw, n)  # where the first dropped line starts
                self.steps = self.steps[:n]
                return

    def array(self, name: str) -> np.ndarray:
        """``name.npy`` of the session (``survey``, ``candidates``, ``pixels``)."""
        path = self.folder / f"{name}.npy"
        try:
            return np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise SessionError(f"{self.folder}: {path.name} is missing") from None
        except (ValueError, EOFError, OSError) as exc:
            raise SessionError(f"{path}: unreadable or truncated ({exc})") from None

    def spectra(self) -> np.ndarray:
        """All complete measurement rows, ``rows x L`` float64 (``rows x ky x kx`` for diffraction
        patterns; empty if none were recorded)."""
        nd = self.measurement_store()
        if nd is not None:
            return nd.read_rows(nd.present()) if nd.path.is_dir() else np.empty((0, *nd.shape))
        length = self.spectrum_length
        path = self.folder / "spectra.bin"
        if not length or not path.exists():
            return np.empty((0, length or 0))
        data = np.fromfile(path, dtype=SPECTRUM_DTYPE)
        whole = data.size // length
        if data.size % length:
            note = f"spectra.bin: torn last row ({data.size % length} values) ignored"
            if note not in self.dropped:
                self.dropped.append(note)
        return data[: whole * length].reshape(whole, length)

    def spectrum(self, step: Step) -> np.ndarray | None:
        """The measurement recorded with ``step`` (``L`` float64, or :attr:`measurement_shape` for
        N-D measurements), or ``None`` if it has none."""
        if step.spectrum_row is None or not self.spectrum_length:
            return None
        nd = self.measurement_store()
        if nd is not None:
            try:
                return nd.read(step.spectrum_row)
            except ValueError as exc:
                raise SessionError(f"{self.folder}: measurement row {step.spectrum_row}: {exc}") from None
        n = self.spectrum_length
        with open(self.folder / "spectra.bin", "rb") as fh:
            fh.seek(step.spectrum_row * n * np.dtype(SPECTRUM_DTYPE).itemsize)
            row = np.frombuffer(fh.read(n * np.dtype(SPECTRUM_DTYPE).itemsize), dtype=SPECTRUM_DTYPE)
        if row.size != n:
            raise SessionError(f"{self.folder}: spectrum row {step.spectrum_row} is cut off")
        return row.astype(np.float64)


def _line_offset(raw: bytes, n: int) -> int:
    """Byte offset where line ``n`` (0-based) of ``raw`` starts."""
    offset = 0
    for _ in range(n):
        offset = raw.index(b"\n", offset) + 1
    return offset
