"""The session folder: an append-only, crash-safe record of one experiment.

Layout (format version 1)::

    manifest.json      config, seed, versions, instrument description, spectrum layout
    survey.npy         C x H x W float32 survey image
    candidates.npy     N x 2 float64 instrument positions (x, y) of the candidates, metres
    pixels.npy         N x 2 float64 survey (row, col) of the candidates
    steps.jsonl        one JSON object per completed measurement (a :class:`aexp.types.Step`)
    spectra.bin        raw little-endian float64, one row of L values per recorded spectrum;
                       a step's ``spectrum_row`` points into it
    summary.json       written when the run ends (completed, interrupted or failed)

A step is durable before the next command goes to the instrument: its spectrum row is appended and
fsynced, then its JSON line is appended and fsynced. A reader trusts only complete lines; a torn last
line (a crash mid-write) is reported in :attr:`SessionReader.dropped` and ignored, never silently.
Nothing is pickled.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .types import Step

__all__ = ["FORMAT_VERSION", "SessionError", "SessionWriter", "SessionReader", "MemoryRecorder"]

FORMAT_VERSION = 1
SPECTRUM_DTYPE = "<f8"


class SessionError(RuntimeError):
    """A session folder is missing, not a session, or would be overwritten."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durable(path: Path, write) -> None:
    """Write via a temporary file + fsync + rename, so a reader never sees a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


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


class SessionWriter:
    """Creates a session folder and appends to it.

    Refuses to write into an existing non-empty folder unless ``overwrite`` is set, and even then
    only replaces a folder that is itself a session (has ``manifest.json``).
    """

    def __init__(self, folder: str | Path, overwrite: bool = False) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and any(self.folder.iterdir()):
            if not overwrite:
                raise SessionError(
                    f"{self.folder} already exists and is not empty; choose another --out or pass "
                    f"--overwrite to replace a previous session"
                )
            if not (self.folder / "manifest.json").exists():
                raise SessionError(f"{self.folder} is not a session folder; refusing to overwrite it")
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._steps = open(self.folder / "steps.jsonl", "ab")
        self._spectra = open(self.folder / "spectra.bin", "ab")
        self._rows = 0
        self._length: int | None = None
        _fsync_dir(self.folder)

    def write_json(self, name: str, data: dict[str, Any]) -> Path:
        path = self.folder / name
        _write_durable(path, lambda fh: fh.write(json.dumps(data, indent=2).encode()))
        return path

    def write_array(self, name: str, array: np.ndarray) -> Path:
        path = self.folder / f"{name}.npy"
        _write_durable(path, lambda fh: np.save(fh, np.asarray(array), allow_pickle=False))
        return path

    def append_step(self, step: Step, spectrum: np.ndarray | None = None) -> Step:
        """Make ``step`` (and its spectrum) durable. Returns the step with ``spectrum_row`` set."""
        row = None
        if spectrum is not None:
            row = np.ascontiguousarray(spectrum, dtype=SPECTRUM_DTYPE).ravel()
            if self._length is not None and row.size != self._length:
                raise SessionError(f"spectrum of {row.size} values; this session records {self._length}")
            step.spectrum_row = self._rows
        # serialise first: a record that cannot be written leaves nothing half-done on disk
        line = (json.dumps(step.to_dict(), allow_nan=False) + "\n").encode()
        with _no_interrupt():
            if row is not None:
                self._spectra.write(row.tobytes())
                self._spectra.flush()
                os.fsync(self._spectra.fileno())
                self._length = row.size
                self._rows += 1
            self._steps.write(line)
            self._steps.flush()
            os.fsync(self._steps.fileno())
        return step

    def close(self) -> None:
        for fh in (self._steps, self._spectra):
            if not fh.closed:
                fh.close()

    def __enter__(self) -> "SessionWriter":
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
        dropped: human-readable notes on anything ignored (a torn last line, a short spectrum row).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        manifest = self.folder / "manifest.json"
        if not manifest.is_file():
            raise SessionError(f"{self.folder} is not a session folder (no manifest.json)")
        self.manifest: dict[str, Any] = json.loads(manifest.read_text())
        version = self.manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise SessionError(
                f"{self.folder}: session format version {version}; this aexp reads {FORMAT_VERSION}"
            )
        self.dropped: list[str] = []
        self.steps = self._read_steps()

    def _read_steps(self) -> list[Step]:
        path = self.folder / "steps.jsonl"
        raw = path.read_bytes() if path.exists() else b""
        steps: list[Step] = []
        lines = raw.split(b"\n")
        tail = lines.pop()  # text after the last newline: empty unless the last write was torn
        if tail:
            self.dropped.append(f"steps.jsonl: torn last record ({len(tail)} bytes) ignored")
        for n, line in enumerate(lines, start=1):
            try:
                steps.append(Step.from_dict(json.loads(line)))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise SessionError(f"{path}: line {n} is not a valid step record: {exc}") from None
        return steps

    def array(self, name: str) -> np.ndarray:
        return np.load(self.folder / f"{name}.npy", allow_pickle=False)

    def spectra(self) -> np.ndarray:
        """All complete spectrum rows, ``rows x L`` float64 (empty if none were recorded)."""
        length = self.manifest.get("spectrum_axis", {}).get("n")
        path = self.folder / "spectra.bin"
        if not length or not path.exists():
            return np.empty((0, length or 0))
        data = np.fromfile(path, dtype=SPECTRUM_DTYPE)
        whole = data.size // length
        if data.size % length:
            self.dropped.append(f"spectra.bin: torn last row ({data.size % length} values) ignored")
        return data[: whole * length].reshape(whole, length)
