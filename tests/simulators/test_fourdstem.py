"""Tests of the simulated 4D-STEM (nanobeam diffraction over a crystal with a domain wall)."""

from __future__ import annotations

import math
import tomllib
from importlib import import_module
from pathlib import Path

import numpy as np
import pytest

from aexp.diffraction import (
    annular_intensity,
    bragg_ratio,
    centre_of_mass,
    com_magnitude,
    disk_centre,
    disk_spacing_strain,
)
from aexp.instrument import Instrument, MeasurementFailed, OutOfBounds
from simulators.fourdstem import CHANNELS, PHYSICS, FourDStemSimulator, electron_wavelength_m, write_4d

SEED = 3
SMALL = {"survey_pixels": 24, "pixel_size_m": 2.5e-9}


def _grid(sim: FourDStemSimulator, stride: int = 1) -> np.ndarray:
    n = sim.options.survey_pixels
    rc = np.stack(np.meshgrid(np.arange(0, n, stride), np.arange(0, n, stride), indexing="ij"), -1).reshape(-1, 2)
    return sim.transform.to_instrument(rc)


def test_registered_in_pyproject_and_an_instrument():
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    target = pyproject["project"]["entry-points"]["aexp.instruments"]["fourdstem"]
    module, name = target.split(":")
    assert getattr(import_module(module), name) is FourDStemSimulator
    sim = FourDStemSimulator.from_options(SMALL, seed=1)
    assert isinstance(sim, Instrument)
    d = sim.describe()
    assert d.name == "fourdstem" and d.survey_shape == (4, 24, 24) and d.channels == CHANNELS
    assert [(a.name, a.units, a.n) for a in d.signal_axes] == [("ky", "mrad", 64), ("kx", "mrad", 64)]
    # 0 mrad where the undeflected beam falls (pixel 31.5), 0.35 mrad per pixel
    assert d.signal_axes[1].start == pytest.approx(-31.5 * 0.35) and d.signal_axes[1].scale == pytest.approx(0.35)
    assert d.spectrum_axis == d.signal_axes[0] and d.extra["pattern_shape"] == [64, 64]
    assert d.extra["calibration"] == {"pixel_mrad": 0.35, "centre_px": [31.5, 31.5]}


def test_wavelength_at_200_kev():
    assert electron_wavelength_m(200.0) == pytest.approx(2.5079e-12, rel=1e-4)


@pytest.mark.parametrize("options, message", [
    ({"colour": 1}, "colour: unknown option"),
    ({"dose": -1}, "dose: Input should be greater than 0"),
    ({"convergence_mrad": 2.5}, "convergence_mrad 2.5 makes neighbouring disks overlap"),
    ({"detector_pixels": 48}, "raise detector_pixels or detector_pixel_mrad"),
])
def test_bad_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        FourDStemSimulator(seed=0, **options)


def test_pattern_is_poisson_counts_keyed_by_place_and_repeat():
    sim = FourDStemSimulator(seed=SEED, **SMALL)
    where = tuple(_grid(sim)[100])
    first, cal = sim.measure_pattern(where)
    again, _ = sim.measure_pattern(where)
    assert first.shape == (64, 64) and (first == np.round(first)).all() and (first >= 0).all()
    assert not np.array_equal(first, again)  # a repeat draws afresh
    assert abs(first.sum() - sim.options.dose) < 5 * math.sqrt(sim.options.dose)
    fresh = FourDStemSimulator(seed=SEED, **SMALL)
    np.testing.assert_array_equal(fresh.measure_pattern(where)[0], first)
    # measure() is the same acquisition, the pattern on its (ky, kx) axes
    m = FourDStemSimulator(seed=SEED, **SMALL).measure(where, command_id="c7")
    np.testing.assert_array_equal(m.spectrum, first)
    assert [a.name for a in m.signal_axes] == ["ky", "kx"] and m.metadata["pattern_shape"] == [64, 64]
    assert m.metadata["calibration"] == cal.to_dict() and m.metadata["command_id"] == "c7"
    assert sim.clock.now_s == pytest.approx(2 * sim.options.measurement_time_s)


def test_out_of_bounds_costs_nothing_and_failures_are_seeded():
    sim = FourDStemSimulator(seed=SEED, **SMALL)
    with pytest.raises(OutOfBounds):
        sim.measure_pattern((-1e-9, 0.0))
    assert sim.clock.now_s == 0.0
    with pytest.raises(MeasurementFailed, match="repeat 0"):
        FourDStemSimulator(seed=SEED, fail_probability=1.0, **SMALL).measure((0.0, 0.0))


@pytest.mark.parametrize("diffuse, rtol", [(0.0, 0.0), (0.3, 0.08)])
def test_centre_of_mass_is_the_deflection_without_friedel_asymmetry(diffuse, rtol):
    # disks are wholly on the detector: their CoM moves with the deflection exactly; the diffuse
    # halo's tails are cut by the detector's edge, which pulls the CoM back by a few per cent
    sim = FourDStemSimulator(seed=SEED, friedel_asymmetry=0.0, diffuse=diffuse, **SMALL)
    pos = _grid(sim, stride=3)
    h = sim.hidden_features(pos)
    deflection = np.stack([h["deflection_x_mrad"], h["deflection_y_mrad"]], 1)
    assert np.abs(deflection).max() > 0.3  # the field is there to be seen
    com = np.stack([h["com_x_mrad"], h["com_y_mrad"]], 1)
    np.testing.assert_allclose(com, deflection, rtol=rtol, atol=2e-3)
    np.testing.assert_allclose(sim.pattern_truth(pos, com_magnitude), np.hypot(*com.T))


def test_friedel_pair_ratio_follows_the_polarity():
    # without the diffuse halo, whose counts under both disks would pull the ratio towards 1
    sim = FourDStemSimulator(seed=SEED, diffuse=0.0, **SMALL)
    pos = _grid(sim, stride=4)
    physics = sim.local_physics(pos)
    g, hk = sim.reflections(pos)
    assert hk[1].tolist() == [1, 0] and hk[2].tolist() == [-1, 0]
    patterns = sim.noiseless_patterns(pos)
    eta, p = sim.options.friedel_asymmetry, physics["polarity"]
    ratio = [bragg_ratio(pat, sim.calibration, tuple(gi[1]), tuple(gi[2]), radius_mrad=1.8)
             for pat, gi in zip(patterns, g)]
    np.testing.assert_allclose(ratio, (1 + eta * p) / (1 - eta * p), rtol=0.01)
    assert p.min() < -0.5 and p.max() > 0.5  # both domains on the grid


def test_disks_turn_with_the_lattice_and_spacing_gives_the_strain():
    sim = FourDStemSimulator(seed=SEED, n_strain_centres=2, strain_amplitude=0.04, **SMALL)
    pos = _grid(sim, stride=2)
    physics = sim.local_physics(pos)
    pick = np.argsort(-np.abs(physics["strain_xx"] + physics["strain_yy"]))[:4]
    pick = np.concatenate([pick, [np.argmin(physics["rotation_rad"]), np.argmax(physics["rotation_rad"])]])
    theta = sim.orientation_rad + physics["rotation_rad"][pick]
    g10 = electron_wavelength_m(200.0) / sim.options.lattice_a_m * 1e3
    patterns = sim.noiseless_patterns(pos[pick])
    beam = disk_centre(patterns, sim.calibration, np.zeros(2), 2.4)
    spot = disk_centre(patterns, sim.calibration, beam + g10 * np.stack([np.cos(theta), np.sin(theta)], 1), 2.4)
    d = spot - beam
    turn = np.angle(np.exp(1j * (np.arctan2(d[:, 1], d[:, 0]) - theta)))
    assert np.abs(turn).max() < 0.01  # the (1, 0) disk sits where the local lattice puts it
    assert physics["rotation_rad"][pick[-1]] - physics["rotation_rad"][pick[-2]] > math.radians(10)
    for i, k in enumerate(pick[:4]):
        eps = np.array([[physics["strain_xx"][k], physics["strain_xy"][k]],
                        [physics["strain_xy"][k], physics["strain_yy"][k]]])
        u = np.array([math.cos(theta[i]), math.sin(theta[i])])
        expected = 1 / np.linalg.norm(np.linalg.solve(np.eye(2) + eps, u)) - 1  # g0 / |g| - 1
        got = disk_spacing_strain(patterns[i], sim.calibration, theta[i], g10, window_mrad=2.4)
        assert abs(expected) > 0.01 and got == pytest.approx(expected, abs=2e-3)


def test_survey_channels_show_defects_and_the_coarse_dpc():
    sim = FourDStemSimulator(seed=SEED, friedel_asymmetry=0.0, **SMALL)
    s = sim.survey()
    assert s.image.shape == (4, 24, 24) and s.channels == CHANNELS
    np.testing.assert_array_equal(s.image, FourDStemSimulator(seed=SEED, friedel_asymmetry=0.0, **SMALL).survey().image)
    pos = _grid(sim)
    physics = sim.local_physics(pos)
    haadf = s.image[0].ravel()
    at_defect, clean = physics["disorder"] > 0.5, physics["disorder"] < 0.01
    assert at_defect.any() and haadf[at_defect].mean() > haadf[clean].mean() + 0.1
    # the DPC channels are the centre of mass, block-averaged over dpc_bin x dpc_bin
    com = centre_of_mass(sim.noiseless_patterns(pos), sim.calibration)
    b = sim.options.dpc_bin
    for axis in (0, 1):
        blocks = com[:, axis].reshape(24 // b, b, 24 // b, b).mean((1, 3))
        measured = s.image[2 + axis][::b, ::b]
        assert np.corrcoef(measured.ravel(), blocks.ravel())[0, 1] > 0.8
        assert np.sqrt(np.mean((measured - blocks) ** 2)) < 0.06  # shot noise of 500 e- x 16 px, ~0.035 mrad
        np.testing.assert_array_equal(s.image[2 + axis][:b, :b], measured[0, 0])  # one value per block


def test_damage_weakens_the_disks_where_the_beam_dwells():
    sim = FourDStemSimulator(seed=SEED, damage_radius_m=2e-9, damage_disorder=0.5, **SMALL)
    where = tuple(_grid(sim)[200])
    annulus = (1.2 * sim.options.convergence_mrad, 11.0)
    counts, damage = [], []
    for _ in range(8):
        m = sim.measure(where)
        damage.append(m.metadata["damage_disorder"])
        counts.append(annular_intensity(m.spectrum, sim.calibration, *annulus))
    assert damage[0] == 0.0 and np.all(np.diff(damage) > 0)
    assert counts[-1] < 0.9 * counts[0]  # 8 patterns: Bragg disks down, halo up (shot noise ~1 %)


def test_drift_moves_the_probe():
    sim = FourDStemSimulator(seed=SEED, drift_offset_m=1e-9, **SMALL)
    m = sim.measure((20e-9, 20e-9))
    assert math.dist(m.metadata["probe_at_m"], (20e-9, 20e-9)) == pytest.approx(1e-9)


def test_local_physics_names():
    sim = FourDStemSimulator(seed=SEED, **SMALL)
    h = sim.hidden_features(_grid(sim, stride=6))
    assert set(h) == set(PHYSICS) | {"com_x_mrad", "com_y_mrad"}
    assert all(v.shape == (16,) for v in h.values())


@pytest.mark.parametrize("suffix, reader", [(".hspy", "rsciio.hspy"), (".zspy", "rsciio.zspy")])
def test_a_4d_file_written_by_the_twin_reads_back_with_rosettasciio(tmp_path, suffix, reader):
    read = pytest.importorskip(reader).file_reader
    sim = FourDStemSimulator(seed=SEED, survey_pixels=8, pixel_size_m=2e-9)
    data = write_4d(tmp_path / f"scan{suffix}", sim, stride=2)
    assert data.shape == (4, 4, 64, 64)
    # the same patterns a fresh twin measures at those places
    again, _ = FourDStemSimulator(seed=SEED, survey_pixels=8, pixel_size_m=2e-9).measure_pattern((8e-9, 4e-9))  # row 1, col 2: y 4 nm, x 8 nm
    np.testing.assert_array_equal(data[1, 2], again)
    (signal,) = read(str(tmp_path / f"scan{suffix}"))
    np.testing.assert_array_equal(np.asarray(signal["data"]), data)
    axes = {a["name"]: a for a in signal["axes"]}
    assert [a["name"] for a in signal["axes"]] == ["y", "x", "ky", "kx"]
    assert axes["x"]["scale"] == pytest.approx(4.0) and axes["x"]["units"] == "nm" and axes["x"]["navigate"]
    assert axes["kx"]["scale"] == pytest.approx(0.35) and axes["kx"]["offset"] == pytest.approx(-31.5 * 0.35)
    assert not axes["ky"]["navigate"]
    assert signal["metadata"]["Signal"]["signal_type"] == "electron_diffraction"
    stored = signal["original_metadata"]["aexp"]
    assert stored["instrument"] == "fourdstem" and stored["seed"] == SEED
    assert stored["calibration"]["pixel_mrad"] == pytest.approx(0.35)


def test_write_4d_names_a_wrong_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"scan.h5: a 4D-STEM file must end in .hspy or .zspy"):
        write_4d(tmp_path / "scan.h5", FourDStemSimulator(seed=0, survey_pixels=8))
