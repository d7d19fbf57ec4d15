"""The session family: the folder's store (writer, reader), and what is built on a recorded session:
replay and resume (:mod:`.replay`), export (:mod:`.export`), report (:mod:`.report`) and a twin's hidden
truth (:mod:`.truth`).

The store is imported eagerly (it is light); the rest on first use, so ``import aexp.session`` does
not pull in the models.
"""

from __future__ import annotations

import importlib
from typing import Any

from .store import (
    FORMAT_VERSION,
    MemoryRecorder,
    SessionError,
    SessionReader,
    SessionWriter,
    write_json,
)

__all__ = [
    "FORMAT_VERSION",
    "MemoryRecorder",
    "SessionError",
    "SessionReader",
    "SessionWriter",
    "write_json",
    "verify_session",
    "resume_session",
    "export_hdf5",
    "write_report",
    "session_truth",
    "require_ground_truth",
]

_LAZY = {
    "verify_session": ".replay",
    "resume_session": ".replay",
    "export_hdf5": ".export",
    "write_report": ".report",
    "session_truth": ".truth",
    "require_ground_truth": ".truth",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
