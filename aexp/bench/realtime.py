"""``aexp bench ... --realtime``: the loop at the instrument's pace, beside its counterparts, in one run.

Each config runs with its twin on the real clock (``instrument.options.clock: real``), and beside it,
as further configs of the same campaign (so measured in the same run, on the same machine load):

- ``<name>-sequential``: the same with ``policy.pending: false`` (when the config has pending on);
- ``<name>-no-reregistration``: the same without ``drift`` (when the config re-registers);
- ``<name>-no-travel-cost``: the same without ``policy.travel`` (when the config has one): the
  travel and discovery the penalty trades, paired by seed.

Every cell records ``instrument_idle_fraction``, ``travel_m``, ``campaign_wall_s`` and, on a twin,
``position_error_px`` (:class:`aexp.bench.cells.CellResult`); :func:`realtime_table` sets them side
by side with discovery per measurement and per wall-clock minute.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..config import ExperimentConfig, parse_config

__all__ = ["realtime_variants", "realtime_table"]


def realtime_variants(cfg: ExperimentConfig) -> list[ExperimentConfig]:
    """``cfg`` on the real clock, then its sequential, no-re-registration and no-travel-cost counterparts."""
    data = cfg.to_dict()
    data["instrument"]["options"] = {**data["instrument"]["options"], "clock": "real"}
    out = [parse_config(data, source=f"{cfg.name} (realtime)")]
    if cfg.policy.pending:
        seq = {**data, "name": f"{cfg.name}-sequential", "policy": {**data["policy"], "pending": False}}
        out.append(parse_config(seq, source=f"{cfg.name} (sequential)"))
    if cfg.drift is not None:
        off = {**data, "name": f"{cfg.name}-no-reregistration", "drift": None}
        out.append(parse_config(off, source=f"{cfg.name} (no re-registration)"))
    if cfg.policy.travel is not None:
        free = {**data, "name": f"{cfg.name}-no-travel-cost", "policy": {**data["policy"], "travel": None}}
        out.append(parse_config(free, source=f"{cfg.name} (no travel cost)"))
    return out


def _mean(values: list[Any]) -> float:
    v = [float(x) for x in values if x is not None]
    return float(np.mean(v)) if v else float("nan")


def realtime_table(records: list[dict[str, Any]]) -> str:
    """Per (config, policy), the mean over ok cells of discovery, discovery per wall minute, idle
    fraction, campaign wall seconds, travel (micrometres) and position error (survey pixels)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        if r.get("status") == "ok":
            groups.setdefault((r["config_name"], r["policy"]), []).append(r)
    lines = [f"{'config':<34} {'policy':<8} {'seeds':>5} {'discovery':>9} {'per min':>8} {'idle':>6} "
             f"{'wall s':>7} {'travel um':>9} {'pos err px':>10}"]
    for (name, policy), rs in groups.items():
        per_min = [r["discovery"] / (r["campaign_wall_s"] / 60.0) for r in rs if r.get("campaign_wall_s")]
        lines.append(
            f"{name:<34} {policy:<8} {len(rs):>5} {_mean([r['discovery'] for r in rs]):>9.3f} "
            f"{_mean(per_min):>8.3f} {_mean([r.get('instrument_idle_fraction') for r in rs]):>6.1%} "
            f"{_mean([r.get('campaign_wall_s') for r in rs]):>7.1f} "
            f"{_mean([r.get('travel_m') for r in rs]) * 1e6:>9.3f} "
            f"{_mean([r.get('position_error_px') for r in rs]):>10.2f}")
    return "\n".join(lines)
