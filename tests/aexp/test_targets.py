import numpy as np
import pytest

from aexp.targets import TARGETS, TargetError, make_target
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


# --- core-loss edge intensity over a power-law background ------------------------------------------


def _ramp_edge(e: np.ndarray, a: float, r: float, onset: float, rise: float, height: float) -> np.ndarray:
    """``a E^-r`` plus an edge that is 0 below ``onset`` and rises linearly to ``height`` over ``rise``."""
    return a * e**-r + height * np.clip((e - onset) / rise, 0.0, 1.0)


def test_edge_intensity_is_the_closed_form_area_above_an_exact_power_law():
    e = np.linspace(200.0, 400.0, 801)  # 0.25 eV channels: onset and onset + rise fall on channels
    params = [(5e6, 2.7, 284.0, 6.0, 40.0), (2e9, 3.4, 290.0, 2.5, 3.0), (1e4, 1.1, 300.0, 10.0, 0.5)]
    spectra = np.stack([_ramp_edge(e, *p) for p in params])
    t = make_target("edge_intensity", pre_edge=[240.0, 280.0], window=[280.0, 340.0])
    # the ramp is piecewise linear with kinks on channels, so the trapezoid rule is exact:
    # int_280^340 h clip((E - E0) / w, 0, 1) dE = h (340 - E0 - w / 2)
    exact = [h * (340.0 - onset - rise / 2) for _, _, onset, rise, h in params]
    np.testing.assert_allclose(t(spectra, e), exact, rtol=1e-9)
    # the same channels listed from high to low energy (a detector read out backwards)
    np.testing.assert_allclose(t(spectra[:, ::-1], e[::-1]), exact, rtol=1e-9)
    assert t(spectra[0], e) == pytest.approx(exact[0], rel=1e-9)


def test_edge_intensity_is_nan_for_non_positive_pre_edge_counts_and_checks_its_windows():
    e = np.linspace(200.0, 400.0, 801)
    good = _ramp_edge(e, 5e6, 2.7, 284.0, 6.0, 40.0)
    zero, negative, missing = good.copy(), good.copy(), good.copy()
    zero[(e > 250) & (e < 251)] = 0.0  # an empty channel: log-log least squares is undefined
    negative[e < 260] -= good[e < 260].max()  # over-subtracted dark reference
    missing[e == 270.0] = np.nan
    t = make_target("edge_intensity", pre_edge=(240.0, 280.0), window=(280.0, 340.0))
    got = t(np.stack([good, zero, negative, missing]), e)
    assert np.isfinite(got[0]) and np.isnan(got[1:]).all()
    with pytest.raises(TargetError, match="must end where the integration window"):
        make_target("edge_intensity", pre_edge=(240.0, 290.0), window=(280.0, 340.0))(good, e)
    with pytest.raises(TargetError, match="above 0"):
        make_target("edge_intensity", pre_edge=(-5.0, 5.0), window=(10.0, 20.0))(np.ones(81), np.linspace(-10, 30, 81))
    with pytest.raises(TargetError, match=r"pre_edge window \[100.0, 150.0\] holds 0 points"):
        make_target("edge_intensity", pre_edge=(100.0, 150.0), window=(280.0, 340.0)).check_axis(
            SpectrumAxis("energy_loss", "eV", 200.0, 400.0, 801))


def test_edge_intensity_from_the_config_needs_both_windows():
    from aexp.config import TargetConfig

    cfg = TargetConfig(name="edge_intensity", pre_edge=[240, 280], window=[285, 335])
    assert cfg.build().params == {"pre_edge": (240.0, 280.0), "window": (285.0, 335.0)}
    with pytest.raises(ValueError, match=r"needs \['pre_edge'\]"):
        TargetConfig(name="edge_intensity", window=[285, 335])
    with pytest.raises(ValueError, match="low < high"):
        TargetConfig(name="edge_intensity", pre_edge=[280, 240], window=[285, 335])


# --- an axis that runs backwards -------------------------------------------------------------------


def test_every_target_scores_a_descending_axis_as_its_ascending_twin():
    e = AXIS.values()
    s = np.stack([gaussian(e, 2.3) + gaussian(e, 4.0, height=0.5), gaussian(e, 2.1234)])
    for name, params in [("band_intensity", {"window": (1.8, 2.8)}), ("peak_position", {"window": (1.0, 3.0)}),
                         ("peak_ratio", {"window": (1.8, 2.8), "reference": (3.5, 4.5)})]:
        t = make_target(name, **params)
        forward = t(s, e)
        np.testing.assert_array_equal(t(s[:, ::-1], e[::-1]), forward)
    assert make_target("band_intensity", window=(1.8, 2.8))(s[:, ::-1], e[::-1])[0] > 0  # not flipped in sign
    edge = np.linspace(140.0, 190.0, 501)
    spectrum = _edge(edge, 163.3)
    onset = make_target("edge_onset", window=(150.0, 180.0))
    assert onset(spectrum[::-1], edge[::-1]) == onset(spectrum, edge)
    u, r = _loop(3.0, -1.0)
    for name in ("loop_area", "coercive_bias", "imprint", "nucleation_bias"):
        assert make_target(name)(r[::-1], u[::-1]) == make_target(name)(r, u)
    make_target("band_intensity", window=(1.8, 2.8)).check_axis(SpectrumAxis("energy_loss", "eV", 5.0, 0.0, 501))


def test_an_axis_that_is_not_monotonic_is_an_error():
    e = AXIS.values().copy()
    e[10], e[11] = e[11], e[10]
    with pytest.raises(TargetError, match="strictly up or strictly down"):
        make_target("band_intensity", window=(1.8, 2.8))(np.ones(501), e)
    with pytest.raises(TargetError, match="length 500"):
        make_target("band_intensity", window=(1.8, 2.8))(np.ones(500), AXIS.values())


# --- loops that failed, and loops with spikes -------------------------------------------------------

LOOP_TARGETS = ("loop_area", "coercive_bias", "imprint", "nucleation_bias")


def test_a_flat_or_inverted_loop_is_a_failed_measurement_not_zero():
    u, r = _loop(3.0, -1.0)
    noise = np.random.default_rng(0).normal(0.0, 0.05, size=(2, len(u)))
    flat = np.stack([np.zeros_like(u), 0.3 + noise[0], -r, -r + noise[1]])  # flat, noisy flat, inverted x2
    for name in LOOP_TARGETS:
        got = make_target(name)(np.vstack([flat, r]), u)
        assert np.isnan(got[:4]).all() and np.isfinite(got[4]), name
    # a weak but real loop (amplitude 10 sigma of its noise) is still measured
    _, weak = _loop(3.0, -1.0, amp=0.25)
    assert np.isfinite(make_target("loop_area")(weak + noise[0] / 2, u))


def test_loop_targets_ignore_fit_spikes_and_leave_a_clean_loop_bit_for_bit():
    u, r = _loop(3.0, -1.0, p=200)  # points every 0.1 V; the branches switch at +3 V and -1 V
    spiky = r.copy()
    spiky[67] += 40.0  # one failed SHO fit on the way up, in saturation (-3.3 V)
    spiky[309:311] = -25.0  # two in a row on the way back, where the branch switches (-0.9 V, -1 V)
    exact = {name: make_target(name)(r, u) for name in LOOP_TARGETS}
    assert exact["coercive_bias"] == pytest.approx(2.0, abs=1e-3)
    for name in LOOP_TARGETS:
        assert make_target(name)(spiky, u) == pytest.approx(exact[name], rel=1e-2, abs=1e-2), name
    saturated = r.copy()
    saturated[[5, 390]] = [1e3, -1e3]
    assert make_target("loop_area")(saturated, u) == pytest.approx(exact["loop_area"], rel=1e-12)
    gaps = r.copy()
    gaps[[30, 250]] = np.nan  # a fit that returned nothing is interpolated over, like a spike
    assert make_target("loop_area")(gaps, u) == pytest.approx(exact["loop_area"], rel=1e-6)
    assert np.isnan(make_target("loop_area")(np.where(np.arange(len(u)) % 2 == 0, np.nan, r), u))  # half gone
    noisy = r + np.random.default_rng(1).normal(0.0, 0.02, size=len(u))
    spiky_noisy = noisy.copy()
    spiky_noisy[[15, 70, 100]] += [30.0, -12.0, 8.0]
    area = make_target("loop_area")
    assert area(spiky_noisy, u) == pytest.approx(area(noisy, u), rel=1e-2)
    assert area(noisy, u) == pytest.approx(area(r, u), rel=2e-2)


def test_a_target_from_a_plugin_package_is_found_by_name(tmp_path, monkeypatch):
    import importlib.metadata

    from aexp.config import ConfigError, parse_config
    from aexp.targets import ENTRY_POINT_GROUP, target_names

    (tmp_path / "lab_targets.py").write_text(
        "import numpy as np\n"
        "def channel_sum(spectra, axis, scale=1.0):\n"
        "    return scale * np.asarray(spectra, dtype=float).sum(axis=-1)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    plugin = importlib.metadata.EntryPoint("channel_sum", "lab_targets:channel_sum", ENTRY_POINT_GROUP)
    shadow = importlib.metadata.EntryPoint("band_intensity", "lab_targets:channel_sum", ENTRY_POINT_GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None: [plugin, shadow] if group == ENTRY_POINT_GROUP else [])
    assert "channel_sum" in target_names()
    target = make_target("channel_sum", scale=2.0)
    assert target(np.ones((3, 4)), np.arange(4.0)).tolist() == [8.0, 8.0, 8.0]
    assert make_target("band_intensity", window=(0.0, 1.0)).fn is TARGETS["band_intensity"]  # built-ins win
    cfg = parse_config({"instrument": {"driver": "plasmonic"}, "target": {"name": "channel_sum", "scale": 3}})
    assert cfg.target.build().params == {"scale": 3}
    with pytest.raises(ConfigError, match=r"target 'channel_sum' takes \['scale'\], not \['window'\]"):
        parse_config({"instrument": {"driver": "plasmonic"}, "target": {"name": "channel_sum", "window": [0, 1]}})
