"""Two configs of one bench campaign compared seed by seed (benchmarks/paired.py)."""

from __future__ import annotations

import json

import pytest


def _cell(name, seed, discovery, decision_s=0.1, policy="dkl-rvae", status="ok"):
    return {"config_name": name, "seed": seed, "policy": policy, "status": status,
            "discovery": discovery, "decision_s": decision_s}


def _campaign(folder, cells):
    folder.mkdir()
    (folder / "cells.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cells))
    return folder


def test_pairs_by_seed_and_policy_and_reports_the_paired_difference(tmp_path, benchmark_script):
    paired = benchmark_script("paired")
    folder = _campaign(tmp_path / "c", [
        _cell("a", 0, 0.5), _cell("b", 0, 0.7, 0.05),
        _cell("a", 1, 0.4), _cell("b", 1, 0.4, 0.05),
        _cell("a", 2, 0.6), _cell("b", 2, 0.5, 0.05),
        _cell("a", 3, 0.9),                                      # b never finished seed 3: left out
        _cell("a", 0, 0.1, policy="gp-xy"),                      # another policy: not b's pair
        _cell("b", 4, 0.2, status="failed"),
    ])
    r = paired.compare(paired.load([folder], policy="dkl-rvae"), "a", "b")
    assert r["cells"] == ["0 dkl-rvae", "1 dkl-rvae", "2 dkl-rvae"]
    assert r["difference"] == pytest.approx((0.2 + 0.0 - 0.1) / 3)
    assert r["standard_error"] == pytest.approx(0.1527525 / 3**0.5, rel=1e-6)
    assert (r["ahead"], r["behind"], r["level"]) == (1, 1, 1)
    assert r["decision_s_compare"] == [0.05, 0.05, 0.05]
    assert "paired difference +0.033" in paired.table(r)


def test_the_last_record_of_a_cell_wins_across_folders(tmp_path, benchmark_script):
    paired = benchmark_script("paired")
    first = _campaign(tmp_path / "first", [_cell("a", 0, 0.5), _cell("b", 0, 0.1)])
    again = _campaign(tmp_path / "again", [_cell("b", 0, 0.6)])
    r = paired.compare(paired.load([first, again]), "a", "b")
    assert r["discovery_compare"] == [0.6]


def test_configs_without_a_common_seed_are_an_error_naming_both(tmp_path, benchmark_script):
    paired = benchmark_script("paired")
    folder = _campaign(tmp_path / "c", [_cell("a", 0, 0.5), _cell("b", 1, 0.5)])
    with pytest.raises(SystemExit, match="'a' and 'b'"):
        paired.compare(paired.load([folder]), "a", "b")
