"""Real time in the twins: dwell, stage moves and settle on the clock, sample drift, drifted surveys."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simulators.common import RealClock, SampleDrift, SimClock, make_clock
from simulators.ferroelectric import FerroelectricSimulator
from simulators.fourdstem import FourDStemSimulator
from simulators.lattice import LatticeSimulator
from simulators.plasmonic import PlasmonicSimulator

TWINS = {
    "plasmonic": (PlasmonicSimulator, {"survey_pixels": 48, "n_particles": 1}),
    "lattice": (LatticeSimulator, {"survey_pixels": 48}),
    "ferroelectric": (FerroelectricSimulator, {"survey_pixels": 32, "n_defects": 2, "points_per_branch": 10}),
    "fourdstem": (FourDStemSimulator, {"survey_pixels": 24, "pixel_size_m": 2.5e-9}),
}


def _twin(name: str, **options: object):  # noqa: ANN202 - any of the four twins
    cls, small = TWINS[name]
    return cls(seed=3, **{**small, **options})


@pytest.mark.parametrize("name", sorted(TWINS))
class TestEveryTwin:
    def test_a_move_costs_settle_plus_distance_over_speed(self, name: str) -> None:
        px = _twin(name).options.pixel_size_m
        sim = _twin(name, stage_speed_m_s=10 * px, settle_s=0.25, measurement_time_s=0.5)
        sim.measure((2 * px, 3 * px))
        assert sim.clock.now_s == pytest.approx(0.5)  # the first move is free: the probe starts there
        sim.measure((5 * px, 7 * px))  # 5 px away at 10 px/s: 0.5 s, plus 0.25 s settle, plus 0.5 s dwell
        assert sim.clock.now_s == pytest.approx(0.5 + 0.25 + 0.5 + 0.5)
        sim.measure((5 * px, 7 * px))  # no move, no settle
        assert sim.clock.now_s == pytest.approx(2.25)

    def test_describe_reports_the_stage(self, name: str) -> None:
        extra = _twin(name, stage_speed_m_s=2e-7, settle_s=0.1).describe().extra
        assert extra["stage_speed_m_s"] == 2e-7 and extra["settle_s"] == 0.1
        assert "stage_speed_m_s" not in _twin(name).describe().extra  # no stage: moves take no time

    def test_the_probe_lands_where_the_sample_now_is(self, name: str) -> None:
        px = _twin(name).options.pixel_size_m
        sim = _twin(name, drift_nm_per_min=60.0 * px / 1e-9, measurement_time_s=1.0)  # 1 px/s
        sim.clock.advance(3.0)
        sim.measure((8 * px, 8 * px))
        requested, actual, t = sim.probe_log()[-1]
        assert t == pytest.approx(3.0)
        drift = sim.sample_drift_m(3.0)
        assert math.hypot(*drift) == pytest.approx(3 * px)
        np.testing.assert_allclose(actual, np.asarray(requested) - drift, atol=1e-15)

    def test_a_later_survey_shows_the_sample_moved(self, name: str) -> None:
        sim = _twin(name, drift_nm_per_min=60.0 * 2 * _twin(name).options.pixel_size_m / 1e-9, survey_time_s=1.0)
        first = sim.survey().image  # taken at t = 0, no drift yet
        assert sim.clock.now_s == pytest.approx(1.0)
        later = sim.survey().image  # taken at t = 1 s: 2 pixels of drift
        d = sim.sample_drift_m(1.0) / sim.options.pixel_size_m  # (x, y) in pixels
        r0, c0 = 10, 10
        # a pixel of the later image shows what the first showed ``d`` pixels back (cubic spline)
        from scipy import ndimage

        back = ndimage.map_coordinates(first[0], [[r0 - d[1]], [c0 - d[0]]], order=3, mode="nearest")[0]
        assert later[0, r0, c0] == pytest.approx(back, rel=1e-5, abs=1e-6)
        assert not np.array_equal(first, later)


def test_real_clock_sleeps_the_dwell() -> None:
    sim = PlasmonicSimulator(seed=1, survey_pixels=48, n_particles=1, clock="real", measurement_time_s=0.02)
    assert isinstance(sim.clock, RealClock)
    sim.measure((3e-9, 3e-9))
    assert sim.clock.now_s >= 0.02  # a lower bound only: the clock is real
    assert isinstance(make_clock("sim"), SimClock)
    with pytest.raises(ValueError, match="clock"):
        PlasmonicSimulator(seed=1, clock="wall")


class TestSampleDrift:
    def test_constant_velocity(self) -> None:
        d = SampleDrift(seed=1, speed_m_s=2e-9 / 60)
        assert math.hypot(*d.at(60.0)) == pytest.approx(2e-9)
        np.testing.assert_allclose(d.at(30.0), d.at(60.0) / 2)
        np.testing.assert_array_equal(d.at(0.0), [0.0, 0.0])

    def test_random_walk_is_a_function_of_time_and_seed(self) -> None:
        a, b = SampleDrift(seed=4, walk_m_per_sqrt_s=1e-9), SampleDrift(seed=4, walk_m_per_sqrt_s=1e-9)
        b.at(5000.0)  # asking far ahead first changes nothing
        for t in (0.5, 7.0, 1500.25):
            np.testing.assert_array_equal(a.at(t), b.at(t))
        np.testing.assert_allclose(a.at(7.5), (a.at(7.0) + a.at(8.0)) / 2)  # linear between grid points
        assert not np.allclose(a.at(100.0), SampleDrift(seed=5, walk_m_per_sqrt_s=1e-9).at(100.0), atol=0)

    def test_walk_spread_grows_as_sqrt_time(self) -> None:
        # per axis std sigma sqrt(t): over 400 seeds at t = 100 s, sigma = 1 -> std 10 (+-10 % at 400 draws)
        ends = np.array([SampleDrift(seed=s, walk_m_per_sqrt_s=1.0).at(100.0) for s in range(400)])
        assert ends.std() == pytest.approx(10.0, rel=0.1)

    def test_off_by_default(self) -> None:
        sim = PlasmonicSimulator(seed=1, survey_pixels=48, n_particles=1)
        np.testing.assert_array_equal(sim.sample_drift_m(100.0), [0.0, 0.0])
