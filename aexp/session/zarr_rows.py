"""``measurements.zarr``: the append-only store of a session's N-D measurements (diffraction patterns).

A Zarr v2 directory store holding one array ``rows x n_0 x n_1 ...`` of little-endian float64,
uncompressed, chunked one measurement per chunk (chunk key ``"<row>.0.0"``): ``zarr.open`` (2.x),
xarray, Dask and any Zarr v2 reader open it without aexp. The axes of a measurement (name, units,
start, stop, n: e.g. ``ky``, ``kx`` in mrad) are in ``.zattrs["axes"]``.

Why Zarr and not HDF5: an HDF5 file is one file whose B-trees and free lists are rewritten in
place on every append; a kill -9 in the middle of such a write can leave the whole file unreadable.
Here a measurement is a file of its own, written to ``<key>.tmp``, fsynced and renamed; the
``.zarray`` metadata (whose ``shape`` says how many rows there are) is then replaced the same way
and the folder fsynced, before the step's line goes to ``steps.jsonl``. A crash leaves at worst a
``.tmp`` file or one chunk more than ``.zarray`` announces, never a torn chunk, and the rows are
recovered from the chunks present (``0 .. k - 1``), not from ``.zarray``.

Example:
    >>> rows = ZarrRows(folder / MEASUREMENTS, (64, 64), axes=(ky, kx))
    >>> rows.append(0, pattern)          # durable when it returns
    >>> rows.present(), rows.read(0).shape
    (1, (64, 64))
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..types import SpectrumAxis
from .durable import _fsync_dir, _write_durable

__all__ = ["MEASUREMENTS", "ROW_DTYPE", "ZarrRows"]

MEASUREMENTS = "measurements.zarr"
ROW_DTYPE = "<f8"
_META = (".zarray", ".zattrs")


class ZarrRows:
    """The rows of ``measurements.zarr``, each a measurement of ``shape``.

    Args:
        path: the store's folder (``<session>/measurements.zarr``).
        shape: the shape of one measurement (e.g. ``(64, 64)``).
        axes: the measurement's axes, written to ``.zattrs`` when the store is created.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], axes: Sequence[SpectrumAxis] | None = None) -> None:
        self.path = Path(path)
        self.shape = tuple(int(n) for n in shape)
        self.axes = tuple(axes) if axes else None
        self._bytes = int(np.prod(self.shape)) * np.dtype(ROW_DTYPE).itemsize

    def key(self, row: int) -> str:
        """The chunk key of ``row`` (``"5.0.0"`` for a 2-D measurement)."""
        return ".".join([str(int(row))] + ["0"] * len(self.shape))

    def zarray(self, rows: int) -> dict[str, Any]:
        """The Zarr v2 array metadata for ``rows`` measurements."""
        return {
            "zarr_format": 2,
            "shape": [int(rows), *self.shape],
            "chunks": [1, *self.shape],
            "dtype": ROW_DTYPE,
            "compressor": None,
            "fill_value": "NaN",
            "order": "C",
            "filters": None,
            "dimension_separator": ".",
        }

    def create(self) -> None:
        """Make the store (empty, zero rows) if it does not exist yet; durable when it returns."""
        if (self.path / ".zarray").is_file():
            return
        self.path.mkdir(exist_ok=True)
        _fsync_dir(self.path.parent)
        names = [a.name for a in self.axes] if self.axes else [f"dim_{i}" for i in range(len(self.shape))]
        attrs = {
            "_ARRAY_DIMENSIONS": ["row", *names],  # xarray's convention for dimension names
            "axes": [a.to_dict() for a in self.axes] if self.axes else None,
            "about": "one measurement per row, in recording order; steps.jsonl's spectrum_row points here",
        }
        _write_durable(self.path / ".zattrs", lambda fh: fh.write(json.dumps(attrs, indent=2).encode()))
        self._write_zarray(0)

    def _write_zarray(self, rows: int) -> None:
        _write_durable(self.path / ".zarray", lambda fh: fh.write(json.dumps(self.zarray(rows), indent=2).encode()))

    def append(self, row: int, data: np.ndarray) -> None:
        """Write measurement ``row``: the chunk (temporary name, fsync, rename), then ``.zarray``."""
        values = np.ascontiguousarray(data, dtype=ROW_DTYPE)
        if values.shape != self.shape:
            raise ValueError(f"a measurement of shape {values.shape}; this session records {self.shape}")
        self.create()
        _write_durable(self.path / self.key(row), lambda fh: fh.write(values.tobytes()))
        self._write_zarray(row + 1)

    def present(self) -> int:
        """How many rows are whole on disk: chunks ``0 .. k - 1`` all present at full size."""
        k = 0
        while True:
            chunk = self.path / self.key(k)
            try:
                if chunk.stat().st_size != self._bytes:
                    return k
            except FileNotFoundError:
                return k
            k += 1

    def read(self, row: int) -> np.ndarray:
        """Measurement ``row``, float64 of :attr:`shape`; ``ValueError`` if its chunk is missing or cut."""
        chunk = self.path / self.key(row)
        try:
            raw = chunk.read_bytes()
        except FileNotFoundError:
            raise ValueError(f"{chunk} is missing") from None
        if len(raw) != self._bytes:
            raise ValueError(f"{chunk} holds {len(raw)} bytes, not {self._bytes}")
        return np.frombuffer(raw, dtype=ROW_DTYPE).reshape(self.shape).astype(np.float64)

    def read_rows(self, rows: int) -> np.ndarray:
        """The first ``rows`` measurements, ``rows x shape`` float64."""
        out = np.empty((rows, *self.shape))
        for r in range(rows):
            out[r] = self.read(r)
        return out

    def set_aside(self, keep: int) -> list[str]:
        """Move every chunk past the first ``keep`` rows, and any ``.tmp`` left by a crash, into
        ``recovered-<n>.bin`` files of the session folder (a JSON header line, then the bytes), and
        make ``.zarray`` say ``keep`` rows. Returns a note per file moved."""
        if not self.path.is_dir():
            return []
        notes = []
        for entry in sorted(self.path.iterdir()):
            if entry.name in _META:
                continue
            head = entry.name.split(".", 1)[0]
            if entry.name.endswith(".tmp") or not head.isdigit() or int(head) >= keep:
                notes.append(f"{MEASUREMENTS}/{entry.name}: moved to {self._move_aside(entry).name}")
        if (self.path / ".zarray").is_file():
            self._write_zarray(keep)
        return notes

    def _move_aside(self, entry: Path) -> Path:
        folder = self.path.parent
        n = 0
        while (folder / f"recovered-{n}.bin").exists():
            n += 1
        aside = folder / f"recovered-{n}.bin"
        data = entry.read_bytes()
        header = json.dumps({"from": f"{MEASUREMENTS}/{entry.name}", "offset": 0, "bytes": len(data)}).encode() + b"\n"
        _write_durable(aside, lambda out: out.write(header + data))
        os.unlink(entry)
        _fsync_dir(self.path)
        return aside
