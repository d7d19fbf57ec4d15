"""``aexp bench --realtime``: the real clock, the counterparts in the same run, the pace in each record."""

from __future__ import annotations

import pytest
import yaml

from aexp.bench.cells import CellStore
from aexp.bench.realtime import realtime_variants
from aexp.cli.main import main
from aexp.config import parse_config


def test_variants_put_the_twin_on_the_real_clock_beside_its_counterparts(tiny_config) -> None:
    cfg = parse_config(tiny_config(name="rt", policy={"kind": "dkl", "n_initial": 3, "pending": True},
                                   drift={"resurvey_every": 3}))
    names = [(v.name, v.policy.pending, v.drift is not None, v.instrument.options["clock"])
             for v in realtime_variants(cfg)]
    assert names == [("rt", True, True, "real"), ("rt-sequential", False, True, "real"),
                     ("rt-no-reregistration", True, False, "real")]
    assert [v.name for v in realtime_variants(parse_config(tiny_config(name="p")))] == ["p", "p-sequential"]
    plain = parse_config(tiny_config(name="p", policy={"kind": "dkl", "n_initial": 3, "pending": False}))
    assert [v.name for v in realtime_variants(plain)] == ["p"]


def test_a_config_with_a_travel_cost_runs_beside_the_same_without_it(tiny_config) -> None:
    travel = {"units": "spread", "weight": 1.0}
    cfg = parse_config(tiny_config(name="t", policy={"kind": "dkl", "n_initial": 3, "pending": False,
                                                     "travel": travel}))
    on, off = realtime_variants(cfg)
    assert (on.name, off.name) == ("t", "t-no-travel-cost")
    assert on.policy.travel.units == "spread" and off.policy.travel is None
    assert off.to_dict()["policy"] == {**on.to_dict()["policy"], "travel": None}


def test_realtime_bench_records_the_pace_and_position_errors(tiny_config, tmp_path, capsys) -> None:
    cfg = tiny_config(name="rt", sample={"measurement_time_s": 0.01, "drift_nm_per_min": 30.0},
                      policy={"kind": "dkl", "n_initial": 3, "pending": True}, stopping={"max_steps": 3},
                      drift={"resurvey_every": 3})
    path = tmp_path / "rt.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "c"
    assert main(["bench", str(path), "--seeds", "0", "--policies", "gp-xy", "--out", str(out), "--workers", "1",
                 "--quiet", "--realtime"]) == 0
    records = {r.config_name: r for r in CellStore(out).read()}
    assert set(records) == {"rt", "rt-sequential", "rt-no-reregistration"}
    for r in records.values():
        assert r.status == "ok", r.error
        assert 0.0 < r.instrument_idle_fraction < 1.0 and r.campaign_wall_s >= 6 * 0.01
        assert r.travel_m > 0 and r.position_error_px is not None
        # one error and one twin time per measurement, the mean and max of the recorded curve
        assert len(r.position_error_curve_px) == len(r.probe_times_s) == r.budget
        assert r.position_error_px == pytest.approx(sum(r.position_error_curve_px) / r.budget)
        assert r.position_error_max_px == max(r.position_error_curve_px)
        assert r.probe_times_s == sorted(r.probe_times_s) and r.probe_times_s[0] > 0
    assert records["rt"].registrations == 1 and records["rt-no-reregistration"].registrations is None
    assert records["rt"].registration_steps == [3] and records["rt-no-reregistration"].registration_steps == []
    table = capsys.readouterr().out
    assert "rt-sequential" in table and "idle" in table and "pos err px" in table


@pytest.mark.parametrize("flag", ["--realtime"])
def test_the_flag_is_documented_in_help(flag: str, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert flag in capsys.readouterr().out
