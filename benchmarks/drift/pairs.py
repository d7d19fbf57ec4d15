"""Discovery and position error on a drifting sample against the same sample standing still, paired by seed.

Reads every ``cells.jsonl`` under the given ``aexp bench --out`` folders (one campaign per seed is fine:
the cells of a seed then finish together). ``--base`` names the config on the still sample, ``--compare``
the drifting ones (re-registered at various intervals, or not at all); each seed is the same sample,
the same initial points and the same decisions until the drift first changes a measured value.

Per seed and config: discovery, the mean and the largest position error (survey pixels, the twin's
truth), and the first step whose choice differs from the still run's. Then the means over the seeds
both configs finished, the change of mean discovery against the still run in percent, and the mean
position error before the first registration and after it.

    python benchmarks/drift/pairs.py runs/drift --base plasmonic-async-sim \\
        --compare plasmonic-drift-60-sim plasmonic-drift-off-sim
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def load(folders: list[Path], policy: str | None = None) -> dict[tuple[str, int], dict]:
    """``(config name, seed) -> cell`` over the ok cells of every ``cells.jsonl`` under ``folders``
    (the last record of a cell wins, as in ``aexp bench --resume``)."""
    cells: dict[tuple[str, int], dict] = {}
    for folder in folders:
        for path in sorted(folder.rglob("cells.jsonl")):
            for line in path.read_text().splitlines():
                c = json.loads(line)
                if c.get("status") == "ok" and policy in (None, c["policy"]):
                    cells[(c["config_name"], int(c["seed"]))] = c
    return cells


def first_difference(a: list[int], b: list[int]) -> int:
    """The first step at which two runs chose different candidates (``len`` when none did)."""
    return next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def split_error(cell: dict) -> tuple[float, float]:
    """Mean position error (px) of the measurements before the first registration and after it;
    NaN for a side without measurements (no registration: everything is "before")."""
    curve = np.asarray(cell.get("position_error_curve_px") or [], dtype=float)
    steps = cell.get("registration_steps") or []
    cut = int(steps[0]) if steps else len(curve)
    before, after = curve[:cut], curve[cut:]
    return (float(before.mean()) if len(before) else float("nan"),
            float(after.mean()) if len(after) else float("nan"))


def table(cells: dict[tuple[str, int], dict], base: str, compare: list[str]) -> str:
    seeds = sorted(s for n, s in cells if n == base and all((c, s) in cells for c in compare))
    head = f"{'seed':>4} {'still':>6}" + "".join(f" | {'disc':>5} {'err':>5} {'max':>5} {'diverge':>7}" for _ in compare)
    rows = ["configs: " + ", ".join([f"still = {base}", *compare]), head]
    for s in seeds:
        row = f"{s:>4} {cells[(base, s)]['discovery']:>6.3f}"
        for name in compare:
            c = cells[(name, s)]
            row += (f" | {c['discovery']:>5.3f} {c['position_error_px']:>5.2f} {c['position_error_max_px']:>5.2f} "
                    f"{first_difference(cells[(base, s)]['indices'], c['indices']):>7d}")
        rows.append(row)
    if not seeds:
        return "\n".join([*rows, "no seed has every config finished"])
    still = float(np.mean([cells[(base, s)]["discovery"] for s in seeds]))
    rows.append(f"mean {still:>6.3f}" + "".join(
        f" | {np.mean([cells[(n, s)]['discovery'] for s in seeds]):>5.3f} "
        f"{np.mean([cells[(n, s)]['position_error_px'] for s in seeds]):>5.2f} "
        f"{np.mean([cells[(n, s)]['position_error_max_px'] for s in seeds]):>5.2f} "
        f"{np.median([first_difference(cells[(base, s)]['indices'], cells[(n, s)]['indices']) for s in seeds]):>7.0f}"
        for n in compare))
    rows.append(f"{len(seeds)} seeds (diverge: median over seeds of the first step that chose otherwise than the still run)")
    for name in compare:
        d = np.array([cells[(name, s)]["discovery"] for s in seeds])
        b = np.array([cells[(base, s)]["discovery"] for s in seeds])
        diff = d - b
        sem = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan")
        split = np.array([split_error(cells[(name, s)]) for s in seeds])
        regs = [cells[(name, s)].get("registrations") for s in seeds]
        failed = sum(cells[(name, s)].get("registrations_failed") or 0 for s in seeds)
        rows.append(
            f"{name}: discovery {100 * (d.mean() / b.mean() - 1):+.0f} % against still "
            f"(paired difference {diff.mean():+.3f} +- {sem:.3f} s.e.; lower on {int((diff < 0).sum())}, "
            f"higher on {int((diff > 0).sum())} of {len(seeds)} seeds); position error before the first "
            f"registration {np.nanmean(split[:, 0]):.2f} px, after {_nan(split[:, 1])}; registrations "
            f"{'none' if regs[0] is None else f'{np.mean(regs):.1f} per run, {failed} failed'}; twin time "
            f"{np.mean([(cells[(name, s)].get('probe_times_s') or [np.nan])[-1] for s in seeds]):.1f} s")
    for i, a in enumerate(compare):
        for b in compare[i + 1:]:
            steps = [first_difference(cells[(a, s)]["indices"], cells[(b, s)]["indices"]) for s in seeds]
            rows.append(f"{a} and {b} first chose differently at step {np.median(steps):.0f} (median; "
                        f"{min(steps)}-{max(steps)})")
    return "\n".join(rows)


def _nan(values: np.ndarray) -> str:
    return "-" if np.all(np.isnan(values)) else f"{np.nanmean(values):.2f} px"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", type=Path, nargs="+", help="--out folders of aexp bench (searched for cells.jsonl)")
    p.add_argument("--base", required=True, help="config name on the still sample")
    p.add_argument("--compare", required=True, nargs="+", help="config names on the drifting sample")
    p.add_argument("--policy", default=None, help="only this bench policy (default: all cells)")
    args = p.parse_args()
    print(table(load(args.folders, args.policy), args.base, args.compare))


if __name__ == "__main__":
    main()
