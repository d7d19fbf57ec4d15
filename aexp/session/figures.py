"""Figures of a session: where the probe went, what the model believes, how the target evolved.

:func:`session_figure` is the 2x2 overview ``aexp run`` writes at the end; the other figures are the
panels of ``aexp report`` (:mod:`aexp.session.report`). Drawing only: nothing here runs a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..types import Candidates, PixelTransform, SpectrumAxis, Step, Survey

if TYPE_CHECKING:
    from ..drift import Registration
    from ..loop import CampaignResult

__all__ = ["session_figure", "discovery_curve", "latency_table", "travel_per_step", "default_map_steps",
           "weight_table", "Quantity", "SurveyFrame", "target_quantity", "map_quantities", "spectra_to_show",
           "scale_bar_length", "PNG_DPI"]


def _literal_text(draw):
    """Draw under :data:`FIGURE_RC`: names in labels are literal text (a ``$`` is not math)."""
    import functools

    @functools.wraps(draw)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with pyplot().rc_context(FIGURE_RC):
            return draw(*args, **kwargs)

    return wrapped


@_literal_text
def session_figure(
    folder: str | Path,
    survey: Survey,
    candidates: Candidates,
    result: CampaignResult,
    name: str = "session.png",
    target: Quantity | None = None,
) -> Path:
    """Write a 2x2 PNG: survey with measured points coloured by step, predicted mean, predicted
    uncertainty, and target vs step (with the best so far), in nm on the survey with the maps
    registered to it; ``target`` names the colorbars' and the axis's quantity and unit. Returns its path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    steps = result.steps
    frame = SurveyFrame.of(survey.transform)
    rc, ok, _ = _points(steps)
    x, y = frame.xy(rc)
    order = np.arange(len(steps))
    fig, axes = plt.subplots(2, 2, figsize=(10, 9), constrained_layout=True)

    ax = axes[0, 0]
    ax.imshow(survey.image[0], cmap="gray", extent=frame.image_extent(survey.shape), interpolation="nearest")
    sc = ax.scatter(x[ok], y[ok], c=order[ok], cmap="viridis", s=16, zorder=3, **_POINT)
    if (~ok).any():
        ax.scatter(x[~ok], y[~ok], marker="x", c="red", s=18, label="failed")
        ax.legend(loc="lower right", fontsize=8)
    fig.colorbar(sc, ax=ax, label="step")
    frame.decorate(ax, survey.shape)
    ax.set_title(f"survey ({survey.channels[0]}) and measured points")

    labels = map_quantities(target) if target is not None else {}
    for ax, key, title in ((axes[0, 1], "mean", "predicted target"), (axes[1, 0], "std", "uncertainty (std)")):
        values = result.maps.get(key) if result.maps is not None else None
        if values is None:
            ax.text(0.5, 0.5, "no model map for this policy", ha="center", va="center")
            ax.set_axis_off()
        else:
            _draw_map(ax, fig, values, candidates, frame, survey.shape, labels[key].label if labels else title)
            ax.scatter(x[ok], y[ok], s=8, c="cyan", zorder=3, **_POINT)
        ax.set_title(title)

    ax = axes[1, 1]
    t = np.array([s.target if s.target is not None else np.nan for s in steps])
    best = np.array([s.best_so_far if s.best_so_far is not None else np.nan for s in steps])
    initial = np.array([s.phase == "initial" for s in steps], dtype=bool)
    ax.plot(order[~initial], t[~initial], ".", label="policy")
    ax.plot(order[initial], t[initial], "s", ms=4, label="initial (random)")
    ax.plot(order, best, "-", color="k", label="best so far")
    ax.set_xlabel("step")
    ax.set_ylabel(target.label if target is not None else "target")
    ax.legend(fontsize=8)
    ax.set_title("target vs step")

    path = Path(folder) / name
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --- aexp report: figures (PNG at 300 dpi and PDF) and one self-contained HTML page of a session ---

#: The panels of the report page, in its order (each drawn only when the session has what it needs).
REPORT_FIGURES = ("spectra", "survey", "maps", "target", "travel", "registrations", "discovery", "latency", "weights")

#: Resolution of the report's PNGs; each also gets a PDF beside it (vector, TrueType fonts).
PNG_DPI = 300
#: Settings every report figure is drawn under: labels are literal text (a ``$`` in a name is not
#: math), and the PDF embeds TrueType fonts a journal's production accepts and an editor can change.
FIGURE_RC = {"text.parse_math": False, "pdf.fonttype": 42, "ps.fonttype": 42}

# The unit of each built-in target's value, from the spectrum's units ``s`` and the axis's ``a``.
_TARGET_UNITS = {
    "band_intensity": "{s}·{a}", "edge_intensity": "{s}·{a}", "loop_area": "{s}·{a}",
    "peak_ratio": "1", "peak_position": "{a}", "edge_onset": "{a}", "coercive_bias": "{a}",
    "imprint": "{a}", "nucleation_bias": "{a}",
}


@dataclass(frozen=True)
class Quantity:
    """A plotted quantity: ``name``, ``unit`` (``""`` when unknown) and a ``detail`` such as the
    target's window; :attr:`label` is what a colorbar or axis shows.

    Example:
        >>> Quantity("band_intensity", "counts·eV", "window 1–3 eV").label
        'band_intensity (counts·eV), window 1–3 eV'
    """

    name: str
    unit: str = ""
    detail: str = ""

    @property
    def label(self) -> str:
        unit = f" ({self.unit})" if self.unit else ""
        return f"{self.name}{unit}" + (f", {self.detail}" if self.detail else "")


def target_quantity(name: str, params: dict[str, Any], axis: SpectrumAxis, spectrum_units: str) -> Quantity:
    """The target's name, the unit of its value and its window(s) in the spectrum axis's units.

    A plugin's target has no known unit (``""``): its label is its name and windows only.
    """
    template = _TARGET_UNITS.get(name)
    s = spectrum_units or "a.u."
    unit = "" if template is None else template.format(s=s, a=axis.units).strip("·")
    windows = [f"{k} {float(v[0]):g}–{float(v[1]):g} {axis.units}".strip()
               for k, v in params.items() if isinstance(v, (list, tuple)) and len(v) == 2]
    return Quantity(name, unit, ", ".join(windows))


@dataclass(frozen=True)
class SurveyFrame:
    """Where survey pixels land on a figure's axes, in nm.

    ``x = x0 + col * dx`` and ``y = y0 + row * dy`` (nm): the instrument's own coordinates when the
    scan is axis-aligned (columns along x, rows along y, as ``PixelTransform.square``); for a rotated
    or skewed scan, distances along the scan's columns and rows from the centre of pixel (0, 0), so
    the image is still drawn upright and to scale. ``dy > 0`` puts row 0 at the top.
    """

    x0: float
    dx: float
    y0: float
    dy: float
    xlabel: str = "x (nm)"
    ylabel: str = "y (nm)"

    @classmethod
    def of(cls, transform: PixelTransform) -> SurveyFrame:
        m = np.asarray(transform.matrix, dtype=float) * 1e9
        ox, oy = (float(v) * 1e9 for v in transform.origin)
        if m[0, 0] == 0 and m[1, 1] == 0:  # x = ox + m01 * col, y = oy + m10 * row
            return cls(x0=ox, dx=float(m[0, 1]), y0=oy, dy=float(m[1, 0]))
        return cls(x0=0.0, dx=float(np.hypot(*m[:, 1])), y0=0.0, dy=float(np.hypot(*m[:, 0])),
                   xlabel="along scan rows (nm)", ylabel="along scan columns (nm)")

    def xy(self, rc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixels ``N x 2`` (row, col) -> ``(x, y)``, each ``N``, nm."""
        rc = np.asarray(rc, dtype=float).reshape(-1, 2)
        return self.x0 + rc[:, 1] * self.dx, self.y0 + rc[:, 0] * self.dy

    def extent(self, rows: tuple[float, float], cols: tuple[float, float]) -> tuple[float, float, float, float]:
        """``imshow`` extent ``(left, right, bottom, top)`` of an image whose first and last pixel
        centres sit at survey rows ``rows`` and columns ``cols`` (its edges half a step outside)."""
        return (self.x0 + cols[0] * self.dx, self.x0 + cols[1] * self.dx,
                self.y0 + rows[1] * self.dy, self.y0 + rows[0] * self.dy)

    def image_extent(self, shape: tuple[int, int]) -> tuple[float, float, float, float]:
        """Extent of the whole survey ``H x W``: pixel centres at their own positions."""
        return self.extent((-0.5, shape[0] - 0.5), (-0.5, shape[1] - 0.5))

    def grid_extent(self, candidates: Candidates) -> tuple[float, float, float, float] | None:
        """Extent that puts each cell of a candidate-grid map on its candidate's centre pixel, or
        ``None`` when the candidates are not a regular row-major grid."""
        if candidates.grid_shape is None:
            return None
        px = np.asarray(candidates.pixels, dtype=float).reshape(*candidates.grid_shape, 2)
        r, c = px[:, 0, 0], px[0, :, 1]
        if not (np.allclose(px[..., 0], r[:, None]) and np.allclose(px[..., 1], c[None, :])):
            return None
        dr = float(np.diff(r).mean()) if len(r) > 1 else 1.0
        dc = float(np.diff(c).mean()) if len(c) > 1 else 1.0
        if not (np.allclose(np.diff(r), dr) and np.allclose(np.diff(c), dc)):
            return None
        return self.extent((r[0] - dr / 2, r[-1] + dr / 2), (c[0] - dc / 2, c[-1] + dc / 2))

    def decorate(self, ax, shape: tuple[int, int]) -> None:
        """nm axes over the whole survey and a scale bar in its lower-left corner."""
        from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

        left, right, bottom, top = self.image_extent(shape)
        ax.set_xlim(left, right)
        ax.set_ylim(bottom, top)
        ax.set_aspect("equal")
        ax.set(xlabel=self.xlabel, ylabel=self.ylabel)
        length = scale_bar_length(abs(right - left))
        bar = AnchoredSizeBar(ax.transData, length * np.sign(right - left), f"{length:g} nm", "lower left",
                              pad=0.4, color="white", frameon=False, size_vertical=abs(top - bottom) / 120,
                              fontproperties={"size": 8})
        label = getattr(bar.txt_label, "_text", None)  # the TextArea's Text: outlined, it reads on white too
        if label is not None:
            label.set_path_effects(_outline())
        ax.add_artist(bar)


def scale_bar_length(width_nm: float) -> float:
    """A round length (1, 2 or 5 x 10^k nm) near a fifth of ``width_nm``, never longer than it."""
    goal = max(width_nm, 1e-12) / 5
    k = np.floor(np.log10(goal))
    steps = [m * 10**k for m in (1, 2, 5, 10)]
    return float(max(s for s in steps if s <= max(goal, steps[0])))


def _outline():
    from matplotlib import patheffects

    return [patheffects.withStroke(linewidth=1.5, foreground="black")]


# Measured points: white-edged markers read on any colormap, dark or light.
_POINT = {"edgecolors": "white", "linewidths": 0.7}


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


def save_publication(fig, path: Path) -> Path:
    """``path`` (PNG, :data:`PNG_DPI`) and the same figure as a PDF beside it; returns the PNG."""
    with pyplot().rc_context(FIGURE_RC):
        fig.savefig(path, dpi=PNG_DPI)
        fig.set_layout_engine("none")  # the layout just solved holds for the PDF too: not solved twice
        fig.savefig(path.with_suffix(".pdf"))
    pyplot().close(fig)
    return path


def _points(steps: list[Step]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels ``n x 2`` of every step, which measured (``ok``), which were the operator's."""
    rc = np.array([s.pixel for s in steps], dtype=float).reshape(-1, 2)
    ok = np.array([s.status == "ok" for s in steps], dtype=bool)
    operator = np.array([s.phase == "operator" for s in steps], dtype=bool)
    return rc, ok, operator


def _survey_figure(survey: Survey, steps: list[Step], path: Path, units: str = "a.u.") -> Path:
    """Every survey channel (own colorbar: channel and unit) with the measured points coloured by step."""
    plt = pyplot()
    frame = SurveyFrame.of(survey.transform)
    rc, ok, operator = _points(steps)
    n = len(survey.channels)
    fig, axes = plt.subplots(1, n, figsize=(5.4 * n, 5.4), constrained_layout=True, squeeze=False)
    sc = None
    for ax, channel, image in zip(axes[0], survey.channels, survey.image):
        im = ax.imshow(image, cmap="gray", extent=frame.image_extent(survey.shape), interpolation="nearest")
        fig.colorbar(im, ax=ax, label=f"survey: {channel} ({units})", shrink=0.85)
        x, y = frame.xy(rc)
        sc = ax.scatter(x[ok], y[ok], c=np.flatnonzero(ok), cmap="viridis", s=18, zorder=3, **_POINT)
        if (~ok).any():
            ax.scatter(x[~ok], y[~ok], marker="x", c="red", s=22, zorder=3, label="failed")
        if operator.any():  # the operator's own points (aexp control goto, a replaced proposal)
            ax.scatter(x[operator], y[operator], marker="s", s=60, facecolors="none", edgecolors="orange",
                       zorder=3, label="operator")
        if (~ok).any() or operator.any():
            ax.legend(loc="lower right", fontsize=8)
        frame.decorate(ax, survey.shape)
        ax.set_title(f"survey ({channel}) and measured points")
    if sc is not None:  # below the panels, apart from the channels' own colorbars
        fig.colorbar(sc, ax=list(axes[0]), label="measurement step", location="bottom", shrink=0.6, aspect=40)
    return save_publication(fig, path)


def map_quantities(target: Quantity, acquisition: str | None = None) -> dict[str, Quantity]:
    """The colorbar quantity of each model map: predicted mean, its std, and (given the policy's
    ``acquisition``) the acquisition score, in the target's unit (``log_ei``: its log)."""
    out = {"mean": Quantity(f"predicted {target.name}", target.unit),
           "std": Quantity(f"uncertainty (std) of {target.name}", target.unit)}
    if acquisition is not None:
        unit = target.unit if acquisition != "log_ei" else f"log {target.unit}".strip()
        out["acquisition"] = Quantity(f"acquisition: {acquisition}", unit)
    return out


def _draw_map(ax, fig, values: np.ndarray, candidates: Candidates, frame: SurveyFrame, shape: tuple[int, int],
              label: str):
    """One model map over the survey's frame: an image registered to the candidates' centre pixels
    when they form a grid, else one dot per candidate."""
    values = np.where(np.isfinite(values), values, np.nan)
    extent = frame.grid_extent(candidates)
    if extent is not None:
        im = ax.imshow(values.reshape(candidates.grid_shape), extent=extent, cmap="magma",
                       interpolation="nearest")
    else:
        x, y = frame.xy(candidates.pixels)
        dot = float(np.clip(1.5e4 / max(len(x), 1), 2.0, 30.0))  # fewer candidates, bigger dots
        im = ax.scatter(x, y, c=values, cmap="magma", s=dot, edgecolors="none")
    fig.colorbar(im, ax=ax, label=label, shrink=0.85)
    frame.decorate(ax, shape)
    return im


def _maps_figure(maps: dict[int, dict[str, np.ndarray]], candidates: Candidates, steps: list[Step],
                 path: Path, survey: Survey, quantities: dict[str, Quantity]) -> Path:
    """One row per chosen step: predicted mean, uncertainty, acquisition (the chosen point starred)."""
    plt = pyplot()
    frame = SurveyFrame.of(survey.transform)
    fig, axes = plt.subplots(len(maps), 3, figsize=(12, 3.6 * len(maps)), constrained_layout=True, squeeze=False)
    titles = {"mean": "predicted target", "std": "uncertainty (std)", "acquisition": "acquisition"}
    for row, (k, m) in zip(axes, sorted(maps.items())):
        x, y = frame.xy(np.array([s.pixel for s in steps[:k]], dtype=float))
        cx, cy = frame.xy(np.array([steps[k].pixel], dtype=float))
        for ax, key in zip(row, ("mean", "std", "acquisition")):
            _draw_map(ax, fig, m[key], candidates, frame, survey.shape, quantities[key].label)
            ax.scatter(x, y, s=12, c="cyan", zorder=3, **_POINT)
            ax.scatter(cx, cy, marker="*", s=160, c="lime", edgecolors="k", zorder=4)
            ax.set_title(f"step {k}: {titles[key]}")
    return save_publication(fig, path)


def spectra_to_show(steps: list[Step], n_others: int = 4) -> list[Step]:
    """The best measured step first, then up to ``n_others`` others spread over the ranks of the
    target (the worst among them), so the panel shows what the target separates."""
    ok = sorted((s for s in steps if s.status == "ok" and s.target is not None and np.isfinite(s.target)
                 and s.spectrum_row is not None), key=lambda s: (-float(s.target), s.step))  # type: ignore[arg-type]
    if not ok:
        return []
    rest = ok[1:]
    if len(rest) <= n_others:
        return ok
    picks = np.unique(np.linspace(0, len(rest) - 1, n_others).round().astype(int))
    return [ok[0]] + [rest[i] for i in picks]


def _spectra_figure(shown: list[tuple[Step, np.ndarray]], axis: SpectrumAxis, spectrum_units: str,
                    target: Quantity, windows: list[tuple[float, float]], path: Path) -> Path:
    """The best measured spectrum (bold) and a few others, the target's window(s) shaded."""
    plt = pyplot()
    x = axis.values()
    fig, ax = plt.subplots(figsize=(7.5, 4.2), constrained_layout=True)
    for lo, hi in windows:
        ax.axvspan(lo, hi, color="gold", alpha=0.25, lw=0)
    for i, (step, spectrum) in enumerate(shown):
        value = f"{float(step.target):.4g} {target.unit}".strip()  # type: ignore[arg-type]
        ax.plot(x, spectrum, lw=2.0 if i == 0 else 0.9, color="k" if i == 0 else None, zorder=3 if i == 0 else 2,
                label=f"{'best: ' if i == 0 else ''}step {step.step}, {target.name} {value}")
    if windows:
        ax.plot([], [], color="gold", alpha=0.4, lw=6, label=f"target: {target.detail}")
        # the signal where the target reads it sets the scale (a zero-loss peak would flatten it)
        lo, hi = min(w[0] for w in windows), max(w[1] for w in windows)
        near = (x >= lo - (hi - lo) / 10) & (x <= hi + (hi - lo) / 10)
        seen = np.concatenate([np.asarray(sp, dtype=float)[near] for _, sp in shown])
        seen = seen[np.isfinite(seen)]
        if seen.size and seen.max() > seen.min():
            pad = 0.08 * (seen.max() - seen.min())
            ax.set_ylim(seen.min() - pad, seen.max() + pad)
    ax.set(xlabel=f"{axis.name} ({axis.units})" if axis.units else axis.name,
           ylabel=f"signal ({spectrum_units})" if spectrum_units else "signal",
           title="measured spectra: the best and others across the ranks")
    ax.legend(fontsize=7)
    return save_publication(fig, path)


def _target_figure(steps: list[Step], path: Path, target: Quantity | None = None) -> Path:
    plt = pyplot()
    order = np.arange(len(steps))
    t = np.array([np.nan if s.target is None else s.target for s in steps])
    best = np.array([np.nan if s.best_so_far is None else s.best_so_far for s in steps])
    initial = np.array([s.phase == "initial" for s in steps], dtype=bool)
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    ax.plot(order[~initial], t[~initial], ".", label="policy")
    ax.plot(order[initial], t[initial], "s", ms=4, label="initial (random)")
    ax.plot(order, best, "-", color="k", label="best so far")
    ax.set(xlabel="step", ylabel=target.label if target is not None else "target", title="target vs step")
    ax.legend(fontsize=8)
    return save_publication(fig, path)


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
    return save_publication(fig, path)


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
    return save_publication(fig, path)


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
    return save_publication(fig, path)


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
    return save_publication(fig, path)


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
           title="which inputs predicted the target (weight per group; joint, dkl: members over all inputs)")
    ax.legend(fontsize=8, loc="upper left")
    return save_publication(fig, path)
