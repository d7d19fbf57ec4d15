"""The rVAE on the 4D-STEM twin's patterns (benchmarks/fourdstem_rvae.py): its latents recover the
lattice rotation and the pattern's shift."""

from __future__ import annotations

import numpy as np
import pytest


def test_measure_grid_binds_patterns_to_the_truth(benchmark_script):
    bench = benchmark_script("fourdstem_rvae")
    data = bench.measure_grid(seed=0, grid=4, bin_px=2, smooth_px=0.0, options={"survey_pixels": 16})
    assert data.patterns.shape == (16, 32, 32) and data.patterns.dtype == np.float32
    assert data.patterns.max() == pytest.approx(1.0) and data.patterns.min() >= 0
    assert data.rotation.shape == (16,) and data.com.shape == data.deflection.shape == (16, 2)
    np.testing.assert_allclose(data.positions[[0, -1]], [[0, 0], [15e-9, 15e-9]])
    assert 0 < data.noise_std < 0.1


@pytest.mark.parametrize("smooth_px", [0.0, 1.0])
def test_preprocessed_noise_std_matches_poisson_draws(benchmark_script, smooth_px):
    """The delta-method noise of blurred log1p counts against the spread of real Poisson draws."""
    bench = benchmark_script("fourdstem_rvae")
    from scipy import ndimage

    rate = np.full((1, 32, 32), 50.0)
    rate[0, 8:24, 8:24] = 400.0  # two count levels, as between disks and background
    draws = np.random.default_rng(0).poisson(rate, size=(400, 32, 32)).astype(float)
    processed = ndimage.gaussian_filter(np.log1p(draws), (0, smooth_px, smooth_px)) if smooth_px else np.log1p(draws)
    measured = float(np.sqrt(processed.var(axis=0).mean()))
    assert bench.preprocessed_noise_std(rate, smooth_px) == pytest.approx(measured, rel=0.05)
    if not smooth_px:  # the closed form at one level: sqrt(n) / (1 + n)
        assert bench.preprocessed_noise_std(np.full((1, 4, 4), 99.0), 0.0) == pytest.approx(np.sqrt(99) / 100)


def test_shift_scores_are_blind_to_the_latent_frame_and_see_a_lost_direction(benchmark_script):
    bench = benchmark_script("fourdstem_rvae")
    rng = np.random.default_rng(1)
    shift = rng.normal(size=(200, 2))
    turned = shift @ np.array([[np.cos(1.0), -np.sin(1.0)], [np.sin(1.0), np.cos(1.0)]]).T
    # a turned frame: one latent alone correlates less, both together exactly
    assert bench._pearson(turned[:, 0], shift[:, 0]) < 0.7
    assert bench._multiple_correlation(shift[:, 0], turned) == pytest.approx(1.0)
    assert bench._shift_rank(shift, turned) == pytest.approx(1.0)
    # both latents following one direction of the shift: rank 0
    one = np.c_[shift[:, 0] + shift[:, 1], 2 * (shift[:, 0] + shift[:, 1])]
    assert bench._shift_rank(shift, one) == pytest.approx(0.0, abs=1e-9)
    assert bench._multiple_correlation(shift[:, 1], one) == pytest.approx(np.sqrt(0.5), abs=0.1)


def test_rvae_angle_latent_follows_the_lattice_rotation_quick(benchmark_script):
    bench = benchmark_script("fourdstem_rvae")
    data = bench.measure_grid(seed=0, grid=12, bin_px=2)
    _, z, scores = bench.fit_rvae(data, epochs=30, seed=0)
    assert z.shape == (144, 5)
    assert scores.angle_circular_correlation >= 0.8


def test_on_a_bending_twin_the_rvae_angle_beats_a_plain_vaes_best_latent_quick(benchmark_script):
    """The twin's "bending" setting: the lattice turns only with the bend (60 deg across the field),
    the domains change only the Friedel pair and the deflection, so the rotation is not the domain."""
    bench = benchmark_script("fourdstem_rvae")
    data = bench.measure_grid(seed=0, grid=12, bin_px=2, options=bench.TWINS["bending"])
    assert np.radians(45) < np.ptp(data.rotation) < np.radians(90)  # measured 62 deg
    _, _, scores = bench.fit_rvae(data, epochs=30, seed=0)
    vae = bench.fit_vae_baseline(data, epochs=30, seed=0)
    assert scores.angle_circular_correlation >= 0.9  # measured 0.97
    assert vae["angle_circular_correlation"] <= scores.angle_circular_correlation - 0.05  # measured 0.88


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_on_a_bending_twin_the_rvae_angle_beats_a_plain_vaes_best_latent_full(benchmark_script, seed):
    bench = benchmark_script("fourdstem_rvae")
    data = bench.measure_grid(seed=seed, grid=24, bin_px=2, options=bench.TWINS["bending"])
    _, _, scores = bench.fit_rvae(data, epochs=60, seed=seed)
    vae = bench.fit_vae_baseline(data, epochs=60, seed=seed)
    assert scores.angle_circular_correlation >= 0.95  # measured 0.984, 0.980, 0.989
    assert vae["angle_circular_correlation"] < scores.angle_circular_correlation  # measured 0.795, 0.952, 0.892


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_wider_decoder_meets_the_angle_and_kx_bounds_on_three_seeds(benchmark_script, seed):
    """hidden=64: angle >= 0.95 and the shift along kx >= 0.9 on seeds 0-2 (hidden=32 misses both
    on seed 2: 0.821, 0.827). The shift along ky stays short of 0.9: see docs/fourdstem.md."""
    bench = benchmark_script("fourdstem_rvae")
    data = bench.measure_grid(seed=seed, grid=24, bin_px=2)
    _, _, scores = bench.fit_rvae(data, epochs=60, seed=seed, hidden=64)
    assert scores.angle_circular_correlation >= 0.95  # measured 0.992, 0.985, 0.989
    assert scores.shift_correlation_x >= 0.9  # measured 0.940, 0.927, 0.939


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_decoder_started_at_higher_frequency_draws_the_disks_on_three_seeds(benchmark_script, seed):
    """coordinate_scale=10: the reconstruction error falls from 0.10 (a blob) towards the shot
    noise, and the angle and the kx shift follow the truth on every seed."""
    bench = benchmark_script("fourdstem_rvae")
    data = bench.measure_grid(seed=seed, grid=24, bin_px=2)
    _, _, scores = bench.fit_rvae(data, epochs=60, seed=seed, coordinate_scale=10.0)
    assert scores.reconstruction_rms < 0.06  # measured 0.041, 0.047, 0.051 (noise 0.016; 0.104 at scale 1)
    assert scores.angle_circular_correlation >= 0.99  # measured 0.997, 0.998, 0.998
    assert scores.shift_correlation_x >= 0.95  # measured 0.988, 0.956, 0.968


@pytest.mark.slow
def test_rvae_recovers_rotation_and_shift_full(benchmark_script, tmp_path):
    bench = benchmark_script("fourdstem_rvae")
    data = bench.measure_grid(seed=0, grid=24, bin_px=2)
    _, z, scores = bench.fit_rvae(data, epochs=60, seed=0)
    assert scores.angle_circular_correlation >= 0.95
    assert scores.shift_correlation_x >= 0.9
    assert scores.shift_correlation_y >= 0.5  # measured 0.61: see docs/fourdstem.md
    # why ky cannot reach 0.9 here: a latent that followed the disks' rigid shift exactly would
    # correlate only 0.685 with the CoM along ky (the rest is the Friedel pull of the domains)
    assert scores.ceiling_y < 0.75 and scores.ceiling_x > 0.99
    bench.latent_maps(data, z, tmp_path / "maps.png")
    assert (tmp_path / "maps.png").stat().st_size > 10_000


def test_latent_displacement_reads_the_shift_latents_on_the_detector_axes(benchmark_script):
    """dx moves the decoded pattern up (towards -ky), dy right (+kx), 0.05 x (side - 1) pixels per
    unit at angle 0; a quarter turn of the angle latent turns the reading with it."""
    bench = benchmark_script("fourdstem_rvae")
    z = np.array([[0.0, 1.0, 0.0, 0, 0, 0], [0.0, 0.0, 1.0, 0, 0, 0], [np.pi / 2, 1.0, 0.0, 0, 0, 0]])
    moved = bench.latent_displacement(z[:, :5], (21, 21), pixel_mrad=0.7)  # (kx, ky) mrad
    np.testing.assert_allclose(moved, [[0.0, -0.7], [0.7, 0.0], [-0.7, 0.0]], atol=1e-6)


def test_shifted_copies_move_one_pattern_by_the_drawn_shift(benchmark_script):
    bench = benchmark_script("fourdstem_rvae")
    data = bench.shifted_copies(seed=0, n=6, spread_mrad=(0.5, 0.0), rotation_rad=0.0)
    assert data.patterns.shape == (6, 32, 32) and data.pixel_mrad == pytest.approx(0.7)
    np.testing.assert_array_equal(data.com, data.deflection)
    assert np.all(data.deflection[:, 1] == 0) and data.deflection[:, 0].std() > 0.1
    assert np.ptp(data.polarity) == 0 and np.ptp(data.rotation) == 0
    # the pattern moved along kx (columns) by the drawn shift: its centre of mass follows, slope ~1
    counts = np.expm1(data.patterns * 8.0)  # any increasing weighting of the disks will do
    cols = (counts * np.arange(32)).sum((1, 2)) / counts.sum((1, 2)) * data.pixel_mrad
    assert np.corrcoef(cols, data.deflection[:, 0])[0, 1] > 0.95


def test_com_decomposition_splits_a_com_made_of_shift_and_polarity(benchmark_script):
    bench = benchmark_script("fourdstem_rvae")
    rng = np.random.default_rng(0)
    n = 400
    rigid, polarity = rng.normal(size=(n, 2)), np.sign(rng.normal(size=n))
    com = rigid + np.c_[np.zeros(n), polarity]  # a pull along ky only, of the rigid shift's size
    data = bench.PatternSet(np.zeros((n, 2, 2), np.float32), np.zeros((n, 2)), np.zeros(n), com, rigid, 20,
                            0.01, 0.7, polarity)
    z = np.c_[np.zeros(n), rigid, np.zeros((n, 2))]  # shift latents equal to the rigid shift
    out = bench.com_decomposition(data, z)
    assert out["com_x_by_rigid"] == pytest.approx(1.0)
    assert out["com_y_by_rigid"] == pytest.approx(0.5, abs=0.1)  # equal variances
    assert out["com_y_by_rigid_and_polarity"] == pytest.approx(1.0)
    assert out["rigid_y_by_shift_latents"] == pytest.approx(1.0)
    assert out["pull_y_by_shift_latents"] < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shift_equivariance_gives_the_shift_latents_both_directions_on_three_seeds(benchmark_script, seed):
    """shift_equivariance=10 (aexp.models.shifts): the two shift latents follow two directions of
    the rigid shift (rank 0.00-0.01 without), and against the CoM along ky they reach what a perfect
    rigid-shift latent would (the ceiling; the rest of the ky CoM is the Friedel pull)."""
    bench = benchmark_script("fourdstem_rvae")
    data = bench.measure_grid(seed=seed, grid=24, bin_px=2)
    _, _, scores = bench.fit_rvae(data, epochs=60, seed=seed, coordinate_scale=10.0, shift_equivariance=10.0)
    assert scores.shift_rank >= 0.8  # measured 0.972, 0.863, 0.891 (0.010, 0.011, 0.000 without)
    assert scores.angle_circular_correlation >= 0.99  # measured 0.994, 0.997, 0.998
    assert scores.deflection_multiple_correlation_x >= 0.95  # measured 0.980, 0.983, 0.966
    assert scores.deflection_multiple_correlation_y >= 0.85  # measured 0.860, 0.947, 0.958 (0.576, 0.852, 0.946 without)
    assert scores.shift_multiple_correlation_x >= 0.9  # measured 0.975, 0.937, 0.970
    assert scores.shift_multiple_correlation_y >= scores.ceiling_y  # measured 0.732/0.685, 0.897/0.886, 0.927/0.917
    # the decoder's own reading (where the template's central beam lands), no fit to the truth
    assert scores.centred_correlation_x >= 0.9  # measured 0.964, 0.931, 0.924 against the CoM
    assert scores.centred_deflection_correlation_y >= 0.75  # measured 0.764, 0.952, 0.919 against the rigid shift
    assert 0.8 <= scores.centred_slope_x <= 1.2 and 0.8 <= scores.centred_slope_y <= 1.2  # mrad per mrad


def test_template_centre_finds_the_central_beam_of_the_decoded_template(benchmark_script):
    bench = benchmark_script("fourdstem_rvae")

    class Template:  # decodes every latent to one pattern: a bright 3 x 3 disk at row 12, column 20
        def decode(self, z):
            image = np.zeros((len(z), 32, 32), np.float32)
            image[:, 11:14, 19:22] = 1.0
            return image

    centre = bench.template_centre(Template(), np.zeros((4, 5)))
    np.testing.assert_allclose(centre, [2 * 12 / 31 - 1, 1 - 2 * 20 / 31])
    moved = bench.latent_displacement(np.zeros((1, 5)), (32, 32), 0.7, centre)  # where it lands, mrad
    np.testing.assert_allclose(moved, [[(20 - 15.5) * 0.7, (12 - 15.5) * 0.7]], atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 4])
def test_refined_latents_follow_the_com_where_it_is_a_shift(benchmark_script, seed):
    """The issue's bar (angle >= 0.95, shift latents against the CoM >= 0.9) on the two seeds where the
    encoder fell short along the small direction of shift. On the twin with Friedel's law (the CoM is
    the disks' shift) the encoder reads ky at 0.833 and 0.864; the most probable latents under the same
    decoder (``encode(refine=200)``) at 0.939 and 0.898. On the default twin they pass the ceiling,
    what a latent equal to the shift would score against a CoM that is partly the Friedel pull."""
    bench = benchmark_script("fourdstem_rvae")
    settings = dict(epochs=60, seed=seed, coordinate_scale=10.0, shift_equivariance=10.0, refine=200)
    data = bench.measure_grid(seed=seed, grid=24, bin_px=2, options=bench.TWINS["friedel"])
    _, _, scores = bench.fit_rvae(data, **settings)
    assert scores.ceiling_x > 0.999 and scores.ceiling_y > 0.999  # the CoM is the shift
    assert scores.angle_circular_correlation >= 0.99  # measured 1.000, 0.999
    assert scores.shift_multiple_correlation_x >= 0.95  # measured 0.992, 0.993
    assert scores.shift_multiple_correlation_y >= 0.88  # measured 0.939, 0.898 (encoder 0.833, 0.864)
    data = bench.measure_grid(seed=seed, grid=24, bin_px=2)
    _, _, scores = bench.fit_rvae(data, **settings)
    assert scores.deflection_multiple_correlation_x >= 0.95  # measured 0.995, 0.993 against the shift
    assert scores.deflection_multiple_correlation_y >= 0.88  # measured 0.946, 0.903
    assert scores.shift_multiple_correlation_y >= scores.ceiling_y  # measured 0.734/0.685, 0.862/0.834
