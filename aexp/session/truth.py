"""A twin's hidden truth: the noiseless target at each candidate, through :class:`aexp.instrument.GroundTruth`.

A simulator (or a full-grid data set replayed) knows the target everywhere; a live instrument does
not. ``aexp bench`` needs the truth and refuses without it (:func:`require_ground_truth`); ``aexp
report`` and the live page draw the discovery curve only when the session's instrument can still
tell it (:func:`session_truth`).

Example:
    >>> notes: list[str] = []
    >>> truth = session_truth(SessionReader("runs/demo"), reader.array("candidates"), notes)
    >>> truth is None or truth.shape        # (M,) when the recorded twin can be rebuilt here
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UsageError

if TYPE_CHECKING:
    from ..instrument import GroundTruth
    from .store import SessionReader

__all__ = ["require_ground_truth", "session_truth"]


def require_ground_truth(instrument: Any, driver: str) -> GroundTruth:
    """``instrument`` itself when it knows the noiseless target (a :class:`~aexp.instrument.GroundTruth`),
    else a :class:`~aexp.errors.UsageError` naming the ``driver``: scoring discovery needs the truth."""
    from ..instrument import GroundTruth

    if not isinstance(instrument, GroundTruth):
        raise UsageError(f"instrument {driver!r} has no hidden truth; aexp bench needs a "
                         f"simulator (or a recorded full-grid data set)")
    return instrument


def session_truth(reader: SessionReader, positions: np.ndarray, notes: list[str] | None = None) -> np.ndarray | None:
    """The noiseless target at ``positions`` (``M x 2`` metres -> ``M``) by the session's own
    instrument and target, if that instrument is a :class:`GroundTruth` that can be loaded here and
    still describes itself as recorded; else ``None``, and a line in ``notes`` says why.

    The instrument is rebuilt from the manifest (driver, options, seed), so a twin gives the same
    truth it hid during the run; a changed data set or simulator version is refused, not trusted.
    """
    from ..instrument import GroundTruth, load_instrument
    from .rebuild import differences, recorded_config

    notes = notes if notes is not None else []
    cfg = recorded_config(reader)
    try:
        inst = load_instrument(cfg.instrument.driver, cfg.instrument.options, seed=reader.manifest.seed)
    except (LookupError, ValueError, OSError) as exc:
        notes.append(f"no discovery curve: the instrument cannot be loaded here ({exc})")
        return None
    if not isinstance(inst, GroundTruth):
        notes.append(f"no discovery curve: instrument {cfg.instrument.driver!r} has no ground truth")
        return None
    if differences(inst.describe().to_dict(), reader.manifest.instrument.to_dict()):
        notes.append("no discovery curve: the instrument differs from the recorded one")
        return None
    return np.asarray(inst.truth(positions, cfg.target.build()), dtype=float)
