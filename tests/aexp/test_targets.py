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
