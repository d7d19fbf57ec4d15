import numpy as np
import pytest

from aexp.config import NoEmbedderConfig, RVAEEmbedderConfig, parse_config, with_kind
from aexp.features import (
    centre_gradient,
    centre_pixels,
    clip_channels,
    embed_candidates,
    resolve_device,
    standardise,
    surrogate_inputs,
    with_position,
)
from aexp.patches import grid_candidates
from aexp.types import PixelTransform, Survey


def _candidates():
    img = np.random.default_rng(0).normal(size=(1, 12, 12)).astype(np.float32)
    return grid_candidates(Survey(img, PixelTransform.square(1e-9), ("haadf",)), 2, 4)


def test_raw_patch_features_are_standardised_columns():
    c = _candidates()
    f, info = embed_candidates(c, NoEmbedderConfig(), seed=0, progress=False)
    assert f.shape == (36, 16) and info == {"kind": "none", "dim": 16}
    np.testing.assert_allclose(f.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(f.std(0), 1, atol=1e-12)


def test_with_position_appends_standardised_x_y():
    c = _candidates()
    f = with_position(np.zeros((36, 3)), c)
    assert f.shape == (36, 5)
    np.testing.assert_allclose(f[:, 3:], standardise(c.positions))
    assert f[1, 3] > f[0, 3]  # next column along the grid: larger x


def test_centre_pixels_are_the_survey_pixels_under_each_candidate():
    img = np.random.default_rng(0).normal(size=(1, 12, 12)).astype(np.float32)
    c = grid_candidates(Survey(img, PixelTransform.square(1e-9), ("haadf",)), 2, 4)
    rows, cols = c.pixels.astype(int).T
    one = centre_pixels(c, 1)
    assert one.shape == (36, 1)
    np.testing.assert_allclose(one[:, 0], standardise(img[0, rows, cols][:, None])[:, 0], atol=1e-12)
    three = centre_pixels(c, 3)
    assert three.shape == (36, 9)
    np.testing.assert_allclose(three[:, 4], one[:, 0])  # the middle of the 3 x 3 is the centre pixel
    inner = (rows > 0) & (cols > 0)  # away from the reflected border, column 0 is the pixel up-left
    up_left = img[0, rows[inner] - 1, cols[inner] - 1]
    assert np.corrcoef(three[inner, 0], up_left)[0, 1] == pytest.approx(1.0, abs=1e-9)
    for bad in (0, 2, 5):
        with pytest.raises(ValueError, match="centre_pixels"):
            centre_pixels(c, bad)


def test_centre_gradient_is_the_slope_where_the_probe_lands_whatever_its_direction():
    rows, cols = np.mgrid[:13, :13].astype(np.float32)
    bowl = (rows - 6) ** 2 + (cols - 6) ** 2  # slope 2 x the distance from (6, 6), in every direction
    ramp = 3 * rows - 4 * cols  # slope 5 everywhere
    survey = Survey(np.stack([bowl, ramp]), PixelTransform.square(1e-9), ("a", "b"))
    c = grid_candidates(survey, 1, 5)
    g = centre_gradient(c)
    assert g.shape == (169, 2)
    r, q = c.pixels.astype(int).T
    inner = (r > 0) & (r < 12) & (q > 0) & (q < 12)  # the 3 x 3 lies inside the survey
    slope = 2 * np.hypot(r - 6, q - 6)
    assert np.corrcoef(g[inner, 0], slope[inner])[0, 1] == pytest.approx(1.0, abs=1e-12)
    at = {(int(a), int(b)): v for a, b, v in zip(r, q, g[:, 0])}
    assert at[(6, 10)] == pytest.approx(at[(10, 6)]) == pytest.approx(at[(2, 6)])  # same distance, any side
    assert at[(6, 6)] < at[(6, 8)] < at[(6, 10)]
    assert np.ptp(g[inner, 1]) < 1e-9  # a constant slope reads the same wherever the window fits
    assert g[~inner, 1].max() < g[inner, 1].min()  # the reflected border flattens it
    tiny = grid_candidates(Survey(bowl[None], PixelTransform.square(1e-9), ("a",)), 1, 2)
    with pytest.raises(ValueError, match="centre_gradient: needs a 3 x 3 window"):
        centre_gradient(tiny)


def test_surrogate_inputs_put_embedding_then_centre_pixels_then_gradient_then_position(tiny_config):
    raw = tiny_config(embedder="none", candidates={"stride": 2, "patch_size": 4},
                      surrogate={"centre_pixels": 1, "centre_gradient": True, "position": True})
    c = _candidates()
    feats, info = surrogate_inputs(c, parse_config(raw), seed=0, progress=False)
    assert feats.shape == (36, 16 + 1 + 1 + 2)
    assert (info["centre_columns"], info["gradient_columns"], info["position_columns"]) == (1, 1, 2)
    np.testing.assert_allclose(feats[:, 16], centre_pixels(c, 1)[:, 0])
    np.testing.assert_allclose(feats[:, 17], centre_gradient(c)[:, 0])
    np.testing.assert_allclose(feats[:, 18:], standardise(c.positions))


def test_surrogate_inputs_put_embedding_then_centre_pixels_then_position(tiny_config):
    raw = tiny_config(embedder="none", candidates={"stride": 2, "patch_size": 4},
                      surrogate={"centre_pixels": 1, "position": True})
    cfg = parse_config(raw)
    c = _candidates()
    feats, info = surrogate_inputs(c, cfg, seed=0, progress=False)
    assert feats.shape == (36, 16 + 1 + 2)
    assert info["centre_columns"] == 1 and info["position_columns"] == 2
    np.testing.assert_allclose(feats[:, 16], centre_pixels(c, 1)[:, 0])
    np.testing.assert_allclose(feats[:, 17:], standardise(c.positions))
    off = parse_config({**raw, "surrogate": {"position": True}})
    assert surrogate_inputs(c, off, seed=0, progress=False)[0].shape == (36, 18)


def test_constant_columns_are_centred_not_divided_by_zero():
    out = standardise(np.array([[1.0, 2.0], [1.0, 4.0]]))
    assert np.all(np.isfinite(out)) and out[:, 0].tolist() == [0.0, 0.0]


def test_device_resolution():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_clip_channels_clips_each_channel_to_its_own_percentiles():
    rng = np.random.default_rng(1)
    patches = rng.normal(size=(200, 2, 4, 4)).astype(np.float32)
    patches[:, 1] *= 100.0
    patches[0, 0, 0, 0] = 1e4  # one hot pixel in channel 0
    out = clip_channels(patches, 1.0)
    assert out.shape == patches.shape and out.dtype == np.float32
    for c in range(2):
        lo, hi = np.percentile(patches[:, c], [1.0, 99.0])
        assert out[:, c].max() == pytest.approx(hi, rel=1e-6)
        assert out[:, c].min() == pytest.approx(lo, rel=1e-6)
        inside = (patches[:, c] > lo) & (patches[:, c] < hi)
        np.testing.assert_array_equal(out[:, c][inside], patches[:, c][inside])
    assert clip_channels(patches, 0.0) is patches


def _spy_on_embedders(monkeypatch) -> list:
    """Every model :func:`embed_candidates` makes, in order."""
    import aexp.models as models

    made = []
    real = models.build_embedder

    def spy(section, input_shape, **where):
        made.append(real(section, input_shape, **where))
        return made[-1]

    monkeypatch.setattr(models, "build_embedder", spy)
    return made


def test_embedder_sees_clipped_patches_and_the_configured_noise(monkeypatch):
    made = _spy_on_embedders(monkeypatch)
    c = _candidates()
    c.patches[0, 0, 1, 1] = 1e3  # a bright outlier that would set the scaling's range
    cfg = RVAEEmbedderConfig(epochs=1, clip_percentile=2.0, noise_std=0.05)
    f, _ = embed_candidates(c, cfg, seed=0, progress=False)
    model = made[-1]
    assert model.noise_std == 0.05
    hi = np.percentile(c.patches, 98.0)
    assert float(model.data_min_[0] + model.data_range_[0]) == pytest.approx(hi, rel=1e-5)
    assert f.shape == (36, 5) and np.all(np.isfinite(f))


def test_wide_rotation_options_reach_the_rvae(monkeypatch):
    made = _spy_on_embedders(monkeypatch)
    cfg = RVAEEmbedderConfig(epochs=2, orientation=True, equivariance=2.0, rotation_prior_warmup=1)
    f, _ = embed_candidates(_candidates(), cfg, seed=0, progress=False)
    params = made[-1].get_params()
    assert (params["orientation"], params["equivariance"], params["rotation_prior_warmup"]) == (
        True,
        2.0,
        1,
    )
    assert f.shape == (36, 5) and np.all(np.isfinite(f))
    _, info = embed_candidates(_candidates(), cfg, seed=0, progress=False)
    z = made[-1].encode(np.asarray(_candidates().patches))
    np.testing.assert_allclose(info["latent_spread"], z.std(axis=0), rtol=1e-5)
    embed_candidates(_candidates(), with_kind(cfg, "vae"), seed=0, progress=False)
    assert "orientation" not in made[-1].get_params()  # a plain VAE has no angle to orient


def test_context_views_get_their_own_columns_after_the_patch_features():
    from dataclasses import replace

    c = _candidates()
    wide = replace(c, context=c.patches[:, :, ::-1].copy())
    f, info = embed_candidates(wide, NoEmbedderConfig(), seed=0, progress=False)
    assert f.shape == (36, 32) and info["dim"] == 32 and info["context"]["dim"] == 16
    np.testing.assert_allclose(f[:, 16:], standardise(wide.context.reshape(36, -1)))
    cfg = RVAEEmbedderConfig(latent_dim=2, epochs=1, hidden=8)
    f, info = embed_candidates(wide, cfg, seed=0, progress=False)
    assert f.shape == (36, 10) and len(info["context"]["latent_spread"]) == 5


def test_a_collapsed_embedding_is_reported_and_recorded():
    c = _candidates()
    flat = replace_patches(c, np.ones_like(c.patches))  # nothing to tell the patches apart
    cfg = RVAEEmbedderConfig(latent_dim=2, epochs=1, hidden=8)
    with pytest.warns(UserWarning, match="collapsed.*clip_percentile"):
        _, info = embed_candidates(flat, cfg, seed=0, progress=False)
    assert info["collapsed"] is True
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, info = embed_candidates(c, RVAEEmbedderConfig(latent_dim=2, epochs=3, hidden=8), seed=0,
                                   progress=False)
    assert info["collapsed"] is False


def replace_patches(c, patches):
    from dataclasses import replace

    return replace(c, patches=patches)


def test_brightness_classes_split_species_by_brightness_whatever_their_share():
    from aexp.features import brightness_classes

    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.4, 0.05, 600), rng.normal(1.0, 0.08, 600), rng.normal(2.6, 0.2, 20)])
    classes = brightness_classes(values, 3)
    assert np.bincount(classes).tolist() == [600, 600, 20]  # the rare bright class keeps a class of its own
    assert brightness_classes(np.ones(4), 2).tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="at least k = 3"):
        brightness_classes(np.ones(2), 3)


def test_neighbour_counts_count_a_class_within_a_radius_and_see_a_vacancy():
    from aexp.config import NeighbourCount
    from aexp.features import neighbour_counts
    from aexp.types import Candidates

    rows, cols = np.mgrid[0:40:4, 0:40:4]
    pixels = np.stack([rows.ravel(), cols.ravel()], 1).astype(float)  # a square lattice, 4 px apart
    bright = np.zeros(len(pixels), bool)
    bright[[0, 99]] = True  # the corners (0, 0) and (36, 36) hold a heavy atom
    patches = np.where(bright, 3.0, 1.0)[:, None, None, None] * np.ones((1, 1, 5, 5))
    keep = np.arange(len(pixels)) != 53  # a vacancy at (20, 12)
    c = Candidates(positions=pixels[keep] * 1e-10, pixels=pixels[keep], patches=patches[keep].astype(np.float32))
    counts = [NeighbourCount(brightness=0, radius_px=4.5), NeighbourCount(brightness=1, radius_px=6)]
    out = neighbour_counts(c, counts, 2)
    assert out.shape == (len(c), 2)
    at = {tuple(p): v for p, v in zip(c.pixels.astype(int).tolist(), out)}
    assert at[(20, 16)][0] < at[(28, 28)][0]  # one dim neighbour fewer next to the vacancy
    assert at[(20, 16)][0] == pytest.approx(at[(20, 8)][0])  # both lost the same one
    assert at[(4, 0)][1] > at[(20, 20)][1]  # next to a heavy atom
    assert at[(0, 0)][1] == pytest.approx(at[(20, 20)][1])  # an atom does not count itself


def test_surrogate_inputs_put_neighbour_counts_before_the_position(tiny_config):
    from aexp.features import neighbour_counts
    from aexp.types import Candidates

    rows, cols = np.mgrid[0:24:4, 0:24:4]
    pixels = np.stack([rows.ravel(), cols.ravel()], 1).astype(float)
    patches = np.where(np.arange(36) % 5 == 0, 3.0, 1.0)[:, None, None, None] * np.ones((1, 1, 5, 5))
    c = Candidates(positions=pixels * 1e-10, pixels=pixels, patches=patches.astype(np.float32))
    counts = [{"brightness": 0, "radius_px": 4.5}, {"brightness": 1, "radius_px": 6}]
    raw = tiny_config(embedder="none", candidates={"mode": "atoms", "patch_size": 5},
                      surrogate={"neighbour_counts": counts, "brightness_classes": 2, "position": True})
    cfg = parse_config(raw)
    feats, info = surrogate_inputs(c, cfg, seed=0, progress=False)
    assert feats.shape == (36, 25 + 2 + 2)
    assert info["neighbour_columns"] == 2 and info["position_columns"] == 2
    np.testing.assert_allclose(feats[:, 25:27], neighbour_counts(c, cfg.surrogate.neighbour_counts, 2))
    np.testing.assert_allclose(feats[:, 27:], standardise(c.positions))


def test_the_embedder_trains_on_a_seeded_subsample_and_encodes_every_candidate(monkeypatch):
    from aexp.features import training_subsample

    idx = training_subsample(36, 20, seed=3)
    assert len(set(idx.tolist())) == 20 and np.all(np.diff(idx) > 0) and idx.max() < 36
    np.testing.assert_array_equal(idx, training_subsample(36, 20, seed=3))
    assert not np.array_equal(idx, training_subsample(36, 20, seed=4))
    made = _spy_on_embedders(monkeypatch)
    seen = []
    import aexp.models.rvae as rvae_module

    real_fit = rvae_module.RVAE.fit

    def fit(self, patches, **kw):
        seen.append(np.asarray(patches).copy())
        return real_fit(self, patches, **kw)

    monkeypatch.setattr(rvae_module.RVAE, "fit", fit)
    c = _candidates()
    cfg = RVAEEmbedderConfig(epochs=1, hidden=8, train_subsample=20)
    f, info = embed_candidates(c, cfg, seed=3, progress=False)
    assert f.shape[0] == 36 and info["trained_on"] == 20  # every candidate encoded, the subsample recorded
    assert len(seen[-1]) == 20
    np.testing.assert_allclose(seen[-1], c.patches[idx], rtol=1e-6)  # clipping off: the patches themselves
    assert made[-1] is not None
    _, whole = embed_candidates(c, cfg.model_copy(update={"train_subsample": None}), seed=3, progress=False)
    assert "trained_on" not in whole and len(seen[-1]) == 36
