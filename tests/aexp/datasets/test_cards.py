import math

import numpy as np
import pytest

from aexp.datasets import SUIT_SYMMETRY, SUITS, cards_regime, make_cards, semi_supervised_split
from aexp.datasets.cards import render
from aexp.models.decoders import coordinate_grid


def test_make_cards_fields_shapes_and_ranges():
    cards = make_cards(5, rotation_deg=120, shear_deg=20, scale=(1.0, 1.3), shift=0.1, size=32, seed=3)
    assert cards.images.shape == (20, 32, 32) and cards.images.dtype == np.float32
    assert list(cards.label) == [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5
    assert np.abs(cards.angle).max() <= math.radians(120) and np.abs(cards.angle).max() > math.radians(30)
    assert np.abs(cards.shear).max() <= math.radians(20)
    assert cards.scale.min() >= 1.0 and cards.scale.max() <= 1.3
    assert cards.shift.shape == (20, 2) and np.abs(cards.shift).max() <= 0.2
    assert 0.0 <= cards.images.min() and cards.images.max() == 1.0
    assert len(cards.subset(cards.label == 2)) == 5


def test_same_seed_same_cards_other_seed_other_cards():
    a, b = make_cards(3, 60, 10, seed=1, size=24), make_cards(3, 60, 10, seed=1, size=24)
    c = make_cards(3, 60, 10, seed=2, size=24)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)


def test_suits_are_distinct_glyphs_and_diamond_is_symmetric():
    upright = [render(k, 0.0, 0.0, 1.0, (0.0, 0.0), 48) for k in range(4)]
    for i in range(4):
        for j in range(i + 1, 4):
            assert np.abs(upright[i] - upright[j]).mean() > 0.01, (SUITS[i], SUITS[j])
    diamond = upright[SUITS.index("diamonds")]
    np.testing.assert_allclose(np.rot90(diamond, 2), diamond, atol=1e-6)
    heart = upright[SUITS.index("hearts")]
    assert np.abs(np.rot90(heart, 2) - heart).mean() > 0.05  # hearts point down


def test_suit_symmetry_orders_match_the_glyphs():
    for k, order in enumerate(SUIT_SYMMETRY):
        upright = render(k, 0.0, 0.0, 1.0, (0.0, 0.0), 48)
        turned = render(k, 2 * math.pi / order, 0.0, 1.0, (0.0, 0.0), 48)
        assert np.abs(turned - upright).mean() < 1e-3, SUITS[k]  # unchanged by its symmetry turn
        half = render(k, math.pi / order, 0.0, 1.0, (0.0, 0.0), 48)
        assert np.abs(half - upright).mean() > 0.02, SUITS[k]  # and by no smaller turn of that kind


def test_transform_matches_the_decoder_conventions():
    # angle pi/2 turns the glyph counter-clockwise (np.rot90), like the rVAE decoder
    heart = render(3, 0.0, 0.0, 1.0, (0.0, 0.0), 48)
    np.testing.assert_allclose(render(3, math.pi / 2, 0.0, 1.0, (0.0, 0.0), 48), np.rot90(heart), atol=1e-6)
    # a grid shift (t, 0) moves the content t * (h - 1) / 2 pixels up
    moved = render(3, 0.0, 0.0, 1.0, (0.25, 0.0), 48)
    rows = np.arange(48)
    centre = lambda im: (im.sum(1) * rows).sum() / im.sum()  # noqa: E731
    assert centre(heart) - centre(moved) == pytest.approx(0.25 * 47 / 2, abs=0.3)
    # magnification grows the glyph's area by scale^2
    big = render(3, 0.0, 0.0, 1.3, (0.0, 0.0), 48)
    assert big.sum() / heart.sum() == pytest.approx(1.69, rel=0.05)
    # shear keeps the area (det 1) but changes the image
    sheared = render(3, 0.0, math.radians(20), 1.0, (0.0, 0.0), 48)
    assert sheared.sum() == pytest.approx(heart.sum(), rel=0.03)
    assert np.abs(sheared - heart).sum() > 0.1 * heart.sum()
    assert coordinate_grid(48, 48)[0].tolist() == [-1.0, 1.0]  # the frame render() samples in


def test_regimes_and_semi_supervised_recipe():
    high = cards_regime("high", "high", n_per_suit=4, size=24)
    assert np.abs(high.angle).max() > math.radians(12) and np.abs(high.shear).max() > math.radians(1)
    low = cards_regime("low", "low", n_per_suit=4, size=24)
    assert np.abs(low.angle).max() <= math.radians(12) and np.abs(low.shear).max() <= math.radians(1)
    split = semi_supervised_split(n_labelled=3, n_unlabelled=5, n_validation=4, size=24)
    assert (len(split.labelled), len(split.unlabelled), len(split.validation)) == (12, 20, 16)
    assert np.abs(split.labelled.angle).max() <= math.radians(4)
    assert split.labelled.scale.min() >= 1.0 and split.labelled.scale.max() <= 1.3
    assert np.abs(split.unlabelled.angle).max() <= math.radians(60)
    assert np.abs(split.unlabelled.shift).max() <= 0.2 and np.abs(split.unlabelled.shift).max() > 0
    assert not np.array_equal(split.unlabelled.images[:16], split.validation.images)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"n_per_suit": 0}, "n_per_suit"),
        ({"rotation_deg": -1}, "rotation_deg"),
        ({"shear_deg": 80}, "shear_deg"),
        ({"scale": (1.3, 1.0)}, "scale"),
        ({"scale": 2}, "scale"),
        ({"shift": 0.5}, "shift"),
        ({"size": 4}, "size"),
        ({"seed": -2}, "seed"),
    ],
)
def test_bad_arguments_name_the_field(kwargs, field):
    args = {"n_per_suit": 2, "rotation_deg": 10, "shear_deg": 5} | kwargs
    with pytest.raises(ValueError, match=field):
        make_cards(**args)


def test_bad_regime_name():
    with pytest.raises(ValueError, match="rotation"):
        cards_regime("medium", "low", n_per_suit=1)
