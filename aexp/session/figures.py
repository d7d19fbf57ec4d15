"""Figures of a session: where the probe went, what the model believes, how the target evolved.

:func:`session_figure` is the 2x2 overview ``aexp run`` writes at the end; the other figures are the
panels of ``aexp report`` (:mod:`aexp.session.report`). Drawing only: nothing here runs a model.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..types import Candidates, Step, Survey

if TYPE_CHECKING:
    from ..drift import Registration
    from ..loop import CampaignResult

__all__ = ["session_figure", "discovery_curve", "latency_table", "travel_per_step", "default_map_steps",
           "weight_table"]


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
    result: CampaignResult,
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


# --- aexp report: PNG figures and one self-contained HTML page of a recorded session ---

REPORT_FIGURES = ("survey", "maps", "target", "travel", "discovery", "latency", "weights")


def pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def default_map_steps(steps: list[Step]) -> list[int]:
    """First, middle and last policy step (fewer if the session has fewer)."""
    policy = [s.step for s in steps if s.phase == "policy"]
    if not policy:
        return []
    return sorted({policy[0], policy[len(policy) // 2], policy[-1]})


def save_figure(fig, path: Path) -> Path:
    fig.savefig(path, dpi=90)
    pyplot().close(fig)
    return path


def _survey_figure(survey: Survey, steps: list[Step], path: Path) -> Path:
    plt = pyplot()
    rc = np.array([s.pixel for s in steps], dtype=float).reshape(-1, 2)
    ok = np.array([s.status == "ok" for s in steps], dtype=bool)
    fig, ax = plt.subplots(figsize=(6, 5.4), constrained_layout=True)
    ax.imshow(survey.image[0], cmap="gray")
    sc = ax.scatter(rc[ok, 1], rc[ok, 0], c=np.flatnonzero(ok), cmap="viridis", s=16, edgecolors="none")
    if (~ok).any():
        ax.scatter(rc[~ok, 1], rc[~ok, 0], marker="x", c="red", s=20, label="failed")
    operator = np.array([s.phase == "operator" for s in steps], dtype=bool)
    if operator.any():  # the operator's own points (aexp control goto, a replaced proposal)
        ax.scatter(rc[operator, 1], rc[operator, 0], marker="s", s=60, facecolors="none", edgecolors="orange",
                   label="operator")
    if (~ok).any() or operator.any():
        ax.legend(loc="lower right", fontsize=8)
    fig.colorbar(sc, ax=ax, label="step")
    ax.set_title(f"survey ({survey.channels[0]}) and measured points")
    return save_figure(fig, path)


def _maps_figure(maps: dict[int, dict[str, np.ndarray]], candidates: Candidates, steps: list[Step],
                 path: Path) -> Path:
    """One row per chosen step: predicted mean, uncertainty, acquisition (the chosen point starred)."""
    plt = pyplot()
    px = candidates.pixels
    extent = (px[:, 1].min(), px[:, 1].max(), px[:, 0].max(), px[:, 0].min())
    fig, axes = plt.subplots(len(maps), 3, figsize=(13, 3.9 * len(maps)), constrained_layout=True, squeeze=False)
    for row, (k, m) in zip(axes, sorted(maps.items())):
        done = np.array([s.pixel for s in steps[:k]], dtype=float).reshape(-1, 2)
        chosen = steps[k].pixel
        for ax, key, title in zip(row, ("mean", "std", "acquisition"), ("predicted target", "uncertainty (std)", "acquisition")):
            values = np.where(np.isfinite(m[key]), m[key], np.nan).reshape(candidates.grid_shape)
            im = ax.imshow(values, extent=extent, cmap="magma")
            fig.colorbar(im, ax=ax)
            ax.scatter(done[:, 1], done[:, 0], s=5, c="cyan", edgecolors="none")
            ax.scatter([chosen[1]], [chosen[0]], marker="*", s=120, c="lime", edgecolors="k")
            ax.set_title(f"step {k}: {title}")
    return save_figure(fig, path)


def _target_figure(steps: list[Step], path: Path) -> Path:
    plt = pyplot()
    order = np.arange(len(steps))
    t = np.array([np.nan if s.target is None else s.target for s in steps])
    best = np.array([np.nan if s.best_so_far is None else s.best_so_far for s in steps])
    initial = np.array([s.phase == "initial" for s in steps], dtype=bool)
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    ax.plot(order[~initial], t[~initial], ".", label="policy")
    ax.plot(order[initial], t[initial], "s", ms=4, label="initial (random)")
    ax.plot(order, best, "-", color="k", label="best so far")
    ax.set(xlabel="step", ylabel="target", title="target vs step")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def travel_per_step(steps: list[Step]) -> np.ndarray:
    """Probe travel from the previous step's position, metres (0 for the first step)."""
    xy = np.array([s.position for s in steps], dtype=float).reshape(-1, 2)
    d = np.zeros(len(xy))
    d[1:] = np.linalg.norm(np.diff(xy, axis=0), axis=1)
    return d


def _travel_figure(steps: list[Step], path: Path) -> Path:
    plt = pyplot()
    d = travel_per_step(steps) * 1e9
    fig, ax = plt.subplots(figsize=(7, 3.5), constrained_layout=True)
    ax.bar(np.arange(len(d)), d, width=0.9)
    ax.set(xlabel="step", ylabel="travel (nm)", title=f"travel per step (total {d.sum():.0f} nm)")
    return save_figure(fig, path)


def discovery_curve(steps: list[Step], truth: np.ndarray, fraction: float = 0.01) -> np.ndarray:
    """Fraction of the true top ``fraction`` of candidates measured after each step -> ``n``."""
    k = max(1, int(np.ceil(fraction * len(truth))))
    top = set(np.argsort(-np.asarray(truth), kind="stable")[:k].tolist())
    found = np.cumsum([s.status == "ok" and s.index in top for s in steps])
    return found / k


def _discovery_figure(curve: np.ndarray, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5), constrained_layout=True)
    ax.plot(np.arange(1, len(curve) + 1), curve, "-o", ms=3)
    ax.set(xlabel="measurements", ylabel="fraction of true top 1 %", ylim=(0, 1.02),
           title="discovery (against the instrument's ground truth)")
    return save_figure(fig, path)


def latency_table(steps: list[Step]) -> dict[str, np.ndarray]:
    """Seconds per step: ``fit``, ``select``, ``move+measure`` and ``record+other``.

    ``record+other`` is ``decision_s - fit_s - select_s``: the time from the previous measurement's
    arrival to this decision not spent fitting or selecting (mostly writing the previous record).
    """
    def col(key: str) -> np.ndarray:
        return np.array([s.timings.get(key, 0.0) for s in steps], dtype=float)

    fit, select = col("fit_s"), col("select_s")
    return {"fit": fit, "select": select, "move+measure": col("measure_s"),
            "record+other": np.maximum(col("decision_s") - fit - select, 0.0)}


def _latency_figure(steps: list[Step], path: Path) -> Path:
    plt = pyplot()
    parts = latency_table(steps)
    fig, ax = plt.subplots(figsize=(7, 3.8), constrained_layout=True)
    bottom = np.zeros(len(steps))
    for name, values in parts.items():
        ax.bar(np.arange(len(steps)), values, bottom=bottom, width=0.9, label=name)
        bottom += values
    ax.set(xlabel="step", ylabel="seconds", title="latency per step")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _registration_figure(records: list[Registration], path: Path) -> Path:
    """The drift correction in force after each re-registration (x, y in nm); failed ones marked."""
    plt = pyplot()
    steps = np.array([r.step for r in records])
    off = np.array([r.offset_m for r in records]).reshape(-1, 2) * 1e9
    est = np.array([r.shift_m for r in records]).reshape(-1, 2) * 1e9
    failed = np.array([not r.ok for r in records])
    fig, ax = plt.subplots(figsize=(7, 3.5), constrained_layout=True)
    for j, name in enumerate("xy"):
        ax.step(steps, off[:, j], "-o", where="post", ms=3, label=f"correction {name}")
    if failed.any():
        ax.plot(steps[failed], est[failed, 0], "rx", label="failed estimate (x), not applied")
    ax.set(xlabel="step (registered before it)", ylabel="drift correction (nm)",
           title=f"re-registrations ({len(records)}, {int(failed.sum())} failed)")
    ax.legend(fontsize="small")
    return save_figure(fig, path)


def weight_table(steps: list[Step]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The surrogate's weight per input group at each step that recorded one (``surrogate.kind:
    groups``): ``(step numbers, {group: weights})``, groups in the order first seen; empty when no
    step has weights."""
    rows = [s for s in steps if s.weights]
    groups: list[str] = []
    for s in rows:
        groups += [g for g in s.weights if g not in groups]  # type: ignore[union-attr]
    table = {g: np.array([float(s.weights.get(g, 0.0)) for s in rows]) for g in groups}  # type: ignore[union-attr]
    return np.array([s.step for s in rows], dtype=int), table


def _weights_figure(steps: list[Step], path: Path) -> Path:
    """Stacked weight of each input group vs step: which inputs the surrogate trusted as data came."""
    plt = pyplot()
    order, table = weight_table(steps)
    fig, ax = plt.subplots(figsize=(7, 3.8), constrained_layout=True)
    ax.stackplot(order, *table.values(), labels=list(table), step="mid")
    ax.set(xlabel="step", ylabel="weight", ylim=(0, 1), xlim=(order.min() - 0.5, order.max() + 0.5),
           title="which inputs predicted the target (weight per group; dkl: the deep-kernel member)")
    ax.legend(fontsize=8, loc="upper left")
    return save_figure(fig, path)
