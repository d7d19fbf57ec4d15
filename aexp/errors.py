"""The base of every error aexp reports to a user as one line.

An :class:`AexpError` says that an input (a config, a session folder, a data file, a message) or the
instrument is at fault, and its message names the file, field or message and what to do. The CLI
prints it in one line and exits with status 2. Any other exception is a bug in aexp: the CLI prints its
traceback and exits with status 1, so a bug is never disguised as a user error.

Each concrete error also derives from the builtin it refines (``ValueError``, ``RuntimeError``,
``LookupError``), so code written against those keeps working.
"""

from __future__ import annotations

__all__ = ["AexpError", "UsageError"]


class AexpError(Exception):
    """An error of aexp's inputs or of the instrument, reported to the user in one line."""


class UsageError(AexpError, ValueError):
    """A command-line or API argument that cannot be used (the message names it)."""
