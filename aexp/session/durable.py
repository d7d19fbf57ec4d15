"""Durable writes: a file appears whole under its name, or not at all, and survives a power cut."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["_fsync_dir", "_write_durable", "append_line"]


def _fsync_dir(path: Path) -> None:
    """Make the folder's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durable(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write via a temporary file + fsync + rename, so a reader never sees a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def append_line(path: Path, line: bytes) -> None:
    """Append one record (``line``, newline included) and fsync it before returning: one ``write``
    with ``O_APPEND``, so concurrent writers never interleave their records."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
