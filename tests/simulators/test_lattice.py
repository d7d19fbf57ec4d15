"""Tests of the simulated atomic-resolution STEM (MX2 monolayer) with core-loss EELS."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from scipy.spatial import cKDTree

from aexp.cli.main import main
from aexp.instrument import Instrument, OutOfBounds, available_instruments, load_instrument
from aexp.patches import find_atoms
from aexp.targets import make_target
from simulators.lattice import LatticeSimulator

SEED = 3
ONSET = make_target("edge_onset", window=(155.0, 175.0))
SMALL = {"survey_pixels": 96}  # ~180 columns: fast


def _x_sites(sim: LatticeSimulator) -> tuple[np.ndarray, np.ndarray]:
    atoms = sim.atoms()
    inner = sim.bounds.contains(atoms.positions_m)
    return atoms.positions_m[inner], atoms.species[inner]


def test_registered_and_an_instrument():
    assert "lattice" in available_instruments()
    sim = load_instrument("lattice", SMALL, seed=1)
    assert isinstance(sim, Instrument)
    d = sim.describe()
    assert d.survey_shape == (1, 96, 96) and d.channels == ("haadf",) and d.spectrum_axis.units == "eV"


def test_find_atoms_precision_and_recall_at_default_dose():
    """The issue's acceptance test: >= 0.98 within 0.5 px, one seed, default dose and size."""
    sim = LatticeSimulator(seed=SEED)
    image = sim.survey().image[0]
    found = find_atoms(image, sigma_px=1.2, min_distance_px=3, threshold=0.05)
    true = sim.transform.to_pixel(sim.atoms().positions_m)
    n = image.shape[0]
    inner = lambda p: p[((p >= 2) & (p <= n - 3)).all(1)]  # noqa: E731 - border columns are cut
    f, t = inner(found), inner(true)
    d_true, _ = cKDTree(f).query(t)
    d_found, _ = cKDTree(t).query(f)
    recall, precision = (d_true <= 0.5).mean(), (d_found <= 0.5).mean()
    assert len(t) > 1000
    assert recall >= 0.98 and precision >= 0.98, (precision, recall)


def test_survey_is_z_contrast_with_dopants_brightest_and_deterministic():
    sim = LatticeSimulator(seed=SEED, dopant_fraction=0.1, **SMALL)
    img = sim.survey().image[0]
    np.testing.assert_array_equal(img, LatticeSimulator(seed=SEED, dopant_fraction=0.1, **SMALL).survey().image[0])
    pos, species = _x_sites(sim)
    rc = np.rint(sim.transform.to_pixel(pos)).astype(int)
    peak = {s: img[rc[species == s, 0], rc[species == s, 1]].mean() for s in ("M", "D", "X2")}
    assert peak["D"] > 1.8 * peak["M"] > 1.8 * peak["X2"]


def test_defects_are_present_in_the_stated_fractions():
    sim = LatticeSimulator(seed=SEED, vacancy_fraction=0.1, dopant_fraction=0.05)
    species = sim.atoms().species
    n_metal = np.isin(species, ["M", "D"]).sum()
    assert 0.03 < (species == "D").sum() / n_metal < 0.07
    assert 0.07 < 1 - (species == "X2").sum() / n_metal < 0.13  # one X2 site per metal site


def test_edge_onset_shifts_up_next_to_a_dopant():
    sim = LatticeSimulator(seed=SEED, strain_amplitude=0.0, vacancy_fraction=0.0, dopant_fraction=0.05)
    atoms = sim.atoms()  # neighbours just outside the field count too
    pos, species = atoms.positions_m, atoms.species
    tree = cKDTree(pos)
    x = np.flatnonzero((species == "X2") & sim.bounds.contains(pos))
    near_dopant = np.array([any(species[k] == "D" for k in tree.query_ball_point(pos[i], 2.2e-10)) for i in x])
    onset = sim.truth(pos[x], ONSET)
    assert near_dopant.any() and (~near_dopant).any()
    # pristine columns all sit at the nominal onset; a dopant neighbour adds ~0.4 eV
    np.testing.assert_allclose(onset[~near_dopant], 162.0, atol=0.1)
    assert onset[near_dopant].min() > onset[~near_dopant].max() + 0.2


def test_hidden_features_count_the_missing_and_dopant_neighbours_the_onset_follows():
    sim = LatticeSimulator(seed=SEED, strain_amplitude=0.0, vacancy_fraction=0.1, dopant_fraction=0.05, **SMALL)
    pos, species = _x_sites(sim)
    x = pos[species == "X2"]
    hidden = sim.hidden_features(x)
    assert list(hidden) == ["missing_neighbours", "dopant_neighbours", "dilatation"]
    # on a column the beam excites that column almost alone: the counts are near whole numbers
    for name in ("missing_neighbours", "dopant_neighbours"):
        np.testing.assert_allclose(hidden[name], np.round(hidden[name]), atol=0.05)
    np.testing.assert_allclose(hidden["dilatation"], 0.0)
    assert np.round(hidden["missing_neighbours"]).max() >= 1 and np.round(hidden["dopant_neighbours"]).max() >= 1
    # and the onset is the nominal one plus 0.5 eV per missing and 0.4 eV per dopant neighbour
    expected = 162.0 + 0.5 * hidden["missing_neighbours"] + 0.4 * hidden["dopant_neighbours"]
    np.testing.assert_allclose(sim.truth(x, ONSET), expected, atol=0.1)


def test_measured_onset_tracks_the_truth():
    sim = LatticeSimulator(seed=SEED, **SMALL)
    pos, species = _x_sites(sim)
    pick = pos[species == "X2"][:20]
    measured = np.array([ONSET(sim.measure(tuple(p)).spectrum, sim.axis.values()) for p in pick])
    np.testing.assert_allclose(measured, sim.truth(pick, ONSET), atol=0.25)


def test_noise_depends_on_position_and_repeat_not_on_call_order():
    opts = {**SMALL, "probe_error_m": 0.1e-10}
    a, b = (20e-10, 15e-10), (10e-10, 12e-10)
    s1 = LatticeSimulator(seed=SEED, **opts)
    first = [s1.measure(a).spectrum, s1.measure(b).spectrum, s1.measure(a).spectrum]
    s2 = LatticeSimulator(seed=SEED, **opts)
    second = [s2.measure(b).spectrum, s2.measure(a).spectrum, s2.measure(a).spectrum]
    np.testing.assert_array_equal(first[0], second[1])  # a, repeat 0
    np.testing.assert_array_equal(first[1], second[0])  # b, repeat 0
    np.testing.assert_array_equal(first[2], second[2])  # a, repeat 1
    assert not np.array_equal(first[0], first[2])


def test_drift_and_clock():
    sim = LatticeSimulator(seed=SEED, drift_offset_m=0.5e-10, drift_rate_m_per_s=1e-10, measurement_time_s=0.2, **SMALL)
    p = (20e-10, 20e-10)
    m0, m1 = sim.measure(p), sim.measure(p)
    assert m1.metadata["clock_s"] == pytest.approx(0.4) and sim.clock.now_s == pytest.approx(0.4)
    shift0 = np.subtract(m0.metadata["probe_at_m"], p)
    shift1 = np.subtract(m1.metadata["probe_at_m"], p)
    assert np.linalg.norm(shift0) == pytest.approx(0.5e-10)  # survey -> spectroscopy offset
    assert np.linalg.norm(shift1 - shift0) == pytest.approx(0.2e-10)  # 1 A/s over 0.2 s


def test_beam_damage_knocks_out_exposed_columns_and_changes_later_spectra():
    sim = LatticeSimulator(seed=SEED, damage_radius_m=0.5e-10, damage_threshold=1.0, **SMALL)
    pos, species = _x_sites(sim)
    target = tuple(pos[species == "X2"][0])
    before = sim.measure(target).spectrum
    for _ in range(15):
        after = sim.measure(target).spectrum
    gone = sim.damaged_columns()
    assert len(gone) >= 1 and np.min(np.linalg.norm(gone - np.array(target), axis=1)) < 1e-12
    e = sim.axis.values()
    edge = (e > 168) & (e < 175)
    assert after[edge].mean() < 0.8 * before[edge].mean()  # the column's edge is gone
    assert len(LatticeSimulator(seed=SEED, **SMALL).damaged_columns()) == 0  # off by default


def test_out_of_bounds_is_refused_without_time_passing():
    sim = LatticeSimulator(seed=SEED, **SMALL)
    with pytest.raises(OutOfBounds):
        sim.measure((-1e-10, 0.0))
    assert sim.clock.now_s == 0.0


@pytest.mark.parametrize(
    "options, named",
    [
        ({"survey_dose": -5}, "survey_dose"),
        ({"dose": 0}, "dose"),
        ({"lattice_constant_m": 0.2e-10}, "lattice_constant_m"),
        ({"edge_onset_ev": 400}, "edge_onset_ev"),
        ({"probe_error_m": -1e-10}, "probe_error_m"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_meaningless_options_are_config_errors_naming_the_option(options, named, tmp_path, capsys):
    with pytest.raises(ValueError, match=named):
        LatticeSimulator(seed=0, **options)
    cfg = {"instrument": {"driver": "lattice", "options": options},
           "candidates": {"mode": "atoms", "patch_size": 16},
           "target": {"name": "edge_onset", "window": [155, 175]}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["check", str(path)]) == 2
    assert f"lattice: invalid option(s): {named}" in capsys.readouterr().err
