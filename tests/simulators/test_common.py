"""Tests of simulators/common.py: keyed noise, quantised positions, the clock, options, blur."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from pydantic import Field, ValidationError

from simulators.common import (
    SimClock,
    SimOptions,
    gaussian_blur,
    position_key,
    rng_for,
    stable_hash,
)


def _draw(rng: np.random.Generator) -> np.ndarray:
    return rng.random(8)


class TestRngFor:
    def test_same_key_same_stream(self) -> None:
        a, b = _draw(rng_for(3, "measure", 10, -4, 2)), _draw(rng_for(3, "measure", 10, -4, 2))
        np.testing.assert_array_equal(a, b)

    def test_independent_of_what_was_drawn_before(self) -> None:
        first = _draw(rng_for(3, "measure", 1))
        _draw(rng_for(3, "measure", 2))
        np.testing.assert_array_equal(first, _draw(rng_for(3, "measure", 1)))

    @pytest.mark.parametrize(
        "other",
        [
            (4, "measure", 1, 2),  # seed
            (3, "survey", 1, 2),  # kind
            (3, "measure", 2, 1),  # order of keys
            (3, "measure", -1, 2),  # sign
            (3, "measure", 1, 2, 0),  # one more (zero) key
            (3, "measure", 1),  # one fewer key
        ],
    )
    def test_any_change_of_key_changes_stream(self, other: tuple) -> None:
        base = _draw(rng_for(3, "measure", 1, 2))
        assert not np.allclose(base, _draw(rng_for(*other)))

    def test_keys_do_not_alias_across_word_boundaries(self) -> None:
        # A naive word-list encoding makes (2**32,) and (0, 1) the same entropy.
        assert not np.allclose(_draw(rng_for(0, "k", 2**32)), _draw(rng_for(0, "k", 0, 1)))
        assert not np.allclose(_draw(rng_for(0, "k")), _draw(rng_for(0, "k", 0)))

    def test_negative_seed_rejected(self) -> None:
        with pytest.raises(ValueError, match="seed"):
            rng_for(-1, "measure")

    def test_huge_key_rejected(self) -> None:
        with pytest.raises(ValueError, match="64 bits"):
            rng_for(0, "measure", 2**70)

    def test_stable_hash_is_the_same_in_another_process(self) -> None:
        code = "from simulators.common import stable_hash; print(stable_hash('measure'))"
        env = {**os.environ, "PYTHONHASHSEED": "12345"}
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        assert int(out.stdout) == stable_hash("measure")
        assert stable_hash("measure") != stable_hash("survey")


class TestPositionKey:
    def test_picometres(self) -> None:
        assert position_key((1e-9, 2.5e-9)) == (1000, 2500)
        assert position_key((-3e-12, 0.0)) == (-3, 0)

    def test_rounding_noise_falls_on_the_same_key(self) -> None:
        x = 17 * 1e-9
        assert position_key((x, 0.1 + 0.2)) == position_key((x * (1 + 1e-12), 0.3))

    def test_other_unit(self) -> None:
        assert position_key((2.4e-9,), unit_m=1e-9) == (2,)

    def test_non_finite_rejected(self) -> None:
        with pytest.raises(ValueError, match="finite"):
            position_key((float("nan"), 0.0))


class TestSimClock:
    def test_advances_without_sleeping(self) -> None:
        clock = SimClock()
        assert clock.advance(0.25) == 0.25
        assert clock.advance(1000.0) == pytest.approx(1000.25)
        assert clock.now_s == pytest.approx(1000.25)

    @pytest.mark.parametrize("dt", [-0.1, float("nan"), float("inf")])
    def test_bad_step_rejected_and_time_kept(self, dt: float) -> None:
        clock = SimClock(now_s=2.0)
        with pytest.raises(ValueError, match="forward"):
            clock.advance(dt)
        assert clock.now_s == 2.0


class _Opts(SimOptions):
    dose: float = Field(1.0, gt=0)
    n_channels: int = Field(16, ge=2)


class TestSimOptions:
    def test_defaults_and_values(self) -> None:
        o = _Opts.parse({"dose": 3}, "twin")
        assert (o.dose, o.n_channels) == (3.0, 16)

    def test_unknown_option_named_with_the_known_ones(self) -> None:
        with pytest.raises(ValueError) as info:
            _Opts.parse({"colour": "red"}, "twin")
        msg = str(info.value)
        assert msg.startswith("twin:")
        assert "colour: unknown option" in msg
        assert "dose" in msg and "n_channels" in msg

    def test_every_bad_option_is_named_with_its_reason(self) -> None:
        with pytest.raises(ValueError) as info:
            _Opts.parse({"dose": -1, "n_channels": 1}, "twin")
        msg = str(info.value)
        assert "dose: Input should be greater than 0 (got -1)" in msg
        assert "n_channels: Input should be greater than or equal to 2 (got 1)" in msg

    def test_options_are_immutable(self) -> None:
        o = _Opts.parse({}, "twin")
        with pytest.raises(ValidationError):
            o.dose = 2.0  # type: ignore[misc]


class TestGaussianBlur:
    def test_constant_image_unchanged_up_to_the_borders(self) -> None:
        img = np.full((9, 13), 2.5)
        np.testing.assert_allclose(gaussian_blur(img, 1.7), img)

    def test_impulse_spreads_with_the_right_width(self) -> None:
        img = np.zeros((41, 41))
        img[20, 20] = 1.0
        out = gaussian_blur(img, 2.0)
        assert out.sum() == pytest.approx(1.0)
        profile = out[20] / out[20].sum()
        taps = np.arange(41) - 20
        assert np.sqrt((profile * taps**2).sum()) == pytest.approx(2.0, rel=1e-3)
        np.testing.assert_allclose(out, out.T)  # isotropic

    def test_zero_sigma_copies(self) -> None:
        img = np.arange(12.0).reshape(3, 4)
        out = gaussian_blur(img, 0.0)
        np.testing.assert_array_equal(out, img)
        assert out is not img

    def test_kernel_wider_than_image(self) -> None:
        img = np.zeros((3, 3))
        img[1, 1] = 9.0
        out = gaussian_blur(img, 5.0)
        assert out.sum() == pytest.approx(9.0)
        assert np.ptp(out) < 0.5  # nearly flat: the blur is far wider than the image


# --- realism: probe placement and dose ledger ------------------------------------------------------

from simulators.common import DoseLedger, ProbePlacement  # noqa: E402


class TestProbePlacement:
    def test_off_by_default_lands_where_asked(self) -> None:
        assert ProbePlacement(seed=1).actual((1e-9, 2e-9), clock_s=5.0, repeat=3) == (1e-9, 2e-9)

    def test_drift_offset_then_rate_on_the_clock(self) -> None:
        p = ProbePlacement(seed=1, drift_offset_m=2e-9, drift_rate_m_per_s=1e-9)
        d0, d3 = p.drift_m(0.0), p.drift_m(3.0)
        assert np.linalg.norm(d0) == pytest.approx(2e-9)
        assert np.linalg.norm(d3 - d0) == pytest.approx(3e-9)
        np.testing.assert_allclose(ProbePlacement(seed=1, drift_offset_m=2e-9).drift_m(0.0), d0, rtol=1e-12)  # seeded
        assert np.linalg.norm(ProbePlacement(seed=2, drift_offset_m=2e-9).drift_m(0.0) - d0) > 1e-10

    def test_placement_error_is_keyed_on_position_and_repeat(self) -> None:
        p = ProbePlacement(seed=4, probe_error_m=1e-10)
        a0, a1 = p.actual((1e-9, 1e-9), 0.0, 0), p.actual((1e-9, 1e-9), 0.0, 1)
        assert a0 == p.actual((1e-9, 1e-9), 7.0, 0)  # not the clock, not the call count
        assert a0 != a1
        errors = np.array([p.actual((k * 1e-9, 0.0), 0.0, 0) for k in range(400)]) - [[k * 1e-9, 0.0] for k in range(400)]
        assert errors.std() == pytest.approx(1e-10, rel=0.15)


class TestDoseLedger:
    def test_exposure_is_a_sum_of_gaussian_footprints_in_any_order(self) -> None:
        a, b = DoseLedger(radius_m=1e-9), DoseLedger(radius_m=1e-9)
        for q in [(0.0, 0.0), (1e-9, 0.0), (0.0, 0.0)]:
            a.deposit(q)
        for q in [(0.0, 0.0), (0.0, 0.0), (1e-9, 0.0)]:
            b.deposit(q)
        sites = np.array([[0.0, 0.0], [1e-9, 0.0], [1e-6, 0.0]])
        np.testing.assert_allclose(a.exposure(sites), b.exposure(sites))
        np.testing.assert_allclose(a.exposure(sites), [2 + np.exp(-0.5), 1 + 2 * np.exp(-0.5), 0.0])
        assert len(a) == 3 and DoseLedger(1e-9).exposure(sites).tolist() == [0.0, 0.0, 0.0]

    def test_needs_a_positive_radius(self) -> None:
        with pytest.raises(ValueError, match="radius_m"):
            DoseLedger(radius_m=0.0)
