"""Stagnation: the campaign keeps measuring but has stopped learning anything that matters.

A campaign is stagnant at decision ``k`` when both hold:

- the last ``window`` steps found nothing better: ``max(y[k-window:k]) <= max(y[:k-window])``;
- the model's uncertainty over the unmeasured candidates has collapsed:
  ``max_{i unmeasured} sigma_i <= std_ratio * std(y_measured)``.

The second condition needs the model's maps (the live page asks for them with every decision), so a
model-free policy (random, raster) is never called stagnant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..types import Step

__all__ = ["Stagnation", "StagnationRule", "find_stagnation", "ADVICE"]

ADVICE = ("raise the exploration weight (aexp control FOLDER set beta 16), exclude the region it keeps "
          "measuring (exclude --box), send the probe somewhere unexplored (goto), or stop the run")


@dataclass(frozen=True)
class StagnationRule:
    """``stopping.stagnation`` of the config: ``window`` steps without a better target and the
    largest posterior std over the unmeasured candidates at most ``std_ratio`` times the measured
    targets' std; ``stop`` ends the run then (else the page and the terminal only say so)."""

    window: int = 10
    std_ratio: float = 0.05
    stop: bool = False


@dataclass(frozen=True)
class Stagnation:
    """What was found: since which step nothing improved, and how small the uncertainty is."""

    since_step: int
    max_std: float
    target_std: float
    message: str


def find_stagnation(steps: Sequence[Step], maps: dict[str, np.ndarray] | None, unmeasured: np.ndarray,
                    rule: StagnationRule) -> Stagnation | None:
    """The stagnation of a campaign after ``steps`` (``None``: it is still learning).

    Args:
        steps: the recorded steps, in order.
        maps: the last decision's ``"std"`` over all ``M`` candidates (``None``: no model).
        unmeasured: bool ``M``, candidates that may still be chosen.
        rule: the thresholds.

    Example:
        >>> find_stagnation(steps, {"std": np.full(M, 1e-4)}, ~excluded, StagnationRule(window=5))
        Stagnation(since_step=12, ...)
    """
    if maps is None or "std" not in maps or len(steps) <= rule.window or not unmeasured.any():
        return None
    y = np.array([s.target if s.target is not None else -np.inf for s in steps], dtype=np.float64)
    before, recent = y[: -rule.window], y[-rule.window:]
    if not np.isfinite(before).any() or recent.max() > before.max():
        return None
    ok = y[np.isfinite(y)]
    target_std = float(ok.std()) if len(ok) > 1 else 0.0
    max_std = float(np.max(np.asarray(maps["std"], dtype=np.float64)[unmeasured]))
    if target_std <= 0 or max_std > rule.std_ratio * target_std:
        return None
    since = len(steps) - rule.window
    return Stagnation(
        since, max_std, target_std,
        f"no better target in the last {rule.window} steps (since step {since}) and the model's largest "
        f"uncertainty over the unmeasured candidates is {max_std / target_std:.1%} of the targets' spread: "
        f"it expects nothing better. Suggested: {ADVICE}",
    )
