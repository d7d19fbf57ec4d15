import math

import numpy as np
import pytest
import torch
from test_rvae import circular_correlation, glyph_patches, threshold_purity

from aexp.models.decoders import CoordinateDecoder
from aexp.models.rvae import RVAE
from aexp.models.skiprvae import SkipCoordinateDecoder, SkipRVAE

SIZE = 16


def test_without_skips_the_decoder_is_the_rvae_decoder():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        reference = CoordinateDecoder((2, 9, 7), latent_dim=3, hidden=8, layers=2)
        skip = SkipCoordinateDecoder((2, 9, 7), latent_dim=3, hidden=8, layers=2)
    missing, unexpected = skip.load_state_dict(reference.state_dict(), strict=False)
    assert not unexpected and all(name.startswith(("skips", "out_skip")) for name in missing)
    with torch.no_grad():
        for layer in [*skip.skips, skip.out_skip]:
            layer.weight.zero_()
        z, angle, shift = torch.randn(4, 3), torch.tensor([0.0, 0.5, -2.0, math.pi]), 0.2 * torch.randn(4, 2)
        torch.testing.assert_close(
            skip(z, angle, shift), reference(z, angle=angle, shift=shift), atol=1e-5, rtol=1e-5
        )
        torch.testing.assert_close(skip(z), reference(z), atol=1e-5, rtol=1e-5)
        # With skips, z changes the output of the last layer directly.
        skip.out_skip.weight.fill_(1.0)
        assert not torch.allclose(skip(z), reference(z))


@pytest.fixture(scope="module")
def glyphs():
    return glyph_patches(384, seed=1)


@pytest.fixture(scope="module")
def fitted(glyphs):
    X, _, _ = glyphs
    return SkipRVAE(input_shape=(SIZE, SIZE), latent_dim=2).fit(X, epochs=20, batch_size=32, progress=False)


def test_angle_latent_tracks_rotation_and_content_separates_classes(fitted, glyphs):
    X, angles, labels = glyphs
    z = fitted.encode(X)
    assert fitted.latent_names == ["angle", "dx", "dy", "z1", "z2"]
    for k in (0, 1):  # each class may settle on its own canonical orientation
        sel = labels == k
        assert abs(circular_correlation(z[sel, 0], angles[sel])) >= 0.9
    assert threshold_purity(z[:, 3:], labels) >= 0.9


def test_skips_start_closed_and_open_in_training(fitted):
    fresh = SkipCoordinateDecoder((1, 8, 8), latent_dim=2)
    assert all(not layer.weight.any() for layer in [*fresh.skips, fresh.out_skip])
    decoder = fitted.network_.decoder
    assert all(layer.weight.abs().max() > 1e-3 for layer in [*decoder.skips, decoder.out_skip])


def test_save_load_and_type_checks(fitted, glyphs, tmp_path):
    X, _, _ = glyphs
    fitted.save(tmp_path / "skip.pt")
    loaded = SkipRVAE.load(tmp_path / "skip.pt")
    np.testing.assert_array_equal(loaded.encode(X[:20]), fitted.encode(X[:20]))
    np.testing.assert_array_equal(loaded.decode([[0.3, -0.1]]), fitted.decode([[0.3, -0.1]]))
    with pytest.raises(ValueError, match="holds a SkipRVAE, not a RVAE"):
        RVAE.load(tmp_path / "skip.pt")


def test_same_seed_same_model_and_bad_input():
    X, _, _ = glyph_patches(32, size=8, seed=2)
    fit = lambda seed: SkipRVAE((8, 8), hidden=8, encoder_hidden=16).fit(  # noqa: E731
        X, epochs=2, batch_size=8, seed=seed, progress=False
    )
    np.testing.assert_array_equal(fit(0).encode(X), fit(0).encode(X))
    assert not np.array_equal(fit(0).encode(X), fit(1).encode(X))
    with pytest.raises(ValueError, match=r"shape \(N, 8, 8\)"):
        SkipRVAE((8, 8)).fit(np.zeros((4, 9, 8)), progress=False)
    bad = X.copy()
    bad[5, 0, 0] = np.nan
    with pytest.raises(ValueError, match="row 5"):
        SkipRVAE((8, 8)).fit(bad, progress=False)
