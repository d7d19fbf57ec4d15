import numpy as np
import pytest
import torch

from aexp.models.cvae import CVAE
from aexp.models.ved import VED, im2spec, spec2im

SIZE, LENGTH = 12, 48


def blob_pairs(n, seed=0, noise=0.03):
    """Patches of a round blob whose width ``s`` sets where the spectrum's peak sits.

    Returns patches ``n x SIZE x SIZE``, spectra ``n x LENGTH`` (float32) and the true peak
    channel of each spectrum.
    """
    rng = np.random.default_rng(seed)
    width = rng.uniform(0.15, 0.6, n)
    c = np.linspace(-1, 1, SIZE)
    r2 = c[:, None] ** 2 + c[None, :] ** 2
    patches = np.exp(-r2[None] / (2 * width[:, None, None] ** 2))
    peak = 8 + (width - 0.15) / 0.45 * 30  # channel 8..38
    channels = np.arange(LENGTH)
    spectra = 5.0 * np.exp(-((channels[None] - peak[:, None]) ** 2) / (2 * 2.5**2)) + 1.0
    patches += noise * rng.standard_normal(patches.shape)
    spectra += 5 * noise * rng.standard_normal(spectra.shape)
    return patches.astype(np.float32), spectra.astype(np.float32), peak


@pytest.fixture(scope="module")
def pairs():
    return blob_pairs(400, seed=1), blob_pairs(200, seed=2)


@pytest.fixture(scope="module")
def fitted_im2spec(pairs):
    (X, S, _), _ = pairs
    model = im2spec((SIZE, SIZE), LENGTH, latent_dim=2)
    return model.fit(X, S, epochs=30, batch_size=32, progress=False)


def test_im2spec_predicts_the_peak_on_held_out_patches(fitted_im2spec, pairs):
    (_, S, _), (X_val, S_val, peak_val) = pairs
    predicted = fitted_im2spec.predict(X_val)
    assert predicted.shape == (200, LENGTH)
    error = np.abs(predicted.argmax(axis=1) - peak_val).mean()
    baseline = np.abs(S.mean(axis=0).argmax() - peak_val).mean()  # the mean training spectrum
    assert error < 0.25 * baseline, (error, baseline)
    assert np.mean((predicted - S_val) ** 2) < 0.5 * np.mean((S.mean(axis=0) - S_val) ** 2)


def test_code_and_decode(fitted_im2spec, pairs):
    (X, _, _), _ = pairs
    z = fitted_im2spec.encode(X[:7])
    assert z.shape == (7, 2) and fitted_im2spec.latent_names == ["z1", "z2"]
    np.testing.assert_allclose(fitted_im2spec.decode(z), fitted_im2spec.predict(X[:7]), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"z must have shape \(n, 2\)"):
        fitted_im2spec.decode(np.zeros((2, 3)))


def test_spec2im_draws_the_blob_of_the_spectrum(pairs):
    (X, S, _), (X_val, S_val, _) = pairs
    model = spec2im(LENGTH, (SIZE, SIZE), latent_dim=2).fit(S, X, epochs=30, batch_size=32, progress=False)
    images = model.predict(S_val)
    assert images.shape == (200, SIZE, SIZE)
    assert np.mean((images - X_val) ** 2) < 0.3 * np.mean((X.mean(axis=0) - X_val) ** 2)


def test_multichannel_patches_and_save_load(tmp_path):
    X, S, _ = blob_pairs(40, seed=3)
    X2 = np.stack([X, 10 * X], axis=1)
    model = VED((2, SIZE, SIZE), (LENGTH,), hidden=16, encoder_hidden=16).fit(X2, S, epochs=2, progress=False)
    model.save(tmp_path / "ved.pt")
    loaded = VED.load(tmp_path / "ved.pt")
    np.testing.assert_array_equal(loaded.encode(X2), model.encode(X2))
    np.testing.assert_array_equal(loaded.predict(X2), model.predict(X2))
    # the outputs' scaling travels with the weights
    np.testing.assert_allclose(loaded.network_.output_min.numpy(), [S.min()], rtol=1e-6)
    np.testing.assert_allclose(loaded.network_.output_range.numpy(), [np.ptp(S)], rtol=1e-5)
    with pytest.raises(ValueError, match="holds a VED, not a CVAE"):
        CVAE.load(tmp_path / "ved.pt")


def test_same_seed_same_model():
    X, S, _ = blob_pairs(32, seed=4)
    fit = lambda seed: im2spec((SIZE, SIZE), LENGTH, hidden=8, encoder_hidden=8).fit(  # noqa: E731
        X, S, epochs=2, batch_size=8, seed=seed, progress=False
    )
    np.testing.assert_array_equal(fit(0).encode(X), fit(0).encode(X))
    assert not np.array_equal(fit(0).encode(X), fit(1).encode(X))
    assert torch.get_default_dtype() == torch.float32


@pytest.mark.parametrize(
    ("make", "X", "y", "message"),
    [
        (lambda: im2spec((SIZE, SIZE), LENGTH), np.zeros((8, SIZE, SIZE)), None, "y is required"),
        (
            lambda: im2spec((SIZE, SIZE), LENGTH),
            np.zeros((8, SIZE, SIZE)),
            np.zeros((7, LENGTH)),
            r"y must have shape \(8, 48\)",
        ),
        (
            lambda: im2spec((SIZE, SIZE), LENGTH),
            np.zeros((8, SIZE, SIZE)),
            np.full((8, LENGTH), np.nan),
            "y holds NaN or inf in 8 of 8",
        ),
        (
            lambda: im2spec((SIZE, SIZE), LENGTH),
            np.zeros((8, LENGTH)),
            np.zeros((8, LENGTH)),
            r"X must have shape",
        ),
        (
            lambda: spec2im(LENGTH, (SIZE, SIZE)),
            np.zeros((8, LENGTH)),
            np.zeros((8, SIZE)),
            r"y must have shape",
        ),
        (lambda: VED((LENGTH,), (0, 3)), np.zeros((8, LENGTH)), np.zeros((8, 0, 3)), "output_shape"),
        (lambda: VED((2, 3, 4, 5), (3,)), np.zeros((8, 2, 3, 4, 5)), np.zeros((8, 3)), "input_shape"),
    ],
)
def test_bad_input_raises(make, X, y, message):
    with pytest.raises(ValueError, match=message):
        make().fit(X, y, progress=False)


def test_factories_check_patch_shape():
    with pytest.raises(ValueError, match="patch_shape"):
        im2spec((SIZE,), LENGTH)
    with pytest.raises(ValueError, match="patch_shape"):
        spec2im(LENGTH, (SIZE,))
