"""Tests of the simulated plasmonic-nanoparticle STEM-EELS instrument."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aexp.instrument import Instrument, MeasurementFailed, OutOfBounds, available_instruments, load_instrument
from aexp.targets import make_target
from simulators.plasmonic import Particle, PlasmonicSimulator

NM = 1e-9
EDGE_WINDOW = (2.3, 2.9)
SEED = 3


def _cube(sim: PlasmonicSimulator) -> Particle:
    return next(p for p in sim.particles() if p.shape == "cube")


def _inward(point: np.ndarray, centre: tuple[float, float], depth_m: float) -> np.ndarray:
    """``point`` moved ``depth_m`` towards ``centre``."""
    d = np.asarray(centre) - point
    return point + depth_m * d / np.linalg.norm(d)


def _edge_point(p: Particle, depth_m: float = 0.5 * NM) -> np.ndarray:
    """Just inside the middle of the particle's first side."""
    v = p.vertices()
    return _inward((v[0] + v[1]) / 2, p.centre_m, depth_m)


def _corner_point(p: Particle, depth_m: float = 0.5 * NM) -> np.ndarray:
    return _inward(p.vertices()[0], p.centre_m, depth_m)


def _far_point(sim: PlasmonicSimulator, clearance_m: float) -> np.ndarray:
    """A grid point at least ``clearance_m`` outside every particle's circumscribed circle."""
    b = sim.bounds
    xs, ys = np.linspace(b.xmin, b.xmax, 64), np.linspace(b.ymin, b.ymax, 64)
    grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    gaps = [np.linalg.norm(grid - p.centre_m, axis=1) - p.circumradius_m for p in sim.particles()]
    gap = np.min(gaps, axis=0)
    assert gap.max() >= clearance_m, "test sample has no empty region"
    return grid[np.argmax(gap)]


# --- frames ------------------------------------------------------------------------------------


def test_survey_frame_matches_bounds_and_rows_run_along_y() -> None:
    sim = PlasmonicSimulator(seed=SEED, survey_pixels=96, pixel_size_m=1.5 * NM)
    survey = sim.survey()
    t, b = survey.transform, sim.bounds
    assert survey.image.shape == (1, 96, 96) and survey.image.dtype == np.float32
    assert survey.channels == ("haadf",)
    corners = t.to_instrument(np.array([[0.0, 0.0], [95.0, 95.0]]))
    np.testing.assert_allclose(corners, [[b.xmin, b.ymin], [b.xmax, b.ymax]])
    np.testing.assert_allclose(t.to_instrument(np.array([[5.0, 17.0]])), [[17 * 1.5 * NM, 5 * 1.5 * NM]])
    xy = np.array([[3e-9, 40e-9]])
    np.testing.assert_allclose(t.to_instrument(t.to_pixel(xy)), xy)


def test_particles_appear_in_the_survey_where_the_transform_puts_them() -> None:
    sim = PlasmonicSimulator(seed=SEED, survey_dose=1e7)  # near noiseless survey
    image, t = sim.survey().image[0], sim.survey().transform
    o = sim.options
    parts = sim.particles()
    checked_transposed = 0
    for p in parts:
        r, c = np.rint(t.to_pixel(np.array(p.centre_m))).astype(int)
        assert image[r, c] > o.haadf_background + 0.5 * o.haadf_per_nm * p.thickness_m / NM
        # The transposed pixel (row <-> col swapped) must be empty wherever no particle is near it.
        swapped = np.array([p.centre_m[1], p.centre_m[0]])
        if all(np.linalg.norm(swapped - q.centre_m) > q.circumradius_m + 3 * NM for q in parts):
            assert image[c, r] < o.haadf_background + 0.01
            checked_transposed += 1
    assert checked_transposed >= 1


def test_particles_are_inside_the_field_and_do_not_overlap() -> None:
    sim = PlasmonicSimulator(seed=SEED)
    parts, b, margin = sim.particles(), sim.bounds, sim.options.margin_m
    assert len(parts) == sim.options.n_particles == 8
    assert {p.shape for p in parts} == {"cube", "rod", "triangle"}
    for p in parts:
        v = p.vertices()
        assert v[:, 0].min() >= b.xmin + margin and v[:, 0].max() <= b.xmax - margin
        assert v[:, 1].min() >= b.ymin + margin and v[:, 1].max() <= b.ymax - margin
        assert 10 * NM <= p.size_m <= 30 * NM
        assert p.shape != "rod" or 2.0 <= p.aspect <= 4.0
    for i, p in enumerate(parts):
        for q in parts[i + 1 :]:
            assert math.dist(p.centre_m, q.centre_m) >= p.circumradius_m + q.circumradius_m + margin


# --- measuring ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "position",
    [
        (-1 * NM, 5 * NM),
        (127 * NM + 1e-12, 5 * NM),
        (5 * NM, 128 * NM),
        (float("nan"), 0.0),
        (float("inf"), 0.0),
    ],
)
def test_out_of_bounds_raises_without_measuring_or_spending_time(position: tuple[float, float]) -> None:
    sim = PlasmonicSimulator(seed=SEED)
    with pytest.raises(OutOfBounds):
        sim.measure(position)
    assert sim.clock.now_s == 0.0
    assert sim.measure((0.0, 0.0)).metadata["repeat"] == 0


def test_bounds_edges_are_measurable() -> None:
    sim = PlasmonicSimulator(seed=SEED)
    b = sim.bounds
    assert (b.xmin, b.xmax, b.ymin, b.ymax) == (0.0, pytest.approx(127 * NM), 0.0, pytest.approx(127 * NM))
    m = sim.measure((b.xmax, b.ymax))
    assert m.spectrum.shape == (256,)


def test_measurement_record_and_clock() -> None:
    sim = PlasmonicSimulator(seed=SEED, measurement_time_s=0.2)
    m1 = sim.measure((10 * NM, 20 * NM), command_id="c-1")
    m2 = sim.measure((10 * NM, 20 * NM), command_id="c-2")
    assert m1.position == (10 * NM, 20 * NM) and m1.duration_s == 0.2
    assert m1.metadata == {"command_id": "c-1", "clock_s": pytest.approx(0.2), "repeat": 0}
    assert m2.metadata == {"command_id": "c-2", "clock_s": pytest.approx(0.4), "repeat": 1}
    assert sim.clock.now_s == pytest.approx(0.4)
    assert m1.axis == sim.describe().spectrum_axis
    ax = m1.axis
    assert (ax.name, ax.units, ax.start, ax.stop, ax.n) == ("energy_loss", "eV", 0.2, 5.0, 256)
    assert np.all(m1.spectrum >= 0) and np.all(m1.spectrum == np.round(m1.spectrum))  # counts


def test_noise_does_not_depend_on_call_order() -> None:
    a, b = PlasmonicSimulator(seed=SEED), PlasmonicSimulator(seed=SEED)
    p, q = (30 * NM, 40 * NM), (70 * NM, 12 * NM)
    a_p, a_q = a.measure(p), a.measure(q)
    b_q, b_p = b.measure(q), b.measure(p)
    np.testing.assert_array_equal(a_p.spectrum, b_p.spectrum)
    np.testing.assert_array_equal(a_q.spectrum, b_q.spectrum)


def test_repeat_draws_fresh_noise() -> None:
    sim = PlasmonicSimulator(seed=SEED)
    first, second = sim.measure((30 * NM, 40 * NM)), sim.measure((30 * NM, 40 * NM))
    assert (first.metadata["repeat"], second.metadata["repeat"]) == (0, 1)
    assert not np.array_equal(first.spectrum, second.spectrum)
    # A position that differs only by float rounding is "the same place".
    third = sim.measure((30 * NM * (1 + 1e-15), 40 * NM))
    assert third.metadata["repeat"] == 2


def test_same_seed_same_sample_different_seed_different_sample() -> None:
    a, b, c = PlasmonicSimulator(seed=5), PlasmonicSimulator(seed=5), PlasmonicSimulator(seed=6)
    assert a.particles() == b.particles()
    np.testing.assert_array_equal(a.survey().image, b.survey().image)
    np.testing.assert_array_equal(a.survey().image, a.survey().image)  # cached render is stable
    here = (50 * NM, 50 * NM)
    np.testing.assert_array_equal(a.measure(here).spectrum, b.measure(here).spectrum)
    assert a.particles() != c.particles()
    assert not np.array_equal(a.survey().image, c.survey().image)


def test_survey_returns_a_copy() -> None:
    sim = PlasmonicSimulator(seed=SEED)
    s1 = sim.survey()
    s1.image[:] = -1
    assert sim.survey().image.min() >= 0


def test_failures_are_seeded_and_cost_time() -> None:
    sim = PlasmonicSimulator(seed=SEED, fail_probability=1.0, measurement_time_s=0.1)
    with pytest.raises(MeasurementFailed, match="repeat 0"):
        sim.measure((20 * NM, 20 * NM), command_id="x")
    assert sim.clock.now_s == pytest.approx(0.1)

    def outcomes(s: PlasmonicSimulator) -> list[bool]:
        out = []
        for i in range(40):
            try:
                s.measure(((i % 5) * 10 * NM, 20 * NM))
                out.append(True)
            except MeasurementFailed:
                out.append(False)
        return out

    half_a = outcomes(PlasmonicSimulator(seed=SEED, fail_probability=0.5))
    half_b = outcomes(PlasmonicSimulator(seed=SEED, fail_probability=0.5))
    assert half_a == half_b
    assert 8 <= sum(half_a) <= 32  # some of each: retries at a place do get through


# --- physics -----------------------------------------------------------------------------------


def test_edge_band_is_strongest_next_to_an_edge() -> None:
    sim = PlasmonicSimulator(seed=SEED)
    edge = make_target("band_intensity", window=EDGE_WINDOW)
    cube = _cube(sim)
    points = np.array([_edge_point(cube), cube.centre_m, _far_point(sim, 15 * NM)])
    at_edge, at_centre, far = sim.truth(points, edge)
    assert at_edge > 2.0 * at_centre
    assert at_edge > 2.0 * far
    # Aloof excitation: just outside the edge it is still strong, and it fades with distance.
    v = cube.vertices()
    mid = (v[0] + v[1]) / 2
    out = [_inward(mid, cube.centre_m, -d * NM) for d in (1, 3, 6, 10)]
    values = sim.truth(np.array(out), edge)
    assert np.all(np.diff(values) < 0)
    assert values[0] > 0.5 * at_edge


@pytest.mark.parametrize(
    ("where", "window"),
    [("corner", (1.4, 2.5)), ("edge", (2.2, 3.2)), ("centre", (3.0, 4.2))],
)
def test_modes_red_shift_with_size(where: str, window: tuple[float, float]) -> None:
    peak = make_target("peak_position", window=window)
    energies = []
    for size in (12 * NM, 28 * NM):
        sim = PlasmonicSimulator(seed=SEED, n_particles=1, shapes=["cube"], size_range_m=(size, size))
        cube = sim.particles()[0]
        points = {"corner": _corner_point(cube), "edge": _edge_point(cube), "centre": np.array(cube.centre_m)}
        point = points[where]
        energies.append(sim.truth(point[None], peak)[0])
    small, large = energies
    assert large < small - 0.1


def test_mode_energies_follow_the_size_law() -> None:
    sim = PlasmonicSimulator(seed=SEED)
    for i, family, energy in sim.mode_table():
        p = sim.particles()[i]
        spec = sim.options.modes[f"{p.shape}.{family}"]
        size_nm = (p.width_m if (p.shape == "rod" and family == "face") else p.size_m) / NM
        assert energy == pytest.approx(spec.e_inf_ev + spec.k_ev_nm / size_nm)
        # Defaults keep the families apart for 10-30 nm particles: the edge band can be isolated.
        lo, hi = {"corner": (1.5, 2.35), "edge": (2.35, 2.95), "face": (3.2, 4.1)}[family]
        assert lo <= energy <= hi


def test_truth_is_the_target_of_the_noiseless_spectra() -> None:
    sim = PlasmonicSimulator(seed=SEED)
    edge = make_target("band_intensity", window=EDGE_WINDOW)
    xy = np.random.default_rng(0).uniform(0, 127 * NM, size=(50, 2))
    np.testing.assert_array_equal(sim.truth(xy, edge), edge(sim.noiseless_spectra(xy), sim.axis.values()))


def test_noisy_measurements_scatter_around_the_truth() -> None:
    sim = PlasmonicSimulator(seed=SEED, dose=50.0)
    edge = make_target("band_intensity", window=EDGE_WINDOW)
    point = _edge_point(_cube(sim))
    spectra = np.array([sim.measure(tuple(point)).spectrum for _ in range(200)])
    expected = sim.noiseless_spectra(point[None])[0]
    # Poisson: per-channel mean within a few standard errors and variance equal to the mean.
    z = (spectra.mean(0) - expected) / np.sqrt(expected / len(spectra))
    assert np.abs(z).mean() < 1.2 and np.abs(z).max() < 5
    assert np.median(spectra.var(0, ddof=1) / expected) == pytest.approx(1.0, abs=0.15)
    scores = edge(spectra, sim.axis.values())
    truth = sim.truth(point[None], edge)[0]
    assert abs(scores.mean() - truth) < 4 * scores.std(ddof=1) / math.sqrt(len(scores))
    assert scores.std() > 0


def test_dose_scales_the_expected_counts() -> None:
    lo, hi = PlasmonicSimulator(seed=SEED, dose=10.0), PlasmonicSimulator(seed=SEED, dose=40.0)
    xy = np.array([[20 * NM, 30 * NM], [60 * NM, 60 * NM]])
    np.testing.assert_allclose(hi.noiseless_spectra(xy), 4 * lo.noiseless_spectra(xy))


def test_noiseless_spectra_chunks_agree_with_single_rows() -> None:
    sim = PlasmonicSimulator(seed=SEED)
    xy = np.random.default_rng(1).uniform(0, 127 * NM, size=(9000, 2))  # more than one chunk
    full = sim.noiseless_spectra(xy)
    assert full.shape == (9000, 256)
    for i in (0, 1, 8191, 8192, 8999):
        np.testing.assert_allclose(full[i], sim.noiseless_spectra(xy[i : i + 1])[0], rtol=1e-12)
    with pytest.raises(ValueError, match="N x 2"):
        sim.noiseless_spectra(xy[0])


def test_empty_field_has_only_the_zero_loss_tail() -> None:
    sim = PlasmonicSimulator(seed=SEED, n_particles=0)
    s = sim.noiseless_spectra(np.array([[10 * NM, 10 * NM], [90 * NM, 40 * NM]]))
    np.testing.assert_allclose(s[0], s[1])
    assert np.all(np.diff(s[0]) < 0)  # the tail only decays


# --- description, options, discovery -----------------------------------------------------------


def test_describe_is_cheap_and_consistent(monkeypatch: pytest.MonkeyPatch) -> None:
    sim = PlasmonicSimulator(seed=SEED, survey_pixels=64, pixel_size_m=2 * NM)

    def forbidden(*_: object) -> None:
        raise AssertionError("describe() must not render")

    monkeypatch.setattr(PlasmonicSimulator, "_render_survey", forbidden)
    monkeypatch.setattr(PlasmonicSimulator, "noiseless_spectra", forbidden)
    d = sim.describe()
    assert d.name == "plasmonic" and d.survey_shape == (1, 64, 64) and d.channels == ("haadf",)
    assert d.bounds == sim.bounds and d.units == "m"
    assert d.spectrum_axis.n == 256 and d.measurement_time_s == 0.05
    assert d.extra["pixel_size_m"] == 2 * NM and d.extra["n_particles"] == 8
    monkeypatch.undo()
    assert sim.survey().image.shape == d.survey_shape
    assert type(d).from_dict(d.to_dict()) == d


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"dose": -1.0}, "dose"),
        ({"n_channels": 1}, "n_channels"),
        ({"colour": "gold"}, "colour"),
        ({"energy_range_ev": (3.0, 1.0)}, "energy_range_ev"),
        ({"energy_range_ev": (0.0, 5.0)}, "energy_range_ev"),
        ({"size_range_m": (-1e-9, 1e-8)}, "size_range_m"),
        ({"rod_aspect_range": (0.5, 2.0)}, "rod_aspect_range"),
        ({"shapes": ["sphere"]}, "shapes"),
        ({"modes": {"sphere.edge": {"e_inf_ev": 2.0, "k_ev_nm": 1.0, "amplitude": 1.0}}}, "modes"),
        ({"fail_probability": 1.5}, "fail_probability"),
        ({"n_particles": 60}, "n_particles"),
    ],
)
def test_bad_options_raise_value_error_naming_the_option(options: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        PlasmonicSimulator(seed=0, **options)
    with pytest.raises(ValueError, match=named):
        PlasmonicSimulator.from_options(options, seed=0)


def test_mode_overrides_merge_with_defaults() -> None:
    flat = {"e_inf_ev": 2.0, "k_ev_nm": 0.0, "amplitude": 2.0}
    sim = PlasmonicSimulator(seed=SEED, modes={"cube.edge": flat})
    assert sim.options.modes["cube.edge"].e_inf_ev == 2.0
    assert sim.options.modes["rod.edge"] == PlasmonicSimulator(seed=SEED).options.modes["rod.edge"]
    cube_edges = [e for i, fam, e in sim.mode_table() if fam == "edge" and sim.particles()[i].shape == "cube"]
    assert cube_edges and all(e == 2.0 for e in cube_edges)


def test_negative_seed_rejected() -> None:
    with pytest.raises(ValueError, match="seed"):
        PlasmonicSimulator(seed=-1)


def test_load_instrument_through_the_entry_point() -> None:
    assert "plasmonic" in available_instruments()
    sim = load_instrument("plasmonic", {"n_particles": 3, "survey_pixels": 64}, seed=1)
    assert isinstance(sim, PlasmonicSimulator) and isinstance(sim, Instrument)
    assert sim.describe().survey_shape == (1, 64, 64)
    assert sim.particles() == PlasmonicSimulator(seed=1, n_particles=3, survey_pixels=64).particles()
    with pytest.raises(ValueError, match="dose"):
        load_instrument("plasmonic", {"dose": 0}, seed=1)
    with pytest.raises(ValueError, match="seed: unknown option"):
        load_instrument("plasmonic", {"seed": 4}, seed=1)


def test_probe_placement_error_moves_the_beam_and_stays_order_independent() -> None:
    a, b = (40e-9, 52e-9), (20e-9, 30e-9)
    plain = PlasmonicSimulator(seed=SEED, survey_pixels=64, n_particles=3)
    s1 = PlasmonicSimulator(seed=SEED, survey_pixels=64, n_particles=3, probe_error_m=2e-9)
    s2 = PlasmonicSimulator(seed=SEED, survey_pixels=64, n_particles=3, probe_error_m=2e-9)
    first = [s1.measure(a).spectrum, s1.measure(b).spectrum]
    second = [s2.measure(b).spectrum, s2.measure(a).spectrum]
    np.testing.assert_array_equal(first[0], second[1])
    np.testing.assert_array_equal(first[1], second[0])
    assert not np.array_equal(first[0], plain.measure(a).spectrum)


def test_particle_signed_distance_is_negative_inside_and_positive_outside():
    cube = Particle("cube", (0.0, 0.0), 10e-9, 0.0, thickness_m=10e-9, aspect=1.0)
    d = cube.signed_distance(np.array([[0.0, 0.0], [10e-9, 0.0], [5e-9, 2e-9]]))
    np.testing.assert_allclose(d, [-5e-9, 5e-9, 0.0], atol=1e-15)


def test_hidden_features_give_the_nearest_outline_its_particle_size_and_shape():
    sim = PlasmonicSimulator(seed=SEED, survey_pixels=64, n_particles=3)
    particles = sim.particles()
    corner = particles[0].vertices()[0]  # on the first particle's outline
    inside = np.asarray(particles[1].centre_m)
    h = sim.hidden_features(np.array([corner, inside]))
    assert h["outline_distance_m"][0] == pytest.approx(0.0, abs=1e-15)
    assert h["size_m"][0] == particles[0].size_m
    # at a centre the nearest outline is the particle's own, as far away as its signed distance says
    assert h["outline_distance_m"][1] == pytest.approx(-particles[1].signed_distance(inside[None])[0])
    assert h["size_m"][1] == particles[1].size_m
    shapes = sorted({p.shape for p in particles})
    assert [shapes[i] for i in h["shape"]] == [particles[0].shape, particles[1].shape]


def test_hidden_features_of_an_empty_sample_are_an_error():
    with pytest.raises(ValueError, match="no particles"):
        PlasmonicSimulator(seed=SEED, survey_pixels=32, n_particles=0).hidden_features(np.zeros((1, 2)))
