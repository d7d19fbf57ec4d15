import numpy as np
import pytest
import torch

from aexp.datasets import make_cards
from aexp.models import VAE, NotFittedError
from aexp.models.base import ConvEncoder


@pytest.fixture(scope="module")
def cards():
    return make_cards(12, rotation_deg=10, shear_deg=1, size=16, seed=0)


@pytest.mark.parametrize("encoder", ["mlp", "conv"])
def test_fit_learns_encode_decode_and_round_trip(encoder, cards, tmp_path):
    model = VAE(input_shape=(16, 16), latent_dim=2, hidden=16, decoder_layers=1, encoder=encoder)
    model.fit(cards.images, epochs=30, batch_size=12, seed=0, progress=False)
    rec = model.history_["reconstruction"]
    assert rec[-1] < rec[0]
    z = model.encode(cards.images)
    assert z.shape == (48, 2) and model.latent_names == ["z1", "z2"] and model.geometric_names == []
    recon = model.decode(z)
    assert recon.shape == (48, 16, 16)
    blank = np.mean(cards.images**2)  # the error of drawing nothing
    assert np.mean((recon - cards.images) ** 2) < 0.5 * blank
    model.save(tmp_path / "vae.pt")
    loaded = VAE.load(tmp_path / "vae.pt")
    np.testing.assert_array_equal(loaded.encode(cards.images), z)
    assert loaded.encoder == encoder and list(loaded.input_shape) == [16, 16]


def test_same_seed_same_model(cards):
    a = VAE(input_shape=(16, 16), hidden=8, decoder_layers=0).fit(cards.images, epochs=2, seed=4, progress=False)
    b = VAE(input_shape=(16, 16), hidden=8, decoder_layers=0).fit(cards.images, epochs=2, seed=4, progress=False)
    np.testing.assert_array_equal(a.encode(cards.images), b.encode(cards.images))


@pytest.mark.parametrize("shape", [(1, 16, 16), (3, 15, 9), (2, 8, 8)])
def test_conv_encoder_takes_any_patch_size(shape):
    mean, log_var = ConvEncoder(shape, hidden=8, n_latents=3)(torch.zeros(5, *shape))
    assert mean.shape == (5, 3) and log_var.shape == (5, 3)
    assert torch.all(log_var < -2)  # starts with small posterior spread


def test_unknown_encoder_is_named(cards):
    with pytest.raises(ValueError, match="encoder"):
        VAE(input_shape=(16, 16), encoder="transformer").fit(cards.images, epochs=1, progress=False)


def test_not_fitted():
    with pytest.raises(NotFittedError):
        VAE(input_shape=(16, 16)).encode(np.zeros((2, 16, 16)))
