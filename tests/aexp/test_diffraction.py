"""Diffraction targets against closed forms on synthetic patterns."""

import math

import numpy as np
import pytest

from aexp.diffraction import (
    DetectorCalibration,
    DiffractionError,
    annular_intensity,
    bragg_ratio,
    centre_of_mass,
    com_direction,
    com_magnitude,
    disk_centre,
    disk_spacing_strain,
)

N = 64
CAL = DetectorCalibration(pixel_mrad=0.25, centre_px=(31.5, 31.5))


def disks(centres_mrad, amplitudes, radius_mrad=1.0, edge_mrad=0.08, cal=CAL, shape=(N, N)):
    """A ky x kx pattern of smooth discs (logistic edge) at (kx, ky) centres in mrad."""
    kx, ky = cal.k_grid(shape)
    out = np.zeros(shape)
    for (cx, cy), a in zip(centres_mrad, amplitudes):
        r = np.hypot(kx - cx, ky - cy)
        out += a / (1.0 + np.exp((r - radius_mrad) / edge_mrad))
    return out


def test_calibration_grid_and_errors():
    kx, ky = CAL.k_grid((N, N))
    assert kx[0, 0] == pytest.approx(-31.5 * 0.25) and kx[0, -1] == pytest.approx(31.5 * 0.25)
    assert ky[0, 5] == pytest.approx(-31.5 * 0.25) and ky[-1, 5] == pytest.approx(31.5 * 0.25)  # rows -> ky
    with pytest.raises(DiffractionError, match="pixel_mrad"):
        DetectorCalibration(0.0, (1.0, 1.0))
    with pytest.raises(DiffractionError, match="centre_px"):
        DetectorCalibration(1.0, (math.nan, 1.0))


def test_centre_of_mass_of_a_point_and_of_weighted_points():
    p = np.zeros((N, N))
    p[40, 20] = 3.0  # row 40 -> ky = 8.5 px; col 20 -> kx = -11.5 px
    np.testing.assert_allclose(centre_of_mass(p, CAL), [-11.5 * 0.25, 8.5 * 0.25])
    p[31, 31] = 1.0  # weighted mean of the two points
    expected = (3 * np.array([-11.5, 8.5]) + np.array([-0.5, -0.5])) / 4 * 0.25
    np.testing.assert_allclose(centre_of_mass(p, CAL), expected)
    assert com_magnitude(p, CAL) == pytest.approx(np.hypot(*expected))
    assert com_direction(p, CAL) == pytest.approx(math.atan2(expected[1], expected[0]))
    assert com_magnitude(np.zeros((N, N)), CAL) == 0.0  # no counts: no deflection


@pytest.mark.parametrize("angle", [0.0, 0.7, 2.5, -2.0])
def test_com_of_a_shifted_centrosymmetric_pattern_is_the_shift(angle):
    shift = 0.8 * np.array([math.cos(angle), math.sin(angle)])
    g = np.array([[0, 0], [3, 1], [-3, -1], [1, -3], [-1, 3]], float)
    p = disks(g + shift, [5, 1, 1, 0.5, 0.5])
    assert com_magnitude(p, CAL) == pytest.approx(0.8, abs=1e-3)
    assert com_direction(p, CAL) == pytest.approx(angle, abs=2e-3)


def test_batches_give_one_value_per_pattern():
    a, b = disks([[0.5, 0]], [1]), disks([[0, -0.5]], [1])
    batch = np.stack([a, b, a])
    out = com_direction(batch, CAL)
    assert out.shape == (3,)
    np.testing.assert_allclose(out, [0.0, -math.pi / 2, 0.0], atol=2e-3)
    assert isinstance(com_direction(a, CAL), float)


def test_annular_intensity_of_a_flat_pattern_is_the_annulus_area():
    # a flat pattern of 1 count per pixel: counts = pixels in the annulus ~ pi (o^2 - i^2) / px^2
    inner, outer = 2.0, 6.0
    got = annular_intensity(np.ones((N, N)), CAL, inner, outer)
    assert got == pytest.approx(math.pi * (outer**2 - inner**2) / 0.25**2, rel=0.01)
    p = np.zeros((N, N))
    p[31, 31 + 12] = 7.0  # 11.5 px * 0.25 = 2.875 mrad from the centre
    p[31, 31 + 30] = 5.0  # 7.375 mrad: outside
    assert annular_intensity(p, CAL, inner, outer) == 7.0
    assert annular_intensity(p, CAL, 0.0, 2.8) == 0.0  # bright field misses both


def test_annular_intensity_rejects_bad_radii():
    with pytest.raises(DiffractionError, match="inner_mrad < outer_mrad"):
        annular_intensity(np.ones((N, N)), CAL, 5.0, 3.0)
    with pytest.raises(DiffractionError, match="no detector pixel"):
        annular_intensity(np.ones((N, N)), CAL, 20.0, 30.0)
    with pytest.raises(DiffractionError, match="ky x kx"):
        annular_intensity(np.ones(N), CAL, 1.0, 3.0)


def test_disk_centre_finds_a_subpixel_disk():
    centre = np.array([2.13, -1.37])
    p = disks([centre], [10.0]) + 0.5  # with a flat background
    np.testing.assert_allclose(disk_centre(p, CAL, centre + [0.4, -0.3], 2.0), centre, atol=5e-3)


@pytest.mark.parametrize("eps, direction, shift", [(0.0, 0.0, (0, 0)), (0.03, 0.0, (0.6, -0.4)),
                                                   (-0.02, 0.5, (-0.3, 0.2)), (0.05, 2.0, (0.0, 0.7))])
def test_disk_spacing_strain_is_g0_over_g_minus_1(eps, direction, shift):
    g0 = 4.0
    u = np.array([math.cos(direction), math.sin(direction)])
    v = np.array([-u[1], u[0]])
    g = g0 / (1 + eps)  # a lattice stretched by eps brings its disks in by 1 / (1 + eps)
    centres = np.array([[0, 0], g * u, -g * u, 5.0 * v, -5.0 * v]) + shift  # plus a second row
    p = disks(centres, [10, 3, 3, 2, 2])
    assert disk_spacing_strain(p, CAL, direction, g0, window_mrad=1.6) == pytest.approx(eps, abs=2e-3)


def test_disk_spacing_strain_rejects_overlapping_windows():
    with pytest.raises(DiffractionError, match="smaller than reference_mrad"):
        disk_spacing_strain(np.ones((N, N)), CAL, 0.0, reference_mrad=2.0, window_mrad=2.0)


def test_bragg_ratio_is_the_ratio_of_disk_amplitudes_and_ignores_a_shift():
    g = np.array([3.0, 1.5])
    for shift in ([0.0, 0.0], [0.5, -0.75]):  # whole pixels: identical disk sampling
        p = disks(np.array([[0, 0], g, -g]) + shift, [10.0, 3.0, 1.2])
        assert bragg_ratio(p, CAL, tuple(g), tuple(-g), radius_mrad=1.4) == pytest.approx(2.5, rel=1e-6)
    with pytest.raises(DiffractionError, match="off the detector"):
        bragg_ratio(p, CAL, (30.0, 0.0), tuple(-g), radius_mrad=1.0)
