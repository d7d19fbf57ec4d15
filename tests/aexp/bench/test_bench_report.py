import json
import re

import numpy as np
import pytest

from aexp.bench.cells import CellResult, CellStore
from aexp.bench.report import bootstrap_ci, paired_differences, summarise, write_bench_report
from aexp.session.store import SessionError

DIGEST = "d" * 64
# discovery per seed: a is ahead of b on seeds 0 and 1, level on 2; random finds nothing but on seed 3
TABLE = {"a": [0.5, 1.0, 0.25, 0.75], "b": [0.25, 0.5, 0.25, 0.75], "random": [0.0, 0.0, 0.0, 0.25]}


def _record(policy, seed, discovery, status="ok"):
    curve = [0.0, discovery / 2, discovery]
    return {"config": DIGEST, "config_name": "synthetic", "seed": seed, "policy": policy, "status": status,
            "top_fraction": 0.01, "discovery": discovery if status == "ok" else None, "hits": None,
            "n_top": 4, "n_candidates": 400, "budget": 3, "discovery_curve": curve if status == "ok" else [],
            "decision_times_s": [0.1 * (seed + 1), 0.2 * (seed + 1)] if status == "ok" else [],
            "error": None if status == "ok" else "RuntimeError: boom"}


@pytest.fixture
def campaign(tmp_path):
    store = CellStore(tmp_path / "c").open()
    for seed in (3, 2, 1, 0):  # finished out of order
        for policy, values in TABLE.items():
            store.append(_record(policy, seed, values[seed]))
    store.append(_record("b", 4, 0.0, status="failed"))
    return tmp_path / "c"


def test_bootstrap_interval_brackets_the_mean_and_collapses_on_a_constant():
    assert bootstrap_ci(np.full(5, 0.3)) == pytest.approx((0.3, 0.3))
    x = np.array([0.0, 1.0])
    lo, hi = bootstrap_ci(x)
    assert lo == 0.0 and hi == 1.0  # both one-value resamples occur among 10,000
    lo, hi = bootstrap_ci(np.arange(20.0))
    assert lo < 9.5 < hi and hi - lo < 8  # ~ 2 * 1.96 * 5.9 / sqrt(20) = 5.2
    assert bootstrap_ci(np.arange(20.0)) == (lo, hi)  # reproducible


def test_summary_and_paired_differences_have_the_closed_form_numbers(campaign):
    records = list(CellStore(campaign).latest().values())
    rows = {s.policy: s for s in summarise(records)}
    assert rows["a"].mean == pytest.approx(0.625) and rows["a"].seeds == 4 and rows["a"].failed == 0
    assert rows["b"].mean == pytest.approx(0.4375) and rows["b"].failed == 1
    assert rows["a"].ratio == pytest.approx(0.625 / 0.0625)
    assert rows["a"].ci[0] <= 0.625 <= rows["a"].ci[1]
    # decision times of a: 0.1, 0.2, 0.2, 0.4, 0.3, 0.6, 0.4, 0.8 -> median 0.35
    assert rows["a"].decision_median_s == pytest.approx(0.35)
    pairs = {(d.a, d.b): d for d in paired_differences(records)}
    ab = pairs[("a", "b")]
    assert (ab.seeds, ab.ahead, ab.behind, ab.level) == (4, 2, 0, 2)
    assert ab.mean == pytest.approx(0.1875) and ab.verdict == "level"  # 0 is a possible resample mean
    ar = pairs[("a", "random")]
    assert (ar.ahead, ar.behind, ar.level) == (4, 0, 0) and ar.verdict == "ahead"
    assert pairs[("b", "random")].verdict == "ahead"


def test_bench_report_writes_the_table_and_figures(campaign):
    paths = write_bench_report(campaign)
    assert [p.name for p in paths] == ["report.md", "discovery.png", "paired.png", "curves.png",
                                       "decision_times.png"]
    for png in paths[1:]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    md = paths[0].read_text()
    rows = dict(re.findall(r"^\| (a|b|random) \| (\d.*)$", md, flags=re.M))
    assert rows["a"].startswith("4 | 0 | 0.625 |") and "| 10.00 |" in rows["a"]
    assert rows["b"].startswith("4 | 1 | 0.438 |")  # seed 4 failed
    assert "| a | b | 4 | 0.188 |" in md and "| 2 | 0 | 2 | level |" in md
    assert "| a | random | 4 | 0.562 |" in md
    assert "synthetic seed 4 b: RuntimeError: boom" in md


def test_bench_report_names_what_is_missing(tmp_path):
    with pytest.raises(SessionError, match="no cells.jsonl"):
        write_bench_report(tmp_path)
    (tmp_path / "cells.jsonl").write_text("")
    with pytest.raises(SessionError, match="no finished cell"):
        write_bench_report(tmp_path)


def test_records_round_trip_through_json():
    rec = _record("a", 0, 0.5)
    assert CellResult.from_dict(json.loads(json.dumps(rec))).discovery == 0.5
