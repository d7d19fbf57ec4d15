"""Discovery and decision time of two configs of one ``aexp bench`` campaign, paired by seed.

A seed is the same sample and the same initial points under both configs, so the difference of a
pair is the configs' difference alone. Prints one row per seed (discovery of each, the median
decision time of each), the means, and the mean paired difference of discovery with its standard
error and the count of seeds ahead / behind / level.

    python benchmarks/paired.py runs/w15 --base plasmonic-dkl --compare plasmonic-dkl-w15

Several ``--out`` folders may be given; the last record of a cell wins, as in ``aexp bench --resume``.
``--json`` writes the same as an object.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def load(folders: list[Path], policy: str | None = None) -> dict[tuple[str, int, str], dict]:
    """``(config name, seed, policy) -> cell`` over the finished cells of each folder's ``cells.jsonl``."""
    cells: dict[tuple[str, int, str], dict] = {}
    for folder in folders:
        for line in (folder / "cells.jsonl").read_text().splitlines():
            c = json.loads(line)
            if c.get("status") == "ok" and policy in (None, c["policy"]):
                cells[(c["config_name"], int(c["seed"]), c["policy"])] = c
    return cells


def compare(cells: dict[tuple[str, int, str], dict], base: str, other: str) -> dict:
    """Per seed (and policy) figures of ``other`` against ``base`` on the cells both finished."""
    keys = sorted((s, pol) for n, s, pol in cells if n == base and (other, s, pol) in cells)
    if not keys:
        raise SystemExit(f"no seed finished under both {base!r} and {other!r}")
    a = np.array([cells[(base, *k)]["discovery"] for k in keys])
    b = np.array([cells[(other, *k)]["discovery"] for k in keys])
    ta = np.array([cells[(base, *k)]["decision_s"] for k in keys])
    tb = np.array([cells[(other, *k)]["decision_s"] for k in keys])
    seeds = [f"{s} {pol}" for s, pol in keys]
    diff = b - a
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan")
    return {
        "base": base, "compare": other, "cells": seeds,
        "discovery_base": a.tolist(), "discovery_compare": b.tolist(),
        "decision_s_base": ta.tolist(), "decision_s_compare": tb.tolist(),
        "mean_base": float(a.mean()), "mean_compare": float(b.mean()),
        "difference": float(diff.mean()), "standard_error": se,
        "ahead": int((diff > 0).sum()), "behind": int((diff < 0).sum()), "level": int((diff == 0).sum()),
    }


def table(r: dict) -> str:
    rows = [f"seed policy  discovery {r['base']}  {r['compare']}   decision s (median per cell)"]
    for i, s in enumerate(r["cells"]):
        rows.append(f"{s}  {r['discovery_base'][i]:>8.3f}  {r['discovery_compare'][i]:>8.3f}   "
                    f"{r['decision_s_base'][i]:.3f} {r['decision_s_compare'][i]:.3f}")
    rows.append(f"mean          {r['mean_base']:>8.3f}  {r['mean_compare']:>8.3f}   "
                f"{np.mean(r['decision_s_base']):.3f} {np.mean(r['decision_s_compare']):.3f}")
    rows.append(f"paired difference {r['difference']:+.3f} +- {r['standard_error']:.3f} (standard error) on "
                f"{len(r['cells'])} cells: ahead {r['ahead']}, behind {r['behind']}, level {r['level']}")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", type=Path, help="aexp bench --out folders")
    p.add_argument("--base", required=True, help="config name of the reference")
    p.add_argument("--compare", required=True, nargs="+", help="config names to set against it")
    p.add_argument("--policy", default=None, help="only this policy's cells (default: all)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    cells = load(args.folders, args.policy)
    results = [compare(cells, args.base, other) for other in args.compare]
    print("\n\n".join(table(r) for r in results))
    if args.json:
        Path(args.json).write_text(json.dumps(results if len(results) > 1 else results[0], indent=2))


if __name__ == "__main__":
    main()
