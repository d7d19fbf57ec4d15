"""``aexp bench-report``: a Markdown table and PNG figures of a campaign folder (``cells.jsonl``).

Per config of the campaign:

- discovery per policy: the mean over seeds with a bootstrap 95 % interval (percentiles of the
  mean over 10,000 resamples of the seeds, a fixed generator so the report is reproducible);
- paired differences: for two policies, ``d_s = discovery_A(s) - discovery_B(s)`` over the seeds
  both finished; the mean of ``d`` with its bootstrap interval, and how many seeds A was ahead,
  behind or level. The verdict is ``ahead`` when the interval lies above 0, ``behind`` below 0,
  else ``level``;
- discovery curves: the fraction of the true top found after each measurement, median over seeds
  with the interquartile band;
- decision times: the distribution of every policy step's seconds from a measurement to the next
  choice.

Figures are drawn as ``aexp report`` draws a session's (matplotlib, Agg, the same sizes and dpi).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..session.figures import pyplot, save_figure
from .cells import CellResult, CellStore

__all__ = ["PairedDifference", "PolicySummary", "bootstrap_ci", "paired_differences", "summarise",
           "write_bench_report", "BENCH_FIGURES"]

BENCH_FIGURES = ("discovery", "paired", "curves", "decision_times")
BOOTSTRAP_RESAMPLES = 10_000


def bootstrap_ci(values: np.ndarray, level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (``n``): resample the n values with
    replacement ``resamples`` times and take the ``(1 - level) / 2`` and ``(1 + level) / 2``
    quantiles of the resampled means. One value gives a zero-width interval at it.

    Example:
        >>> bootstrap_ci(np.array([0.5, 0.5, 0.5]))
        (0.5, 0.5)
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return (float(lo), float(hi))


@dataclass(frozen=True)
class PolicySummary:
    """One row of the discovery table."""

    policy: str
    seeds: int
    failed: int
    mean: float
    ci: tuple[float, float]
    ratio: float  # mean / the baseline's mean (nan when there is no baseline or it found nothing)
    decision_median_s: float
    decision_p90_s: float


@dataclass(frozen=True)
class PairedDifference:
    """Policy ``a`` minus policy ``b``, seed by seed."""

    a: str
    b: str
    seeds: int
    mean: float
    ci: tuple[float, float]
    ahead: int
    behind: int
    level: int

    @property
    def verdict(self) -> str:
        if self.seeds == 0:
            return "-"
        if self.ci[0] > 0:
            return "ahead"
        if self.ci[1] < 0:
            return "behind"
        return "level"


def summarise(records: list[CellResult], baseline: str = "random") -> list[PolicySummary]:
    """The discovery table of one config's records (the last record of each cell)."""
    policies = list(dict.fromkeys(r.policy for r in records))
    means = {p: np.mean([r.discovery for r in records if r.policy == p and r.status == "ok"] or [np.nan])
             for p in policies}
    base = means.get(baseline, np.nan)
    rows = []
    for p in policies:
        ok = [r for r in records if r.policy == p and r.status == "ok"]
        disc = np.array([r.discovery for r in ok], dtype=float)
        times = np.concatenate([np.asarray(r.decision_times_s, dtype=float) for r in ok] or [np.zeros(0)])
        rows.append(PolicySummary(
            policy=p, seeds=len(ok), failed=sum(r.policy == p and r.status != "ok" for r in records),
            mean=float(disc.mean()) if disc.size else float("nan"), ci=bootstrap_ci(disc),
            ratio=float(means[p] / base) if base > 0 else float("nan"),
            decision_median_s=float(np.median(times)) if times.size else float("nan"),
            decision_p90_s=float(np.quantile(times, 0.9)) if times.size else float("nan"),
        ))
    return rows


def paired_differences(records: list[CellResult]) -> list[PairedDifference]:
    """Every pair (a, b) of policies, a before b in the order they first appear."""
    policies = list(dict.fromkeys(r.policy for r in records))
    by = {p: {r.seed: float(r.discovery) for r in records
              if r.policy == p and r.status == "ok" and r.discovery is not None} for p in policies}
    out = []
    for i, a in enumerate(policies):
        for b in policies[i + 1:]:
            seeds = sorted(set(by[a]) & set(by[b]))
            d = np.array([by[a][s] - by[b][s] for s in seeds], dtype=float)
            out.append(PairedDifference(
                a=a, b=b, seeds=len(seeds), mean=float(d.mean()) if d.size else float("nan"),
                ci=bootstrap_ci(d), ahead=int((d > 0).sum()), behind=int((d < 0).sum()),
                level=int((d == 0).sum()),
            ))
    return out


def _curves(records: list[CellResult], policy: str) -> np.ndarray:
    """``seeds x budget`` discovery curves of ``policy`` (a curve cut short keeps its last value)."""
    ok = [r.discovery_curve for r in records if r.policy == policy and r.status == "ok" and r.discovery_curve]
    if not ok:
        return np.zeros((0, 0))
    n = max(len(c) for c in ok)
    return np.array([list(c) + [c[-1]] * (n - len(c)) for c in ok], dtype=float)


def _fmt(x: float, digits: int = 3) -> str:
    return "-" if not np.isfinite(x) else f"{x:.{digits}f}"


def _markdown(title: str, groups: list[tuple[str, list[CellResult]]], baseline: str,
              notes: list[str], figures: list[Path]) -> str:
    lines = [f"# {title}", ""]
    for label, recs in groups:
        first = next((r for r in recs if r.status == "ok"), recs[0])
        seeds = sorted({r.seed for r in recs})
        lines += [f"## {label}", "",
                  f"config `{first.config[:12]}`; budget {first.budget} of {first.n_candidates} candidates; "
                  f"discovery of the true top {first.top_fraction:.0%}; {len(seeds)} seeds "
                  f"({seeds[0]}..{seeds[-1]}); intervals: bootstrap 95 % over seeds", "",
                  f"| policy | seeds | failed | discovery | 95 % interval | x {baseline} | decision s (median) "
                  f"| decision s (p90) |",
                  "|---|---:|---:|---:|---|---:|---:|---:|"]
        for s in summarise(recs, baseline):
            lines.append(f"| {s.policy} | {s.seeds} | {s.failed} | {_fmt(s.mean)} | "
                         f"[{_fmt(s.ci[0])}, {_fmt(s.ci[1])}] | {_fmt(s.ratio, 2)} | "
                         f"{_fmt(s.decision_median_s, 4)} | {_fmt(s.decision_p90_s, 4)} |")
        pairs = paired_differences(recs)
        if pairs:
            lines += ["", "Paired differences (A - B, seed by seed):", "",
                      "| A | B | seeds | mean difference | 95 % interval | ahead | behind | level | verdict |",
                      "|---|---|---:|---:|---|---:|---:|---:|---|"]
            for d in pairs:
                lines.append(f"| {d.a} | {d.b} | {d.seeds} | {_fmt(d.mean)} | [{_fmt(d.ci[0])}, {_fmt(d.ci[1])}] "
                             f"| {d.ahead} | {d.behind} | {d.level} | {d.verdict} |")
        lines.append("")
    failed = [r for _, recs in groups for r in recs if r.status != "ok"]
    if failed:
        lines += ["## Failed cells", ""]
        lines += [f"- {r.config_name} seed {r.seed} {r.policy}: {r.error}" for r in failed]
        lines.append("")
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures] + [""]
    return "\n".join(lines)


def _panels(n: int, height: float = 3.5):
    plt = pyplot()
    fig, axes = plt.subplots(1, n, figsize=(7 * n if n > 1 else 7, height), constrained_layout=True,
                             squeeze=False)
    return fig, list(axes[0])


def _discovery_figure(groups: list[tuple[str, list[CellResult]]], baseline: str, path: Path) -> Path:
    fig, axes = _panels(len(groups))
    for ax, (label, recs) in zip(axes, groups):
        rows = summarise(recs, baseline)
        x = np.arange(len(rows))
        for i, s in enumerate(rows):
            seeds = [r.discovery for r in recs if r.policy == s.policy and r.status == "ok"]
            jitter = np.linspace(-0.15, 0.15, len(seeds)) if len(seeds) > 1 else np.zeros(len(seeds))
            ax.scatter(i + jitter, seeds, s=8, color="0.6", zorder=1)
            if np.isfinite(s.mean):
                ax.errorbar(i, s.mean, yerr=[[s.mean - s.ci[0]], [s.ci[1] - s.mean]], fmt="o", ms=6,
                            capsize=4, color="C0", zorder=2)
        ax.set_xticks(x, [s.policy for s in rows])
        ax.set(ylabel="discovery", ylim=(-0.02, 1.02), title=f"{label}: discovery, mean and bootstrap 95 %")
    return save_figure(fig, path)


def _paired_figure(groups: list[tuple[str, list[CellResult]]], path: Path) -> Path:
    fig, axes = _panels(len(groups))
    for ax, (label, recs) in zip(axes, groups):
        pairs = paired_differences(recs)
        by = {(r.policy, r.seed): r.discovery for r in recs if r.status == "ok" and r.discovery is not None}
        for i, d in enumerate(pairs):
            diffs = [by[(d.a, s)] - by[(d.b, s)] for s in sorted({r.seed for r in recs})
                     if (d.a, s) in by and (d.b, s) in by]
            jitter = np.linspace(-0.15, 0.15, len(diffs)) if len(diffs) > 1 else np.zeros(len(diffs))
            ax.scatter(i + jitter, diffs, s=8, color="0.6", zorder=1)
            if d.seeds:
                colour = {"ahead": "C2", "behind": "C3"}.get(d.verdict, "C0")
                ax.errorbar(i, d.mean, yerr=[[d.mean - d.ci[0]], [d.ci[1] - d.mean]], fmt="o", ms=6,
                            capsize=4, color=colour, zorder=2)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(np.arange(len(pairs)), [f"{d.a}\n- {d.b}" for d in pairs], fontsize=8)
        ax.set(ylabel="discovery difference", title=f"{label}: paired differences (seed by seed)")
    return save_figure(fig, path)


def _curves_figure(groups: list[tuple[str, list[CellResult]]], path: Path) -> Path:
    fig, axes = _panels(len(groups))
    for ax, (label, recs) in zip(axes, groups):
        top = next((r.top_fraction for r in recs if r.status == "ok"), 0.01)
        for i, p in enumerate(dict.fromkeys(r.policy for r in recs)):
            c = _curves(recs, p)
            if not c.size:
                continue
            m = np.arange(1, c.shape[1] + 1)
            q25, med, q75 = np.quantile(c, [0.25, 0.5, 0.75], axis=0)
            ax.plot(m, med, color=f"C{i}", label=f"{p} (median of {len(c)})")
            ax.fill_between(m, q25, q75, color=f"C{i}", alpha=0.2, lw=0)
        ax.set(xlabel="measurements", ylabel=f"fraction of true top {top:.0%}", ylim=(0, 1.02),
               title=f"{label}: discovery curves (median, interquartile band)")
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def _decision_figure(groups: list[tuple[str, list[CellResult]]], path: Path) -> Path:
    fig, axes = _panels(len(groups))
    for ax, (label, recs) in zip(axes, groups):
        names, data = [], []
        for p in dict.fromkeys(r.policy for r in recs):
            t = np.concatenate([np.asarray(r.decision_times_s, float) for r in recs
                                if r.policy == p and r.status == "ok"] or [np.zeros(0)])
            if t.size:
                names.append(p)
                data.append(np.maximum(t, 1e-6))  # log axis: a random pick can take under a microsecond
        if data:
            ax.boxplot(data, tick_labels=names, whis=(5, 95), showfliers=False)
            ax.set_yscale("log")
        ax.set(ylabel="seconds per decision", title=f"{label}: decision time (box: quartiles, whiskers 5-95 %)")
    return save_figure(fig, path)


def _groups(records: list[CellResult], configs: dict[str, Any]) -> list[tuple[str, list[CellResult]]]:
    """The records per config, labelled by the config's name (and digest when two share a name)."""
    digests = list(dict.fromkeys(r.config for r in records))
    names = {d: (configs.get(d, {}).get("name") or next(r.config_name for r in records if r.config == d))
             for d in digests}
    out = []
    for d in digests:
        label = names[d] if list(names.values()).count(names[d]) == 1 else f"{names[d]} ({d[:8]})"
        out.append((label, [r for r in records if r.config == d]))
    return out


def write_bench_report(folder: str | Path, out: str | Path | None = None,
                       baseline: str = "random") -> list[Path]:
    """Write ``report.md`` and the figures (:data:`BENCH_FIGURES`, PNG) of the campaign in ``folder``
    into ``out`` (default ``folder/report``); returns their paths, the Markdown first."""
    from ..session.store import SessionError

    folder = Path(folder)
    store = CellStore(folder)
    if not store.path.exists():
        raise SessionError(f"{folder}: no {CellStore.FILE}; is this the --out folder of aexp bench?")
    latest = list(store.latest().values())
    if not latest:
        raise SessionError(f"{store.path}: holds no finished cell yet")
    meta_path = folder / "campaign.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    # configs and policies in the order the campaign named them, seeds ascending: the same report
    # whatever order the cells finished in
    configs = {d: i for i, d in enumerate(meta.get("configs", {}))}
    named = [p for run in meta.get("runs", []) for p in run.get("policies", [])]
    policies = {p: i for i, p in enumerate(dict.fromkeys(named + sorted({r.policy for r in latest})))}
    latest.sort(key=lambda r: (configs.get(r.config, len(configs)), policies[r.policy], r.seed))
    groups = _groups(latest, meta.get("configs", {}))
    out = Path(out) if out is not None else folder / "report"
    out.mkdir(parents=True, exist_ok=True)
    figures = [
        _discovery_figure(groups, baseline, out / "discovery.png"),
        _paired_figure(groups, out / "paired.png"),
        _curves_figure(groups, out / "curves.png"),
        _decision_figure(groups, out / "decision_times.png"),
    ]
    notes = list(store.dropped)
    runs = meta.get("runs", [])
    if runs:
        notes.append("runs: " + "; ".join(f"{r['started']} on {r['executor']} ({r['to_run']} of {r['cells']} cells)"
                                          for r in runs))
    md = out / "report.md"
    md.write_text(_markdown(f"Benchmark campaign {folder.name}", groups, baseline, notes, figures))
    return [md, *figures]
