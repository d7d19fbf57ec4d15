import math

import numpy as np
import pytest
import torch

from aexp.datasets import SUIT_SYMMETRY, make_cards
from aexp.datasets.cards import render
from aexp.models import RVAE, AffineVAE
from aexp.models.base import InvariantNetwork
from aexp.models.metrics import circular_correlation, kmeans_purity, symmetric_circular_correlation
from aexp.models.orientation import OrientedNetwork, equivariance_penalty, rotate_patches
from aexp.models.rvae import ROTATION_WARMUP_START, warmup_factor


def test_rotate_patches_turns_like_the_cards_and_the_decoder():
    heart = torch.from_numpy(render(3, 0.3, 0.0, 1.0, (0.0, 0.0), 32))[None, None]
    turned = rotate_patches(heart, torch.tensor([1.1]))[0, 0].numpy()
    expected = render(3, 0.3 + 1.1, 0.0, 1.0, (0.0, 0.0), 32)
    wrong_way = render(3, 0.3 - 1.1, 0.0, 1.0, (0.0, 0.0), 32)
    assert np.abs(turned - expected).mean() < 0.02 < np.abs(turned - wrong_way).mean()
    quarter = rotate_patches(heart, torch.tensor([math.pi / 2]))[0, 0].numpy()
    np.testing.assert_allclose(quarter, np.rot90(heart[0, 0].numpy()), atol=1e-5)


def _network(latent_dim=2):
    torch.manual_seed(0)
    return InvariantNetwork((1, 8, 8), latent_dim, ("angle", "dx", "dy"), hidden=8, decoder_layers=1)


def test_oriented_network_starts_as_the_plain_one_and_moves_the_angle_by_h():
    inner = _network()
    oriented = OrientedNetwork(inner, n_geometric=3, latent_dim=2)
    x = torch.rand(4, 1, 8, 8)
    latents = torch.randn(4, 5)
    torch.testing.assert_close(oriented.encode(x)[0], inner.encode(x)[0])  # h = 0 at the start
    torch.testing.assert_close(oriented.decode(latents), inner.decode(latents))
    with torch.no_grad():
        oriented.orientation[-1].bias.fill_(0.7)  # every object's canonical orientation: 0.7 rad
    mean, log_var = oriented.encode(x)
    inner_mean, inner_log_var = inner.encode(x)
    torch.testing.assert_close(mean[:, 0], inner_mean[:, 0] - 0.7)
    torch.testing.assert_close(mean[:, 1:], inner_mean[:, 1:])
    torch.testing.assert_close(log_var, inner_log_var)
    shifted = latents.clone()
    shifted[:, 0] += 0.7
    torch.testing.assert_close(oriented.decode(latents), inner.decode(shifted))


class _TrueAngleEncoder(torch.nn.Module):
    """Encodes a heart card by its true angle (found by search) and a constant content."""

    def encode(self, x):
        angles = torch.linspace(-math.pi, math.pi, 361)[:-1]
        templates = torch.stack(
            [torch.from_numpy(render(3, float(a), 0.0, 1.0, (0.0, 0.0), 16)) for a in angles]
        )
        errors = ((x[:, 0, None] - templates[None]) ** 2).flatten(2).sum(-1)
        angle = angles[errors.argmin(dim=1)]
        zero = torch.zeros_like(angle)
        mean = torch.stack([angle, zero, zero, torch.ones_like(angle)], 1)
        return mean, torch.zeros_like(mean)


def test_equivariance_penalty_is_small_for_an_equivariant_encoder_and_large_otherwise():
    cards = make_cards(8, 120, 0.0, size=16, seed=0).subset(slice(24, 32))  # hearts
    x = torch.from_numpy(cards.images)[:, None]
    network = _TrueAngleEncoder()
    mean, _ = network.encode(x)
    noise = torch.Generator().manual_seed(0)
    penalty = equivariance_penalty(network, x, mean, [3], noise)
    assert penalty.shape == (8,) and float(penalty.max()) < 0.01  # turned copies: angle + beta
    frozen = mean.clone()
    frozen[:, 0] = 0.0  # an encoder blind to the angle pays 1 - cos(angle + beta - 0) on average ~1
    blind = type("Blind", (), {"encode": lambda self, x: (torch.zeros(len(x), 4), None)})()
    assert float(equivariance_penalty(blind, x, frozen, [3], noise).mean()) > 0.5


def test_new_options_are_checked_and_round_trip(tmp_path):
    cards = make_cards(10, 60, 1.0, size=12, seed=0)
    for bad, match in [
        ({"orientation": 1}, "orientation must be True or False"),
        ({"equivariance": -1.0}, "equivariance must be a finite number >= 0"),
        ({"equivariance": math.nan}, "equivariance must be a finite number >= 0"),
        ({"equivariance": True}, "equivariance must be a finite number >= 0"),
        ({"rotation_prior_warmup": -1}, "rotation_prior_warmup must be an integer >= 0"),
        ({"rotation_prior_warmup": 2.5}, "rotation_prior_warmup must be an integer >= 0"),
    ]:
        with pytest.raises(ValueError, match=match):
            RVAE(input_shape=(12, 12), **bad).fit(cards.images, epochs=1, progress=False)
    model = AffineVAE(
        input_shape=(12, 12), hidden=8, orientation=True, equivariance=10.0, rotation_prior_warmup=2
    )
    model.fit(cards.images, epochs=3, progress=False)
    assert len(model.history_["penalty_equivariance"]) == 3
    model.save(tmp_path / "m.pt")
    loaded = AffineVAE.load(tmp_path / "m.pt")
    assert loaded.get_params() == model.get_params()
    np.testing.assert_allclose(loaded.encode(cards.images), model.encode(cards.images), atol=1e-6)
    plain = RVAE(input_shape=(12, 12), hidden=8).fit(cards.images, epochs=1, progress=False)
    assert "penalty_equivariance" not in plain.history_


def test_rotation_prior_warmup_widens_the_angle_prior_geometrically():
    model = RVAE(input_shape=(8, 8), rotation_prior=1.0, rotation_prior_warmup=4)
    widths = []
    for epoch in range(6):
        model._start_epoch(epoch, 6)
        widths.append(model._geometric_priors()["angle"][1])
    assert widths[0] == pytest.approx(ROTATION_WARMUP_START)
    assert widths[2] == pytest.approx(ROTATION_WARMUP_START**0.5)
    assert widths[4:] == [1.0, 1.0]
    assert all(a < b for a, b in zip(widths[:4], widths[1:5]))
    assert [warmup_factor(epoch, 0) for epoch in range(3)] == [1.0, 1.0, 1.0]


def _angle_scores(rotation_deg, seed=0, **options):
    cards = make_cards(100, rotation_deg, 1.0, size=24, seed=seed)
    model = RVAE(input_shape=(24, 24), latent_dim=2, **options)
    model.fit(cards.images, epochs=40, batch_size=32, seed=seed, progress=False)
    z = model.encode(cards.images)
    order = np.asarray(SUIT_SYMMETRY)[cards.label]
    per_suit = [
        abs(circular_correlation(z[cards.label == k, 0], cards.angle[cards.label == k])) for k in range(4)
    ]
    return {
        "global": symmetric_circular_correlation(z[:, 0], cards.angle, order),
        "per_suit": per_suit,
        "purity": kmeans_purity(z[:, 3:], cards.label),
    }


def test_orientation_gives_one_offset_for_all_suits_quick():
    # +-12 deg: each suit's angle is found either way; with the learned orientation all suits
    # share one offset, so the angle over all cards tracks the true angle too.
    scores = _angle_scores(12, orientation=True)
    assert min(scores["per_suit"]) >= 0.95
    assert scores["global"] >= 0.95


@pytest.mark.slow
def test_orientation_beats_the_plain_model_on_one_offset():
    plain, oriented = _angle_scores(12)["global"], _angle_scores(12, orientation=True)["global"]
    assert oriented >= 0.95 and oriented >= plain + 0.04


def test_equivariance_recovers_wide_rotations_quick():
    # +-120 deg: the plain rVAE loses the angle of every suit; with the equivariance penalty the
    # three asymmetric suits are recovered and the content latents separate the suits.
    scores = _angle_scores(120, orientation=True, equivariance=300.0, rotation_prior_warmup=10)
    asymmetric = [r for r, order in zip(scores["per_suit"], SUIT_SYMMETRY) if order == 1]
    assert min(asymmetric) >= 0.95
    assert scores["purity"] >= 0.9


@pytest.mark.slow
def test_plain_model_loses_wide_rotations():
    scores = _angle_scores(120)
    assert max(scores["per_suit"]) < 0.6 and scores["purity"] < 0.9


@pytest.mark.slow
def test_wide_rotation_options_on_the_benchmark_cards(one_thread):
    # python benchmarks/cards.py --size 32 --n-per-suit 250 --epochs 60 --threads 1 --rotation 120
    #     --only rvae --orientation --equivariance 1000 --rotation-prior-warmup 10
    cards = make_cards(250, 120.0, 1.0, size=32, seed=0)
    model = RVAE(
        input_shape=(32, 32), latent_dim=2, orientation=True, equivariance=1000.0, rotation_prior_warmup=10
    )
    model.fit(cards.images, epochs=60, seed=0, progress=False)
    z = model.encode(cards.images)
    order = np.asarray(SUIT_SYMMETRY)[cards.label]
    assert symmetric_circular_correlation(z[:, 0], cards.angle, order) >= 0.95
    assert kmeans_purity(z[:, 3:], cards.label) >= 0.9
