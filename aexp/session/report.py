"""Figures of a session: where the probe went, what the model believes, how the target evolved.

:func:`session_figure` is the 2x2 overview ``aexp run`` writes at the end; :func:`write_report`
(``aexp report FOLDER``) draws a recorded session into PNGs and one self-contained HTML page, refitting
the model from the record at chosen steps for its maps.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..types import Candidates, Step, Survey

if TYPE_CHECKING:
    from ..loop import CampaignResult
    from ..policies import Decision, Policy, SelectionContext
    from .store import SessionReader

__all__ = ["session_figure", "write_report", "discovery_curve", "latency_table", "travel_per_step"]


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

REPORT_FIGURES = ("survey", "maps", "target", "travel", "discovery", "latency")


def _pyplot():
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


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=90)
    _pyplot().close(fig)
    return path


def _survey_figure(survey: Survey, steps: list[Step], path: Path) -> Path:
    plt = _pyplot()
    rc = np.array([s.pixel for s in steps], dtype=float).reshape(-1, 2)
    ok = np.array([s.status == "ok" for s in steps], dtype=bool)
    fig, ax = plt.subplots(figsize=(6, 5.4), constrained_layout=True)
    ax.imshow(survey.image[0], cmap="gray")
    sc = ax.scatter(rc[ok, 1], rc[ok, 0], c=np.flatnonzero(ok), cmap="viridis", s=16, edgecolors="none")
    if (~ok).any():
        ax.scatter(rc[~ok, 1], rc[~ok, 0], marker="x", c="red", s=20, label="failed")
        ax.legend(loc="lower right", fontsize=8)
    fig.colorbar(sc, ax=ax, label="step")
    ax.set_title(f"survey ({survey.channels[0]}) and measured points")
    return _save(fig, path)


def _maps_figure(maps: dict[int, dict[str, np.ndarray]], candidates: Candidates, steps: list[Step],
                 path: Path) -> Path:
    """One row per chosen step: predicted mean, uncertainty, acquisition (the chosen point starred)."""
    plt = _pyplot()
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
    return _save(fig, path)


def _target_figure(steps: list[Step], path: Path) -> Path:
    plt = _pyplot()
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
    return _save(fig, path)


def travel_per_step(steps: list[Step]) -> np.ndarray:
    """Probe travel from the previous step's position, metres (0 for the first step)."""
    xy = np.array([s.position for s in steps], dtype=float).reshape(-1, 2)
    d = np.zeros(len(xy))
    d[1:] = np.linalg.norm(np.diff(xy, axis=0), axis=1)
    return d


def _travel_figure(steps: list[Step], path: Path) -> Path:
    plt = _pyplot()
    d = travel_per_step(steps) * 1e9
    fig, ax = plt.subplots(figsize=(7, 3.5), constrained_layout=True)
    ax.bar(np.arange(len(d)), d, width=0.9)
    ax.set(xlabel="step", ylabel="travel (nm)", title=f"travel per step (total {d.sum():.0f} nm)")
    return _save(fig, path)


def discovery_curve(steps: list[Step], truth: np.ndarray, fraction: float = 0.01) -> np.ndarray:
    """Fraction of the true top ``fraction`` of candidates measured after each step -> ``n``."""
    k = max(1, int(np.ceil(fraction * len(truth))))
    top = set(np.argsort(-np.asarray(truth), kind="stable")[:k].tolist())
    found = np.cumsum([s.status == "ok" and s.index in top for s in steps])
    return found / k


def _discovery_figure(curve: np.ndarray, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5), constrained_layout=True)
    ax.plot(np.arange(1, len(curve) + 1), curve, "-o", ms=3)
    ax.set(xlabel="measurements", ylabel="fraction of true top 1 %", ylim=(0, 1.02),
           title="discovery (against the instrument's ground truth)")
    return _save(fig, path)


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
    plt = _pyplot()
    parts = latency_table(steps)
    fig, ax = plt.subplots(figsize=(7, 3.8), constrained_layout=True)
    bottom = np.zeros(len(steps))
    for name, values in parts.items():
        ax.bar(np.arange(len(steps)), values, bottom=bottom, width=0.9, label=name)
        bottom += values
    ax.set(xlabel="step", ylabel="seconds", title="latency per step")
    ax.legend(fontsize=8)
    return _save(fig, path)


class _MapCapture:
    """Wraps a policy to keep its mean / std / acquisition maps at chosen steps (decisions unchanged)."""

    def __init__(self, policy: Policy, steps: set[int]) -> None:
        self.policy, self.steps, self.name = policy, steps, policy.name
        self.maps: dict[int, dict[str, np.ndarray]] = {}

    def select(self, ctx: SelectionContext) -> Decision:
        ctx.want_maps = ctx.step in self.steps
        decision = self.policy.select(ctx)
        if decision.maps is not None:
            self.maps[ctx.step] = decision.maps
        return decision


def _model_maps(reader: SessionReader, steps_wanted: list[int]) -> tuple[Candidates | None, dict[int, dict[str, np.ndarray]]]:
    """Replay the session up to the last wanted step, refitting as the run did, keeping the maps."""
    from ..loop import build_policy, campaign, prepare
    from ..repro import torch_settings
    from .replay import SessionInstrument, _recorded_config
    from .store import MemoryRecorder

    if not steps_wanted:
        return None, {}
    man = reader.manifest
    cfg = _recorded_config(reader).with_overrides(**{"stopping.wall_time_s": None})
    seed = int(man["seed"])
    with torch_settings(man.get("torch", {}).get("num_threads")):
        instrument = SessionInstrument(reader)
        prepared = prepare(cfg, instrument, seed, progress=False)
        capture = _MapCapture(build_policy(cfg, int(prepared.features.shape[1]), seed, prepared.device),
                              set(steps_wanted))
        campaign(cfg, instrument, prepared, capture, MemoryRecorder(), seed, man.get("session_id", ""),
                 stop_after=max(steps_wanted) + 1)
    return prepared.candidates, capture.maps


def _truth(reader: SessionReader, positions: np.ndarray, notes: list[str]) -> np.ndarray | None:
    """The noiseless target of every candidate, if the recorded instrument can tell it (a simulator
    or a full-grid data set) and is still the one recorded; else ``None`` and a note says why."""
    from ..instrument import load_instrument
    from .replay import _differences, _recorded_config

    cfg = _recorded_config(reader)
    try:
        inst = load_instrument(cfg.instrument.driver, cfg.instrument.options, seed=int(reader.manifest["seed"]))
    except (LookupError, ValueError, OSError) as exc:
        notes.append(f"no discovery curve: the instrument cannot be loaded here ({exc})")
        return None
    if not hasattr(inst, "truth"):
        notes.append(f"no discovery curve: instrument {cfg.instrument.driver!r} has no ground truth")
        return None
    if _differences(inst.describe().to_dict(), reader.manifest.get("instrument")):
        notes.append("no discovery curve: the instrument differs from the recorded one")
        return None
    return np.asarray(inst.truth(positions, cfg.target.build()), dtype=float)


def _html(title: str, rows: list[tuple[str, str]], figures: list[tuple[str, str, Path]], notes: list[str]) -> str:
    import base64
    import html

    out = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}"
        "td,th{padding:2px 10px;text-align:left}img{max-width:100%}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>", '<table class="summary">',
    ]
    out += [f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows]
    out.append("</table>")
    for key, caption, path in figures:
        data = base64.b64encode(path.read_bytes()).decode()
        out.append(f'<section id="{key}"><h2>{html.escape(caption)}</h2>'
                   f'<img alt="{html.escape(caption)}" src="data:image/png;base64,{data}"></section>')
    if notes:
        out.append('<section id="notes"><h2>notes</h2><ul>')
        out += [f"<li>{html.escape(n)}</li>" for n in notes]
        out.append("</ul></section>")
    out.append("</body></html>")
    return "\n".join(out)


def write_report(folder: str | Path, out: str | Path | None = None,
                 map_steps: list[int] | None = None) -> Path:
    """Figures of a recorded session and one self-contained ``report.html`` (images embedded).

    Args:
        folder: the session (only read).
        out: where to write; default ``<folder>-report`` beside the session. Never inside it.
        map_steps: steps at which to draw the model's maps (refitted from the record);
            default :func:`default_map_steps`; ``[]`` for none.

    Returns:
        The path of ``report.html``.
    """
    from ..types import PixelTransform
    from .replay import _recorded_config
    from .store import SessionError, SessionReader

    reader = SessionReader(folder)
    out = Path(out) if out is not None else reader.folder.with_name(reader.folder.name + "-report")
    if out.resolve().is_relative_to(reader.folder.resolve()):
        raise SessionError(f"{out} lies inside the session folder; the report is written outside it")
    steps, man = reader.steps, reader.manifest
    wanted = default_map_steps(steps) if map_steps is None else list(map_steps)
    bad = [k for k in wanted if not 0 <= k < len(steps) or steps[k].phase != "policy"]
    if bad:
        raise ValueError(f"--maps-at: steps {bad} are not policy steps of this session "
                         f"(policy steps: {[s.step for s in steps if s.phase == 'policy']})")
    out.mkdir(parents=True, exist_ok=True)
    notes = list(reader.dropped)
    survey = Survey(reader.array("survey"), PixelTransform.from_dict(man["survey"]["transform"]),
                    tuple(man["survey"]["channels"]))
    figures = [("survey", "survey and measured points (colour: step)", _survey_figure(survey, steps, out / "survey.png"))]
    candidates, maps = _model_maps(reader, wanted)
    if maps and candidates is not None and candidates.grid_shape is not None:
        figures.append(("maps", f"model maps at steps {sorted(maps)} (refitted from the record)",
                        _maps_figure(maps, candidates, steps, out / "maps.png")))
    elif wanted:
        notes.append("no model maps: the policy has no model, or the candidates are not a grid")
    figures.append(("target", "target vs step", _target_figure(steps, out / "target.png")))
    figures.append(("travel", "travel per step", _travel_figure(steps, out / "travel.png")))
    truth = _truth(reader, reader.array("candidates"), notes) if steps else None
    if truth is not None:
        figures.append(("discovery", "discovery of the true top 1 % of candidates",
                        _discovery_figure(discovery_curve(steps, truth), out / "discovery.png")))
    figures.append(("latency", "latency per step (fit, select, move+measure, record+other)",
                    _latency_figure(steps, out / "latency.png")))
    summary = reader.summary or {"status": "no summary.json (stopped hard?)"}
    cfg = _recorded_config(reader)
    rows = [("session", str(reader.folder)), ("config", cfg.name), ("seed", str(man.get("seed"))),
            ("policy", f"{cfg.policy.kind} / {cfg.policy.acquisition}"), ("target", cfg.target.name),
            ("steps", f"{len(steps)} of a budget of {man.get('budget')}"),
            ("status", str(summary.get("status"))),
            ("best target", str(max((s.target for s in steps if s.target is not None), default=None)))]
    page = out / "report.html"
    page.write_text(_html(f"aexp session {man.get('session_id', '')}: {cfg.name}", rows, figures, notes))
    return page
