"""Figures of a session: where the probe went, what the model believes, how the target evolved."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .types import Candidates, Survey

if TYPE_CHECKING:
    from .loop import CampaignResult

__all__ = ["session_figure"]


def _grid_map(values: np.ndarray, candidates: Candidates) -> np.ndarray | None:
    if candidates.grid_shape is None:
        return None
    return np.asarray(values, dtype=float).reshape(candidates.grid_shape)


def _scatter_map(ax, values: np.ndarray, candidates: Candidates, shape: tuple[int, int]):
    """Candidates as dots at their survey pixels, coloured by ``values`` (``N``), image orientation."""
    px = candidates.pixels
    dot = float(np.clip(1.5e4 / max(len(px), 1), 2.0, 30.0))  # fewer candidates, bigger dots
    im = ax.scatter(px[:, 1], px[:, 0], c=np.asarray(values, dtype=float), cmap="magma",
                    s=dot, edgecolors="none")
    ax.set_xlim(-0.5, shape[1] - 0.5)
    ax.set_ylim(shape[0] - 0.5, -0.5)
    ax.set_aspect("equal")
    return im


def session_figure(
    folder: str | Path,
    survey: Survey,
    candidates: Candidates,
    result: "CampaignResult",
    name: str = "session.png",
) -> Path:
    """Write a 2x2 PNG: survey with measured points coloured by step, predicted mean, predicted
    uncertainty, and target vs step (with the best so far). Returns its path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    steps = result.steps
    rc = np.array([s.pixel for s in steps]).reshape(-1, 2)
    ok = np.array([s.status == "ok" for s in steps], dtype=bool)
    order = np.arange(len(steps))
    fig, axes = plt.subplots(2, 2, figsize=(10, 9), constrained_layout=True)

    ax = axes[0, 0]
    ax.imshow(survey.image[0], cmap="gray")
    sc = ax.scatter(rc[ok, 1], rc[ok, 0], c=order[ok], cmap="viridis", s=14, edgecolors="none")
    if (~ok).any():
        ax.scatter(rc[~ok, 1], rc[~ok, 0], marker="x", c="red", s=18, label="failed")
        ax.legend(loc="lower right", fontsize=8)
    fig.colorbar(sc, ax=ax, label="step")
    ax.set_title(f"survey ({survey.channels[0]}) and measured points")

    extent = None
    if candidates.grid_shape is not None:
        px = candidates.pixels
        extent = (px[:, 1].min(), px[:, 1].max(), px[:, 0].max(), px[:, 0].min())
    for ax, key, title in ((axes[0, 1], "mean", "predicted target"), (axes[1, 0], "std", "uncertainty (std)")):
        values = result.maps.get(key) if result.maps is not None else None
        if values is None:
            ax.text(0.5, 0.5, "no model map for this policy", ha="center", va="center")
            ax.set_axis_off()
        else:
            grid = _grid_map(values, candidates)
            if grid is not None:
                im = ax.imshow(grid, extent=extent, cmap="magma")
            else:  # atom-centred (or any scattered) candidates: one dot per candidate
                im = _scatter_map(ax, values, candidates, survey.shape)
            fig.colorbar(im, ax=ax)
            ax.scatter(rc[ok, 1], rc[ok, 0], s=4, c="cyan", edgecolors="none")
        ax.set_title(title)

    ax = axes[1, 1]
    t = np.array([s.target if s.target is not None else np.nan for s in steps])
    best = np.array([s.best_so_far if s.best_so_far is not None else np.nan for s in steps])
    initial = np.array([s.phase == "initial" for s in steps], dtype=bool)
    ax.plot(order[~initial], t[~initial], ".", label="policy")
    ax.plot(order[initial], t[initial], "s", ms=4, label="initial (random)")
    ax.plot(order, best, "-", color="k", label="best so far")
    ax.set_xlabel("step")
    ax.set_ylabel("target")
    ax.legend(fontsize=8)
    ax.set_title("target vs step")

    path = Path(folder) / name
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
