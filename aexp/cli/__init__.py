"""The ``aexp`` command: :mod:`.main` (check, run, bench and the dispatcher), :mod:`.session`
(replay, resume, export, report) and :mod:`.link` (serve, describe, keys)."""

from .main import main

__all__ = ["main"]
