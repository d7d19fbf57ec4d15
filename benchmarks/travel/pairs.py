"""Travel and discovery with and without the travel cost, paired by seed, from an ``aexp bench`` folder.

The campaign runs a config without the travel cost (``--base``) and the same with it (``--travel``)
on the same seeds; each seed is the same sample and the same initial points, so the pair differs
only in the penalty. Prints one row per seed and the means, with the change of the means in percent.

    python benchmarks/travel/pairs.py runs/travel-plasmonic --base plasmonic-async-sim --travel plasmonic-travel-sim
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def paired(folder: Path, base: str, travel: str, policy: str | None = None) -> dict[int, dict[str, dict]]:
    """``seed -> {"base": cell, "travel": cell}`` for the seeds both configs finished (the latest record of each)."""
    cells: dict[tuple[str, int], dict] = {}
    for line in (folder / "cells.jsonl").read_text().splitlines():
        c = json.loads(line)
        if c.get("status") == "ok" and c["config_name"] in (base, travel) and policy in (None, c["policy"]):
            cells[(c["config_name"], int(c["seed"]))] = c
    seeds = sorted({s for _, s in cells} & {s for n, s in cells if n == travel} & {s for n, s in cells if n == base})
    return {s: {"base": cells[(base, s)], "travel": cells[(travel, s)]} for s in seeds}


def table(pairs: dict[int, dict[str, dict]]) -> str:
    rows = ["seed  travel um (off)  travel um (on)  discovery (off)  discovery (on)"]
    for seed, p in pairs.items():
        rows.append(f"{seed:>4} {p['base']['travel_m'] * 1e6:>16.3f} {p['travel']['travel_m'] * 1e6:>15.3f} "
                    f"{p['base']['discovery']:>16.3f} {p['travel']['discovery']:>15.3f}")
    n = len(pairs)
    if n:
        mean = {k: {side: sum(p[side][k] for p in pairs.values()) / n for side in ("base", "travel")}
                for k in ("travel_m", "discovery")}
        rows.append(f"mean {mean['travel_m']['base'] * 1e6:>16.3f} {mean['travel_m']['travel'] * 1e6:>15.3f} "
                    f"{mean['discovery']['base']:>16.3f} {mean['discovery']['travel']:>15.3f}")
        change = {k: (100 * (m["travel"] / m["base"] - 1) if m["base"] else float("nan")) for k, m in mean.items()}
        worse = sum(p["travel"]["discovery"] < p["base"]["discovery"] for p in pairs.values())
        rows.append(f"{n} seeds: travel {change['travel_m']:+.0f} %, discovery {change['discovery']:+.0f} % "
                    f"(lower with the travel cost on {worse} of {n} seeds)")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, help="the --out folder of aexp bench")
    p.add_argument("--base", required=True, help="config name without the travel cost")
    p.add_argument("--travel", required=True, help="config name with it")
    p.add_argument("--policy", default=None, help="only this bench policy (default: all cells)")
    args = p.parse_args()
    print(table(paired(args.folder, args.base, args.travel, args.policy)))


if __name__ == "__main__":
    main()
