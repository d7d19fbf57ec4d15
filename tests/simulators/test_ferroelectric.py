"""Tests of the simulated PFM (ferroelectric domains, band-excitation hysteresis loops)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from aexp.cli.main import main
from aexp.instrument import Instrument, OutOfBounds, available_instruments, load_instrument
from aexp.targets import make_target
from simulators.ferroelectric import FerroelectricSimulator

SEED = 4
SMALL = {"survey_pixels": 48, "n_defects": 4, "points_per_branch": 40}
AREA, COERCIVE = make_target("loop_area"), make_target("coercive_bias")
NUCLEATION, IMPRINT = make_target("nucleation_bias"), make_target("imprint")


def _grid(sim: FerroelectricSimulator, stride: int = 1) -> np.ndarray:
    n = sim.options.survey_pixels
    rc = np.stack(np.meshgrid(np.arange(0, n, stride), np.arange(0, n, stride), indexing="ij"), -1).reshape(-1, 2)
    return sim.transform.to_instrument(rc)


def test_registered_and_an_instrument():
    assert "ferroelectric" in available_instruments()
    sim = load_instrument("ferroelectric", SMALL, seed=1)
    assert isinstance(sim, Instrument)
    d = sim.describe()
    assert d.survey_shape == (2, 48, 48) and d.channels == ("amplitude", "phase")
    assert d.spectrum_axis.units == "V" and d.spectrum_axis.n == 81
    assert (d.spectrum_axis.start, d.spectrum_axis.stop) == (-14.0, 42.0)  # unfolded: turns at +14 V


def test_survey_phase_is_the_domain_pattern_and_amplitude_drops_at_walls():
    sim = FerroelectricSimulator(seed=SEED, **SMALL)
    amp, phase = sim.survey().image
    polar = sim.polarisation()
    assert (polar > 0).mean() > 0.2 and (polar < 0).mean() > 0.2  # both domains present
    np.testing.assert_allclose(phase[polar > 0].mean(), 0.0, atol=2.0)
    np.testing.assert_allclose(phase[polar < 0].mean(), 180.0, atol=2.0)
    par = sim.loop_parameters(_grid(sim))
    at_wall = (par["distance_m"] < 10e-9).reshape(amp.shape)
    far = ((par["distance_m"] > 60e-9) & (par["defect"] < 0.01)).reshape(amp.shape)
    assert amp[at_wall].mean() < 0.8 * amp[far].mean()
    np.testing.assert_array_equal(amp, FerroelectricSimulator(seed=SEED, **SMALL).survey().image[0])


def test_loop_follows_walls_curvature_and_defects():
    sim = FerroelectricSimulator(seed=SEED, **SMALL)
    pos = _grid(sim)
    par = sim.loop_parameters(pos)
    clean = par["defect"] < 0.01
    coercive, nucleation = sim.truth(pos, COERCIVE), sim.truth(pos, NUCLEATION)
    near, far = clean & (par["distance_m"] < 15e-9), clean & (par["distance_m"] > 80e-9)
    assert coercive[near].mean() < coercive[far].mean() - 1.0  # walls ease switching
    assert nucleation[near].mean() < nucleation[far].mean() - 1.0
    # at equal distance, the more curved wall switches more easily
    band = clean & (par["distance_m"] < 15e-9)
    k = np.abs(par["curvature_per_m"][band])
    assert np.corrcoef(k, coercive[band])[0, 1] < -0.3
    # defects pin switching: the widest loops sit on defect cores
    area = sim.truth(pos, AREA)
    assert par["defect"][np.argsort(-area)[:5]].min() > 0.3
    # imprint follows the as-grown polarisation
    imp = sim.truth(pos, IMPRINT)
    assert imp[clean & (par["polarisation"] > 0)].mean() > imp[clean & (par["polarisation"] < 0)].mean() + 0.5


def test_hidden_features_are_the_descriptors_the_loop_follows():
    sim = FerroelectricSimulator(seed=SEED, **SMALL)
    pos = _grid(sim, stride=3)
    hidden, par = sim.hidden_features(pos), sim.loop_parameters(pos)
    assert list(hidden) == ["wall_distance_m", "wall_curvature_per_m", "defect", "polarisation"]
    np.testing.assert_array_equal(hidden["wall_distance_m"], par["distance_m"])
    np.testing.assert_array_equal(hidden["wall_curvature_per_m"], par["curvature_per_m"])
    np.testing.assert_array_equal(hidden["defect"], par["defect"])
    assert set(np.unique(hidden["polarisation"])) == {-1.0, 1.0}
    core = sim.defects()[:1]
    assert sim.hidden_features(core)["defect"][0] >= 1.0  # a defect's own core


def test_measured_loop_is_the_noiseless_loop_plus_small_noise():
    sim = FerroelectricSimulator(seed=SEED, **SMALL)
    p = tuple(_grid(sim, stride=7)[9])
    loop = sim.measure(p).spectrum
    clean = sim.noiseless_spectra(np.array([p]))[0]
    assert np.std(loop - clean) == pytest.approx(0.03, rel=0.3)
    assert AREA(loop, sim.axis.values()) == pytest.approx(AREA(clean, sim.axis.values()), rel=0.1)


def test_noise_depends_on_position_and_repeat_not_on_call_order():
    opts = {**SMALL, "probe_error_m": 3e-9}
    a, b = (100e-9, 150e-9), (300e-9, 120e-9)
    s1 = FerroelectricSimulator(seed=SEED, **opts)
    first = [s1.measure(a).spectrum, s1.measure(b).spectrum]
    s2 = FerroelectricSimulator(seed=SEED, **opts)
    second = [s2.measure(b).spectrum, s2.measure(a).spectrum]
    np.testing.assert_array_equal(first[0], second[1])
    np.testing.assert_array_equal(first[1], second[0])
    assert not np.array_equal(s2.measure(a).spectrum, first[0])  # a second repeat draws afresh


def test_drift_moves_the_tip_over_simulated_time():
    sim = FerroelectricSimulator(seed=SEED, drift_rate_m_per_s=5e-9, measurement_time_s=2.0, **SMALL)
    p = (200e-9, 200e-9)
    m0, m1 = sim.measure(p), sim.measure(p)
    assert np.linalg.norm(np.subtract(m0.metadata["probe_at_m"], p)) == pytest.approx(0.0, abs=1e-18)
    assert np.linalg.norm(np.subtract(m1.metadata["probe_at_m"], p)) == pytest.approx(10e-9)
    assert sim.clock.now_s == pytest.approx(4.0)


def test_repeated_sweeps_write_imprint_when_damage_is_on():
    sim = FerroelectricSimulator(seed=SEED, damage_radius_m=20e-9, imprint_per_sweep_v=0.5, loop_noise=0.0, **SMALL)
    p = (200e-9, 200e-9)
    axis = sim.axis.values()
    shifts = [IMPRINT(sim.measure(p).spectrum, axis) for _ in range(3)]
    np.testing.assert_allclose(np.diff(shifts), 0.5, atol=0.05)
    plain = FerroelectricSimulator(seed=SEED, loop_noise=0.0, **SMALL)
    assert IMPRINT(plain.measure(p).spectrum, axis) == pytest.approx(IMPRINT(plain.measure(p).spectrum, axis))


def test_out_of_bounds_is_refused():
    sim = FerroelectricSimulator(seed=SEED, **SMALL)
    with pytest.raises(OutOfBounds):
        sim.measure((0.0, 1e-6))
    assert sim.clock.now_s == 0.0


@pytest.mark.parametrize(
    "options, named",
    [
        ({"points_per_branch": 0}, "points_per_branch"),
        ({"bias_max_v": -1}, "bias_max_v"),
        ({"domain_size_m": 5e-9}, "domain_size_m"),
        ({"loop_noise": -0.1}, "loop_noise"),
        ({"drift_rate_m_per_s": -1e-9}, "drift_rate_m_per_s"),
    ],
)
def test_meaningless_options_are_config_errors_naming_the_option(options, named, tmp_path, capsys):
    with pytest.raises(ValueError, match=named):
        FerroelectricSimulator(seed=0, **options)
    cfg = {"instrument": {"driver": "ferroelectric", "options": options}, "target": {"name": "loop_area"}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["check", str(path)]) == 2
    assert f"ferroelectric: invalid option(s): {named}" in capsys.readouterr().err
