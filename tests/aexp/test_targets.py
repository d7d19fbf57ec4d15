import numpy as np
import pytest

from aexp.targets import TargetError, make_target
from aexp.types import SpectrumAxis

AXIS = SpectrumAxis("energy_loss", "eV", 0.0, 5.0, 501)


def gaussian(e, centre, width=0.1, height=1.0):
    return height * np.exp(-0.5 * ((e - centre) / width) ** 2)


def test_band_intensity_integrates_a_peak_in_its_window():
    e = AXIS.values()
    spectra = np.stack([gaussian(e, 2.3), gaussian(e, 4.0)])
    got = make_target("band_intensity", window=[1.8, 2.8])(spectra, e)
    assert got[0] == pytest.approx(0.1 * np.sqrt(2 * np.pi), rel=1e-3)
    assert got[1] == pytest.approx(0.0, abs=1e-6)


def test_peak_position_is_sub_channel_accurate():
    e = AXIS.values()
    t = make_target("peak_position", window=(1.0, 3.0))
    assert t(gaussian(e, 2.1234), e) == pytest.approx(2.1234, abs=2e-3)


def test_peak_ratio():
    e = AXIS.values()
    s = gaussian(e, 2.0, height=3.0) + gaussian(e, 4.0, height=1.0)
    t = make_target("peak_ratio", window=(1.5, 2.5), reference=(3.5, 4.5))
    assert t(s, e) == pytest.approx(3.0, rel=1e-3)


def test_window_outside_axis_is_an_error_naming_the_window():
    t = make_target("band_intensity", window=(6.0, 7.0))
    with pytest.raises(TargetError, match=r"window \[6.0, 7.0\]"):
        t.check_axis(AXIS)


def test_unknown_target_and_bad_window():
    with pytest.raises(TargetError, match="unknown target"):
        make_target("nope")
    with pytest.raises(TargetError, match="low < high"):
        make_target("band_intensity", window=(3.0, 2.0))


# --- core-loss edge onset ------------------------------------------------------------------------

from scipy.special import erf  # noqa: E402


def _edge(e: np.ndarray, onset: float, width: float = 0.5, background: float = 3.0) -> np.ndarray:
    """Power-law background (E^-3) plus an erf step of height 1 centred on ``onset``."""
    return background * (e / 150.0) ** -3 + 0.5 * (1 + erf((e - onset) / (np.sqrt(2) * width)))


def test_edge_onset_finds_the_half_height_of_an_analytic_step():
    e = np.linspace(140.0, 190.0, 501)
    spectra = np.stack([_edge(e, 160.0), _edge(e, 163.3), _edge(e, 161.7, background=30.0)])
    got = make_target("edge_onset", window=(150.0, 180.0))(spectra, e)
    np.testing.assert_allclose(got, [160.0, 163.3, 161.7], atol=0.02)
    # fraction 0.16 of an erf step sits one width below its centre
    low = make_target("edge_onset", window=(150.0, 180.0), fraction=0.1587)(spectra[:1], e)
    np.testing.assert_allclose(low, [159.5], atol=0.02)


def test_edge_onset_ignores_a_single_noisy_point_and_is_nan_without_an_edge():
    e = np.linspace(140.0, 190.0, 501)
    s = _edge(e, 165.0)
    s[(e > 158.0) & (e < 158.15)] += 5.0  # one spiky channel between pre-edge fit and edge
    t = make_target("edge_onset", window=(150.0, 180.0))
    assert t(s, e) == pytest.approx(165.0, abs=0.02)
    flat = 3.0 * (e / 150.0) ** -3
    assert np.isnan(t(flat - 0.01 * (e > 170), e))  # the "edge" falls: no onset


def test_edge_onset_rejects_a_bad_fraction_or_window():
    e = np.linspace(140.0, 190.0, 501)
    with pytest.raises(TargetError, match="fraction"):
        make_target("edge_onset", window=(150.0, 180.0), fraction=1.5)(np.ones(501), e)
    with pytest.raises(TargetError, match="at least 8"):
        make_target("edge_onset", window=(150.0, 150.3))(np.ones(501), e)


# --- hysteresis loops over an unfolded bias axis ---------------------------------------------------


def _loop(vc_up: float, vc_down: float, width: float = 0.5, amp: float = 2.0, vmax: float = 10.0, p: int = 400):
    """A tanh loop on the unfolded axis: up -vmax..vmax on the first p + 1 points, then back."""
    u = np.linspace(-vmax, 3 * vmax, 2 * p + 1)
    bias = np.where(np.arange(2 * p + 1) <= p, u, 2 * vmax - u)
    vc = np.where(np.arange(2 * p + 1) <= p, vc_up, vc_down)
    return u, amp * np.tanh((bias - vc) / width)


def _lncosh(x):
    return np.logaddexp(x, -x) - np.log(2.0)


def test_loop_targets_on_an_analytic_loop():
    u, r = _loop(vc_up=3.0, vc_down=-1.0)  # coercive 2 V, imprint +1 V
    assert make_target("coercive_bias")(r, u) == pytest.approx(2.0, abs=1e-3)
    assert make_target("imprint")(r, u) == pytest.approx(1.0, abs=1e-3)
    # tanh reaches -0.8 (10 % of the way up) at x = -atanh(0.8) widths before the crossing
    assert make_target("nucleation_bias")(r, u) == pytest.approx(3.0 - 0.5 * np.arctanh(0.8), abs=1e-3)
    assert make_target("nucleation_bias", level=0.5)(r, u) == pytest.approx(3.0, abs=1e-3)
    # area: amp * width * [lncosh((V - vc_down)/w) - lncosh((V - vc_up)/w)] between -10 and 10
    w, a = 0.5, 2.0
    exact = a * w * ((_lncosh((10 + 1) / w) - _lncosh((10 - 3) / w)) - (_lncosh((-10 + 1) / w) - _lncosh((-10 - 3) / w)))
    assert make_target("loop_area")(r, u) == pytest.approx(exact, rel=1e-4)
    assert exact == pytest.approx(2 * a * 4.0, rel=1e-3)  # saturated: 2 A (V_up - V_down)


def test_loop_targets_batch_and_order_of_branches():
    u, wide = _loop(4.0, -4.0)
    _, narrow = _loop(1.0, -1.0)
    areas = make_target("loop_area")(np.stack([wide, narrow]), u)
    assert areas[0] > 3 * areas[1] > 0
    _, reversed_loop = _loop(-2.0, 2.0)  # a loop run the wrong way round encloses negative area
    assert make_target("loop_area")(reversed_loop, u) < 0


def test_loop_targets_need_a_sweep_that_turns_in_the_middle():
    with pytest.raises(TargetError, match="odd number"):
        make_target("loop_area")(np.zeros(100), np.linspace(-1, 3, 100))
    with pytest.raises(TargetError, match="level"):
        make_target("nucleation_bias", level=0)(np.zeros(101), np.linspace(-1, 3, 101))
