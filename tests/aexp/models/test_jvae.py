import math

import numpy as np
import pytest
import torch

from aexp.datasets import make_cards
from aexp.models import JRVAE, JVAE, RVAE


@pytest.fixture(scope="module")
def cards():
    return make_cards(8, rotation_deg=10, shear_deg=1, size=16, seed=2)


@pytest.mark.parametrize("discrete", ["gumbel", "enumerate"])
def test_fit_encode_predict_round_trip(discrete, cards, tmp_path):
    model = JRVAE(input_shape=(16, 16), latent_dim=1, n_classes=4, discrete=discrete, hidden=8, decoder_layers=1)
    model.fit(cards.images, epochs=3, batch_size=8, seed=0, progress=False)
    assert model.latent_names == ["angle", "dx", "dy", "z1", "p_class1", "p_class2", "p_class3", "p_class4"]
    z = model.encode(cards.images)
    assert z.shape == (32, 8)
    np.testing.assert_allclose(z[:, 4:].sum(axis=1), 1.0, atol=1e-5)
    assert set(model.predict(cards.images)) <= {0, 1, 2, 3}
    assert {"penalty_capacity", "penalty_balance", "class_kl", "kl_angle", "kl_content"} <= set(model.history_)
    model.save(tmp_path / "j.pt")
    np.testing.assert_array_equal(JRVAE.load(tmp_path / "j.pt").encode(cards.images), z)


def test_temperature_and_capacity_schedules():
    model = JVAE(input_shape=(8, 8), n_classes=4, temperature=(1.0, 0.5), capacity_epochs=4)
    seen = []
    for epoch in range(5):
        model._start_epoch(epoch, 5)
        seen.append((model._temperature, model._capacity))
    assert seen[0] == (1.0, 0.0)
    assert seen[-1][0] == pytest.approx(0.5) and seen[2][0] == pytest.approx(0.5**0.5)
    assert seen[2][1] == pytest.approx(0.5 * math.log(4)) and seen[4][1] == pytest.approx(math.log(4))


def test_enumeration_is_the_exact_expectation_over_classes(cards):
    model = JVAE(input_shape=(16, 16), latent_dim=1, n_classes=3, discrete="enumerate", hidden=8, decoder_layers=0)
    model.fit(cards.images, epochs=1, progress=False)
    model._start_epoch(0, 1)
    net = model.network_
    x = model._normalise(torch.as_tensor(cards.images[:5, None]))
    noise = torch.Generator().manual_seed(3)
    terms = model._loss_terms(net, x, noise)
    # the same draw of the continuous sample, by hand
    mean, log_var = net.encode(x)
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(3))
    sample = mean + eps * torch.exp(0.5 * log_var)
    q = torch.softmax(net.classify(x), dim=1)
    expected = sum(
        q[:, k] * model._reconstruction(net.decode(torch.cat([sample, torch.eye(3)[k].expand(5, 3)], 1)), x)
        for k in range(3)
    ).mean()
    torch.testing.assert_close(terms["reconstruction"], expected)


def test_decode_takes_probabilities_or_a_class_index(cards):
    model = JVAE(input_shape=(16, 16), latent_dim=1, n_classes=3, hidden=8, decoder_layers=0)
    model.fit(cards.images, epochs=1, progress=False)
    by_index = model.decode([[0.3, 2]])
    np.testing.assert_allclose(model.decode([[0.3, 0.0, 0.0, 1.0]]), by_index, atol=1e-6)
    with pytest.raises(ValueError, match="class index in 0..2"):
        model.decode([[0.3, 3]])
    with pytest.raises(ValueError, match="continuous latents and a class index"):
        model.decode([[0.3, 1, 2, 3, 4]])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_classes": 1}, "n_classes"),
        ({"discrete": "softmax"}, "discrete"),
        ({"temperature": (1.0,)}, "temperature"),
        ({"temperature": (1.0, 0.0)}, "temperature end"),
        ({"capacity_gamma": -1}, "capacity_gamma"),
    ],
)
def test_bad_hyperparameters_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        JVAE(input_shape=(8, 8), **kwargs).fit(np.random.rand(4, 8, 8), epochs=1, progress=False)


def test_class_can_be_the_only_content(cards):
    model = JVAE(input_shape=(16, 16), latent_dim=0, n_classes=3, discrete="enumerate", hidden=8, decoder_layers=0)
    model.fit(cards.images, epochs=1, progress=False)
    assert model.latent_names == ["p_class1", "p_class2", "p_class3"]
    assert model.decode([[0], [2]]).shape == (2, 16, 16)
    with pytest.raises(ValueError, match="latent_dim must be an integer >= 1"):
        RVAE(input_shape=(16, 16), latent_dim=0).fit(cards.images, epochs=1, progress=False)


def test_jrvae_classes_are_the_four_suits_quick(one_thread):
    from aexp.models.metrics import cluster_purity

    cards = make_cards(100, rotation_deg=12, shear_deg=1, size=24, seed=0)
    model = JRVAE(input_shape=(24, 24), latent_dim=0, n_classes=4, temperature=(1.0, 0.3), capacity_epochs=24,
                  noise_std=0.15, hidden=16, decoder_layers=1)
    model.fit(cards.images, epochs=80, batch_size=32, seed=0, progress=False)
    assert cluster_purity(model.predict(cards.images), cards.label) >= 0.9  # 1.0 measured


@pytest.mark.slow
def test_jrvae_classes_are_the_four_suits():
    from aexp.models.metrics import cluster_purity

    cards = make_cards(250, rotation_deg=12, shear_deg=1, size=32, seed=0)
    model = JRVAE(input_shape=(32, 32), latent_dim=0, n_classes=4, temperature=(1.0, 0.3), capacity_epochs=30,
                  noise_std=0.2)
    model.fit(cards.images, epochs=100, seed=0, progress=False)
    assert cluster_purity(model.predict(cards.images), cards.label) >= 0.9


def test_jrvae_geometric_latents_and_priors_are_the_rvaes():
    for translation, scale in [(True, False), (False, True), (True, True)]:
        settings = dict(translation=translation, scale=scale, rotation_prior=0.7, translation_prior=0.2, scale_prior=0.3)
        joint = JRVAE(input_shape=(8, 8), latent_dim=2, n_classes=3, **settings)
        plain = RVAE(input_shape=(8, 8), latent_dim=2, **settings)
        assert joint.geometric_names == plain.geometric_names
        assert joint._latent_priors() == plain._latent_priors()
    # angle, dx+dy (one term, prior in latent units: 0.2 / SHIFT_SCALE), then the content
    assert JRVAE(input_shape=(8, 8), translation_prior=0.2, rotation_prior=0.7)._latent_priors() == [
        ("kl_angle", slice(0, 1), 0.7), ("kl_shift", slice(1, 3), pytest.approx(2.0)), ("kl_content", slice(3, None), 1.0)
    ]
