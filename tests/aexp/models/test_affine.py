import numpy as np
import pytest

from aexp.datasets import make_cards
from aexp.models import RVAE, AffineVAE


@pytest.fixture(scope="module")
def fitted():
    cards = make_cards(10, rotation_deg=10, shear_deg=20, scale=(1.0, 1.3), size=16, seed=1)
    model = AffineVAE(input_shape=(16, 16), latent_dim=2, hidden=8, decoder_layers=1, scale=True)
    return model.fit(cards.images, epochs=3, batch_size=10, seed=0, progress=False), cards


def test_latent_order_and_loss_terms(fitted):
    model, cards = fitted
    assert model.latent_names == ["angle", "dx", "dy", "scale", "shear", "z1", "z2"]
    assert AffineVAE(input_shape=(16, 16), translation=False).latent_names == ["angle", "shear", "z1", "z2"]
    assert {"kl_angle", "kl_shift", "kl_scale", "kl_shear", "kl_content"} <= set(model.history_)
    assert model.encode(cards.images).shape == (40, 7)


def test_shear_latent_shears_the_decoded_patch(fitted):
    model, _ = fitted
    base = np.zeros((1, 7), np.float32)
    base[0, 5:] = [1.0, -0.5]
    sheared = base.copy()
    sheared[0, 4] = 0.4
    enlarged = base.copy()
    enlarged[0, 3] = 0.3
    a, b, c = model.decode(np.vstack([base, sheared, enlarged]))
    assert np.abs(a - b).max() > 1e-3 and np.abs(a - c).max() > 1e-3
    np.testing.assert_allclose(model.decode(base[:, 5:]), a[None], atol=1e-6)  # content only = zero geometry


def test_round_trip(fitted, tmp_path):
    model, cards = fitted
    model.save(tmp_path / "affine.pt")
    loaded = AffineVAE.load(tmp_path / "affine.pt")
    np.testing.assert_array_equal(loaded.encode(cards.images), model.encode(cards.images))
    assert loaded.shear_prior == model.shear_prior and loaded.scale is True


def test_rvae_scale_latent_and_bad_priors():
    assert RVAE(input_shape=(8, 8), scale=True).latent_names == ["angle", "dx", "dy", "scale", "z1", "z2"]
    with pytest.raises(ValueError, match="shear_prior"):
        AffineVAE(input_shape=(8, 8), shear_prior=0).fit(np.random.rand(4, 8, 8), epochs=1, progress=False)
    with pytest.raises(ValueError, match="scale must be True or False"):
        RVAE(input_shape=(8, 8), scale="yes").fit(np.random.rand(4, 8, 8), epochs=1, progress=False)


def _shear_correlation(n_per_suit, size, epochs, batch_size, **kwargs):
    cards = make_cards(n_per_suit, rotation_deg=12, shear_deg=20, size=size, seed=0)
    model = AffineVAE(input_shape=(size, size), latent_dim=2, **kwargs)
    model.fit(cards.images, epochs=epochs, batch_size=batch_size, seed=0, progress=False)
    shear = model.encode(cards.images)[:, model.latent_names.index("shear")]
    return abs(np.corrcoef(shear, np.tan(cards.shear))[0, 1])


def test_shear_latent_follows_true_shear_quick():
    assert _shear_correlation(60, 24, 30, 32, hidden=16, decoder_layers=1) >= 0.6


@pytest.mark.slow
def test_shear_latent_follows_true_shear_on_high_shear_cards():
    assert _shear_correlation(250, 32, 60, 128) >= 0.9
