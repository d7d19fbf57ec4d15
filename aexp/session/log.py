"""``aexp.log`` in a session folder: what the run did, in words, with times and levels.

The records themselves (``steps.jsonl``, ``manifest.json``) are the data; the log is for a person
reading what happened (when the survey was taken, how long the embedder trained, each decision,
an outage, why the run stopped). Every logger under ``aexp`` writes to it while the run holds it.

Example:
    >>> with session_log(folder):
    ...     logging.getLogger("aexp.run").info("surveyed %d candidates", n)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["LOG_FILE", "session_log"]

LOG_FILE = "aexp.log"
_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


@contextmanager
def session_log(folder: Path, level: int = logging.INFO) -> Iterator[logging.Handler]:
    """Append the ``aexp`` loggers' records at ``level`` and above to ``folder/aexp.log`` inside the block."""
    handler = logging.FileHandler(folder / LOG_FILE, mode="a", encoding="utf-8")
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(_FORMAT))
    root = logging.getLogger("aexp")
    previous = root.level
    if root.level == logging.NOTSET or root.level > level:
        root.setLevel(level)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        handler.close()
