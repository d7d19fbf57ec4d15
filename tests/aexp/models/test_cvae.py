import numpy as np
import pytest
import torch
from test_rvae import glyph_patches

from aexp.models.cvae import CVAE
from aexp.models.ssvae import SSVAE

SIZE = 16


def nearest_template(images, X, labels):
    """Class of the nearest class-mean image (pixel-wise Euclidean)."""
    templates = np.stack([X[labels == k].mean(axis=0) for k in (0, 1)])
    distances = ((images[:, None] - templates[None]) ** 2).sum(axis=(2, 3))
    return distances.argmin(axis=1)


@pytest.fixture(scope="module")
def data():
    return glyph_patches(512, max_angle_deg=20, seed=1)


@pytest.fixture(scope="module")
def fitted(data):
    X, _, labels = data
    return CVAE(input_shape=(SIZE, SIZE), condition_dim=2).fit(
        X, labels, epochs=15, batch_size=64, progress=False
    )


def test_decoding_draws_the_conditioned_class(fitted, data):
    X, _, labels = data
    z = np.concatenate([np.zeros((1, 2)), fitted.encode(X[:99], labels[:99])])
    for k in (0, 1):  # every latent point, the origin included, drawn as class 0 and as class 1
        images = fitted.decode(z, np.full(100, k))
        assert images.shape == (100, SIZE, SIZE)
        assert (nearest_template(images, X, labels) == k).mean() >= 0.95


def test_encode_decode_reconstructs(fitted, data):
    X, _, labels = data
    z = fitted.encode(X, labels)
    assert z.shape == (512, 2) and fitted.latent_names == ["z1", "z2"]
    recon = fitted.decode(z, labels)
    assert np.mean((recon - X) ** 2) < 0.5 * np.mean((X - X.mean(axis=0)) ** 2)


def test_continuous_covariate_controls_the_drawing():
    X, _, _ = glyph_patches(256, max_angle_deg=10, seed=2, noise=0.02)
    brightness = np.random.default_rng(1).uniform(0.5, 2.0, len(X)).astype(np.float32)
    X = X * brightness[:, None, None]
    model = CVAE((SIZE, SIZE), condition="continuous", condition_dim=1)
    model.fit(X, brightness, epochs=15, batch_size=32, progress=False)
    levels = np.linspace(0.6, 1.9, 6)
    images = model.decode(np.zeros((6, 2)), levels)
    assert np.corrcoef(images.max(axis=(1, 2)), levels)[0, 1] > 0.95
    assert model.encode(X[:4], brightness[:4]).shape == (4, 2)


def test_rotation_latents_and_save_load(tmp_path):
    X, _, labels = glyph_patches(64, size=8, seed=3)
    model = CVAE((8, 8), latent_dim=1, rotation=True, translation=True, hidden=8, encoder_hidden=16)
    model.fit(X, labels, epochs=2, batch_size=16, progress=False)
    assert model.latent_names == ["angle", "dx", "dy", "z1"]
    assert model.geometric_names == ["angle", "dx", "dy"]  # the prefix, as for the rVAE
    z = model.encode(X, labels)
    assert z.shape == (64, 4)
    model.save(tmp_path / "c.pt")
    loaded = CVAE.load(tmp_path / "c.pt")
    np.testing.assert_array_equal(loaded.encode(X, labels), z)
    np.testing.assert_array_equal(loaded.decode(z[:3], labels[:3]), model.decode(z[:3], labels[:3]))
    assert loaded.decode(z[:3, 3:], labels[:3]).shape == (3, 8, 8)  # content only
    with pytest.raises(ValueError, match="holds a CVAE, not a SSVAE"):
        SSVAE.load(tmp_path / "c.pt")


def test_continuous_scaling_survives_save_load(tmp_path):
    X, angles, _ = glyph_patches(48, size=8, seed=4)
    y = np.stack([angles * 50.0, angles + 3.0], axis=1)
    model = CVAE((8, 8), condition="continuous", condition_dim=2, hidden=8, encoder_hidden=16)
    model.fit(X, y, epochs=2, batch_size=16, progress=False)
    model.save(tmp_path / "c.pt")
    loaded = CVAE.load(tmp_path / "c.pt")
    np.testing.assert_array_equal(loaded.encode(X, y), model.encode(X, y))
    assert not torch.equal(loaded.network_.condition_std, torch.ones(2))


def test_same_seed_same_model():
    X, _, labels = glyph_patches(48, size=8, seed=5)
    fit = lambda seed: CVAE((8, 8), hidden=8, encoder_hidden=16).fit(  # noqa: E731
        X, labels, epochs=2, batch_size=16, seed=seed, progress=False
    )
    np.testing.assert_array_equal(fit(1).encode(X, labels), fit(1).encode(X, labels))
    assert not np.array_equal(fit(1).encode(X, labels), fit(2).encode(X, labels))


@pytest.mark.parametrize(
    ("params", "y", "message"),
    [
        ({}, None, "y is required"),
        ({}, np.zeros(9, int), r"y must have shape \(8,\)"),
        ({}, np.array([0, 1, 0, 1, 0, 1, 0, -1]), r"y\[7\] = -1 is not a class label; allowed: 0..1"),
        ({"condition": "continuous", "condition_dim": 1}, np.array([np.nan] + [0.0] * 7), "row 0 holds NaN"),
        ({"condition": "continuous", "condition_dim": 2}, np.zeros(8), r"y must have shape \(8, 2\)"),
        ({"condition": "label"}, np.zeros(8, int), "condition must be one of"),
        ({"condition_dim": 1}, np.zeros(8, int), "condition_dim"),
    ],
)
def test_bad_conditions_raise(params, y, message):
    X = np.random.default_rng(0).random((8, 8, 8))
    with pytest.raises(ValueError, match=message):
        CVAE((8, 8), **params).fit(X, y, progress=False)


def test_encode_needs_matching_conditions(fitted, data):
    X, _, labels = data
    with pytest.raises(ValueError, match=r"y must have shape \(10,\)"):
        fitted.encode(X[:10], labels[:9])
    with pytest.raises(ValueError, match="y is required"):
        fitted.encode(X[:10])
