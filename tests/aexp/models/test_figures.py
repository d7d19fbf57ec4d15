"""Traversal and scatter figures: the numbers drawn are the model's own decodings and encodings."""

import numpy as np
import pytest
from PIL import Image

from aexp.datasets import make_cards
from aexp.models import (
    EMBEDDERS,
    RVAE,
    SSVAE,
    NotFittedError,
    latent_scatter,
    latent_traversal,
    make_embedder,
)

SIZE = 8


@pytest.fixture(scope="module")
def cards():
    return make_cards(4, rotation_deg=60, shear_deg=5, size=SIZE, seed=0)


@pytest.fixture(scope="module")
def fitted(cards):
    def fit(kind, **options):
        options = {"hidden": 4, "decoder_layers": 0, "encoder_hidden": 8, **options}
        if "n_classes" in EMBEDDERS[kind]._parameter_names():  # each kind is given only what it takes
            options["n_classes"] = 4
        model = make_embedder(kind, input_shape=(SIZE, SIZE), **options)
        return model.fit(cards.images, epochs=1, progress=False)

    return {kind: fit(kind, latent_dim=3) for kind in EMBEDDERS}


def _expected_tile(model, dim_values, label=None):
    """``decode`` of one latent vector: the named content latents set, everything else 0."""
    z = np.zeros((1, model.n_latents), dtype=np.float32)
    for name, value in dim_values.items():
        z[0, model.latent_names.index(name)] = value
    if label is not None:
        z[0, model.latent_names.index(f"p_class{label + 1}")] = 1.0
    return model.decode(z)[0]


def _is_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
        assert image.size[0] > 50 and image.size[1] > 50


@pytest.mark.parametrize("kind", sorted(EMBEDDERS))
def test_traversal_tiles_are_decodings_of_the_content_grid(fitted, kind, tmp_path):
    model = fitted[kind]
    n, span = 3, 1.5
    values = np.linspace(-span, span, n)
    mosaic = latent_traversal(model, dims=(2, 0), n=n, span=span, path=tmp_path / "t.png")
    classes = list(range(4)) if kind in ("jvae", "jrvae") else [None]
    assert mosaic.shape == ((4,) if classes != [None] else ()) + (n * SIZE, n * SIZE)
    for k, label in enumerate(classes):
        panel = mosaic[k] if label is not None else mosaic
        for r in range(n):
            for c in range(n):
                tile = panel[r * SIZE : (r + 1) * SIZE, c * SIZE : (c + 1) * SIZE]
                # across: z3 from -span; down: z1 from +span; z2 and every geometric latent 0
                expected = _expected_tile(model, {"z3": values[c], "z1": values[n - 1 - r]}, label)
                np.testing.assert_allclose(tile, expected, rtol=1e-6, atol=1e-6)
    if classes != [None]:
        assert not np.allclose(mosaic[0], mosaic[1])  # the class input changes the drawing
    _is_png(tmp_path / "t.png")


def test_geometric_latents_are_held_neutral(fitted):
    """The rVAE's traversal is upright: turning the same content gives other tiles."""
    model = fitted["rvae"]
    mosaic = latent_traversal(model, n=2, span=1.0)
    z = np.array([[0.0, 0.0, 0.0, -1.0, 1.0, 0.0], [1.2, 0.0, 0.0, -1.0, 1.0, 0.0]], dtype=np.float32)
    upright, turned = model.decode(z)
    np.testing.assert_allclose(mosaic[:SIZE, :SIZE], upright, rtol=1e-6, atol=1e-6)
    assert not np.allclose(mosaic[:SIZE, :SIZE], turned, atol=1e-3)


def test_one_dim_gives_a_row_and_multichannel_shows_the_first_channel(cards, tmp_path):
    X = np.stack([cards.images, 10.0 * cards.images + 3.0], axis=1)
    model = RVAE((2, SIZE, SIZE), latent_dim=1, hidden=4, decoder_layers=0, encoder_hidden=8)
    model.fit(X, epochs=1, progress=False)
    row = latent_traversal(model, n=4, span=2.0, path=tmp_path / "row.png")
    assert row.shape == (SIZE, 4 * SIZE)
    z = np.zeros((4, 4), dtype=np.float32)
    z[:, 3] = np.linspace(-2.0, 2.0, 4)
    expected = model.decode(z)[:, 0]  # channel 0 of each tile
    np.testing.assert_allclose(row, np.concatenate(list(expected), axis=1), rtol=1e-6, atol=1e-6)
    _is_png(tmp_path / "row.png")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dims": (0, 3)}, r"dims \(0, 3\) must index the content latents z1..z3"),
        ({"dims": (1, 1)}, "two different"),
        ({"dims": (-1,)}, "must index"),
        ({"dims": "01"}, "dims must be"),
        ({"n": 1}, "n must be an integer >= 2"),
        ({"span": 0.0}, "span must be"),
    ],
)
def test_traversal_refuses_bad_arguments(fitted, kwargs, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        latent_traversal(fitted["rvae"], path=tmp_path / "bad.png", **kwargs)
    assert not (tmp_path / "bad.png").exists()


def test_unfitted_and_unsupported_models_are_refused(cards):
    with pytest.raises(NotFittedError, match="not fitted"):
        latent_traversal(RVAE((SIZE, SIZE)))
    with pytest.raises(NotFittedError, match="not fitted"):
        latent_scatter(RVAE((SIZE, SIZE)), cards.images)
    with pytest.raises(TypeError, match="SSVAE"):
        latent_traversal(SSVAE((SIZE, SIZE)))


def test_scatter_plots_the_encoded_content_and_angle(fitted, cards, tmp_path):
    model = fitted["rvae"]
    points = latent_scatter(
        model, cards.images, labels=cards.label, true_angle=cards.angle, dims=(1, 2), path=tmp_path / "s.png"
    )
    encoded = model.encode(cards.images)
    np.testing.assert_array_equal(points.content, encoded[:, [4, 5]])  # z2, z3 after angle, dx, dy
    np.testing.assert_array_equal(points.angle, encoded[:, 0])
    _is_png(tmp_path / "s.png")

    plain = latent_scatter(fitted["jvae"], cards.images, path=tmp_path / "j.png")
    np.testing.assert_array_equal(plain.content, fitted["jvae"].encode(cards.images)[:, :2])
    assert plain.angle is None
    _is_png(tmp_path / "j.png")


def test_scatter_refuses_mismatched_truths(fitted, cards):
    with pytest.raises(ValueError, match=r"labels must hold one value per patch: shape \(16,\)"):
        latent_scatter(fitted["rvae"], cards.images, labels=cards.label[:3])
    with pytest.raises(ValueError, match="true_angle"):
        latent_scatter(fitted["rvae"], cards.images, true_angle=np.zeros((16, 2)))
    with pytest.raises(ValueError, match="has no angle latent"):
        latent_scatter(fitted["vae"], cards.images, true_angle=cards.angle)
