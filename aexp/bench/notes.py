"""What ``aexp bench`` adds around its table: the ``survey-rank`` baseline (the better of brightest-
and darkest-first), and, on a replayed recording, that the seeds vary only the initial points and
how stable the recording's own top fraction is under its noise.

Stability: the spectra are redrawn ``n`` times from their own noise (Poisson with the recorded
values as means when they are counts; otherwise Gaussian with each spectrum's noise estimated from
its channel-to-channel differences, ``sigma = median|d| / (0.6745 sqrt 2)``), the target is scored
again and the overlap ``|top ∩ top_b| / k`` with the recorded top ``k`` is averaged. A discovery
difference smaller than ``1 - overlap`` is within the recording's own noise.

Example:
    >>> notes = replay_notes(instrument, candidates, target, top_fraction=0.01)
    >>> notes["top_stability"]["mean_overlap"]
    0.67
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..targets import Target
from ..types import Candidates

__all__ = ["DIRECTIONS", "add_notes", "finish_survey_rank", "notes_lines", "replay_notes", "top_stability"]

DIRECTIONS = ("bright", "dark")
SURVEY_RANK = "survey-rank"


def finish_survey_rank(result: dict[str, Any]) -> None:
    """Add ``survey-rank``: the better of ``survey-rank-bright`` and ``survey-rank-dark`` by mean
    discovery over the seeds (ties to brightest first); both stay in the result."""
    pol = result["policies"]
    runs = {d: pol.get(f"{SURVEY_RANK}-{d}") for d in DIRECTIONS}
    if any(r is None for r in runs.values()):
        return

    def mean(d: str) -> float:
        values = [v for v in runs[d]["discovery"] if v is not None]
        return float(np.mean(values)) if values else -1.0

    best = max(DIRECTIONS, key=lambda d: (mean(d), d == "bright"))
    pol[SURVEY_RANK] = {**runs[best], "direction": best}


def _noise_draws(spectra: np.ndarray, counts: bool, n: int, rng: np.random.Generator):
    if counts:
        lam = np.clip(np.nan_to_num(spectra, nan=0.0), 0, None)
        for _ in range(n):
            yield rng.poisson(lam).astype(float)
        return
    d = np.diff(spectra, axis=1)
    sigma = np.nanmedian(np.abs(d), axis=1, keepdims=True) / (0.6745 * math.sqrt(2))
    for _ in range(n):
        yield spectra + rng.normal(size=spectra.shape) * sigma


def top_stability(spectra: np.ndarray, axis: Any, target: Target, fraction: float, counts: bool,
                  n: int = 20, seed: int = 0) -> dict[str, Any]:
    """Overlap of the recorded top ``fraction`` with that of ``n`` noise redraws (module docstring).

    ``spectra``: ``M x L`` at the candidates; ``axis``: ``L`` (patterns ``M x ky x kx`` on ``(ky, kx)``).
    """
    from . import top_indices

    truth = np.nan_to_num(np.asarray(target(spectra, axis), dtype=float), nan=-np.inf)
    top = set(top_indices(truth, fraction).tolist())
    rng = np.random.default_rng([seed, 0x70B])
    overlaps = []
    for draw in _noise_draws(np.asarray(spectra, dtype=float), counts, n, rng):
        again = np.nan_to_num(np.asarray(target(draw, axis), dtype=float), nan=-np.inf)
        overlaps.append(len(top & set(top_indices(again, fraction).tolist())) / len(top))
    return {"method": "Poisson redraw of the counts" if counts else "Gaussian redraw at each spectrum's noise",
            "resamples": n, "k": len(top), "mean_overlap": float(np.mean(overlaps)),
            "min_overlap": float(np.min(overlaps))}


def replay_notes(instrument: Any, candidates: Candidates, target: Target, top_fraction: float) -> dict[str, Any] | None:
    """For an instrument backed by a recorded data set (``instrument.data``): the notes, else ``None``."""
    data = getattr(instrument, "data", None)
    if data is None or not hasattr(instrument, "_rows"):
        return None
    spectra = instrument._rows(candidates.positions)
    axes = instrument.describe().signal_axes  # a pattern target takes the pair (ky, kx)
    axis = axes[0].values() if len(axes) == 1 else tuple(a.values() for a in axes)
    counts = data.spectrum_units == "counts" and bool(np.nanmin(spectra) >= 0)
    source = (data.metadata.get("source") or {}).get("file") or instrument.path.name
    return {
        "recording": source,
        "seeds_vary": "the initial random points only: every seed replays the same recorded sample",
        "survey_source": data.survey_source,
        "top_stability": top_stability(spectra, axis, target, top_fraction, counts),
    }


def add_notes(result: dict[str, Any], cfg: Any) -> None:
    """What a campaign's table is printed with: the ``survey-rank`` baseline and, for a replayed
    recording, its notes (computed once here: the sample is the same for every seed)."""
    from ..instrument import load_instrument
    from ..patches import make_candidates

    finish_survey_rank(result)
    instrument = load_instrument(cfg.instrument.driver, cfg.instrument.options, seed=0)
    if getattr(instrument, "data", None) is None:
        return
    candidates = make_candidates(instrument.survey(), cfg.candidates, instrument.describe())
    notes = replay_notes(instrument, candidates, cfg.target.build(), result["top_fraction"])
    if notes is not None:
        result["replay"] = notes


def notes_lines(result: dict[str, Any]) -> list[str]:
    """Lines printed under the bench table."""
    lines = []
    entry = result["policies"].get(SURVEY_RANK)
    if entry is not None and "direction" in entry:
        means = {d: np.mean([v for v in result["policies"][f"{SURVEY_RANK}-{d}"]["discovery"] if v is not None] or [np.nan])
                 for d in DIRECTIONS}
        lines.append(f"survey-rank = {entry['direction']}est first (mean discovery: bright "
                     f"{means['bright']:.3f}, dark {means['dark']:.3f}; the better is the baseline)")
    notes = result.get("replay")
    if notes:
        st = notes["top_stability"]
        lines.append(f"recorded data ({notes['recording']}): seeds vary {notes['seeds_vary']}")
        lines.append(f"survey: {notes['survey_source']}")
        lines.append(f"the recording's own top {result['top_fraction']:.0%} ({st['k']} candidates) under its noise "
                     f"({st['method']}, {st['resamples']} draws): {st['mean_overlap']:.2f} of it stays on top "
                     f"(worst {st['min_overlap']:.2f}); discovery differences below {1 - st['mean_overlap']:.2f} "
                     f"are not differences")
    return lines
