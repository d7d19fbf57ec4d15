"""The diffraction targets of the config (``target: {name: com_magnitude}``) against closed forms."""

import math

import numpy as np
import pytest

from aexp.config import TargetConfig
from aexp.targets import TargetError, calibration_from_axes, make_target, target_names
from aexp.types import SpectrumAxis

N, PX = 48, 0.25
KY = SpectrumAxis("ky", "mrad", -23.5 * PX, 23.5 * PX, N)  # beam between pixels 23 and 24
KX = SpectrumAxis("kx", "mrad", -20.0 * PX, 27.0 * PX, N)  # beam on pixel 20
AXES = (KY.values(), KX.values())


def disks(centres_mrad, amplitudes, radius_mrad=1.0, edge_mrad=0.08):
    """A ky x kx pattern of smooth discs at (kx, ky) centres in mrad, on the detector of AXES."""
    ky, kx = np.meshgrid(*AXES, indexing="ij")
    out = np.zeros((N, N))
    for (cx, cy), a in zip(centres_mrad, amplitudes):
        out += a / (1.0 + np.exp((np.hypot(kx - cx, ky - cy) - radius_mrad) / edge_mrad))
    return out


def test_registered_and_calibrated_from_the_axes():
    assert {"com_magnitude", "com_direction", "annular_intensity", "disk_spacing_strain",
            "bragg_ratio"} <= set(target_names())
    cal = calibration_from_axes(AXES)
    assert cal.pixel_mrad == pytest.approx(PX) and cal.centre_px == pytest.approx((23.5, 20.0))
    with pytest.raises(TargetError, match="square"):
        calibration_from_axes((AXES[0], 2 * AXES[1]))


def test_com_of_a_point_is_its_angle():
    p = np.zeros((N, N))
    p[30, 12] = 5.0  # ky = (30 - 23.5) px, kx = (12 - 20) px
    kx, ky = -8 * PX, 6.5 * PX
    assert make_target("com_magnitude")(p, AXES) == pytest.approx(math.hypot(kx, ky))
    assert make_target("com_direction")(p, AXES) == pytest.approx(math.atan2(ky, kx))
    batch = make_target("com_magnitude")(np.stack([p, np.zeros((N, N))]), AXES)
    np.testing.assert_allclose(batch, [math.hypot(kx, ky), 0.0])


def test_annular_counts_a_uniform_pattern_by_area():
    p = np.ones((N, N))
    ky, kx = np.meshgrid(*AXES, indexing="ij")
    k = np.hypot(kx, ky)
    expected = ((k >= 1.0) & (k < 3.0)).sum()
    assert make_target("annular_intensity", inner_mrad=1.0, outer_mrad=3.0)(p, AXES) == expected
    assert expected == pytest.approx(math.pi * (9 - 1) / PX**2, rel=0.05)  # the annulus' area in pixels


@pytest.mark.parametrize("eps", [0.0, 0.02, -0.03])
def test_strain_from_disks_spaced_by_g0_over_1_plus_eps(eps):
    g0 = 3.0
    g = g0 / (1 + eps)
    p = disks([(0.3, -0.2), (0.3 + g, -0.2), (0.3 - g, -0.2)], [4, 1, 1])  # a shifted beam cancels
    t = make_target("disk_spacing_strain", direction_rad=0.0, reference_mrad=g0, window_mrad=1.5)
    assert t(p, AXES) == pytest.approx(eps, abs=2e-3)


def test_bragg_ratio_of_a_friedel_pair_is_their_weight_ratio():
    p = disks([(0, 0), (3, 0), (-3, 0)], [4, 1.5, 0.5])
    t = TargetConfig(name="bragg_ratio", g1_mrad=[3.0, 0.0], g2_mrad=[-3.0, 0.0], radius_mrad=1.2).build()
    assert t(p, AXES) == pytest.approx(3.0, rel=1e-3)


def test_a_pattern_target_refuses_spectra_and_a_spectrum_target_refuses_patterns():
    with pytest.raises(TargetError, match=r"scores measurements of 2 axes; the instrument measures energy"):
        make_target("com_magnitude").check_axis(SpectrumAxis("energy", "eV", 0, 1, 8))
    with pytest.raises(TargetError, match=r"scores spectra; the instrument measures ky \(48\) x kx \(48\)"):
        make_target("band_intensity", window=(0.0, 1.0)).check_axis((KY, KX))
    make_target("com_magnitude").check_axis((KY, KX))
    with pytest.raises(TargetError, match="off the detector"):
        make_target("disk_spacing_strain", direction_rad=0.0, reference_mrad=9.0, window_mrad=1.5).check_axis((KY, KX))


def test_a_non_finite_pattern_scores_nan():
    p = np.ones((2, N, N))
    p[1, 3, 3] = np.nan
    out = make_target("com_magnitude")(p, AXES)
    assert np.isfinite(out[0]) and np.isnan(out[1])
