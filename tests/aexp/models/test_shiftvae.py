import numpy as np
import pytest
import torch

from aexp.models.rvae import RVAE
from aexp.models.shiftvae import ShiftDecoder1d, ShiftVAE

LENGTH = 64


def shifted_spectra(n, *, max_shift=0.3, noise=0.03, seed=0, length=LENGTH):
    """A single peak (class 0) or a doublet (class 1) moved right by a known shift.

    Returns spectra ``n x length`` (float32), shifts (grid units: the axis spans [-1, 1]) and
    classes.
    """
    rng = np.random.default_rng(seed)
    shifts = rng.uniform(-max_shift, max_shift, n)
    classes = rng.integers(2, size=n)
    t = np.linspace(-1, 1, length)[None, :] - shifts[:, None]
    peak = lambda centre, width: np.exp(-((t - centre) ** 2) / (2 * width**2))  # noqa: E731
    spectra = np.where(classes[:, None] == 0, peak(0.0, 0.12), 0.8 * peak(-0.2, 0.06) + 0.8 * peak(0.2, 0.06))
    spectra += noise * rng.standard_normal(spectra.shape)
    return spectra.astype(np.float32), shifts, classes


@pytest.fixture(scope="module")
def data():
    return shifted_spectra(256, seed=1)


@pytest.fixture(scope="module")
def fitted(data):
    X, _, _ = data
    return ShiftVAE(input_shape=(LENGTH,), latent_dim=2, hidden=16).fit(
        X, epochs=40, batch_size=32, progress=False
    )


def test_shift_latent_tracks_true_shift(fitted, data):
    X, shifts, _ = data
    z = fitted.encode(X)
    assert fitted.latent_names == ["shift", "z1", "z2"] and z.shape == (256, 3)
    r = np.corrcoef(z[:, 0], shifts)[0, 1]
    assert r <= -0.95, r  # the decoder draws at t + shift: content moved right has a negative shift


def test_decoded_shift_moves_the_spectrum(fitted):
    z = np.zeros((2, 3))
    z[1, 0] = 0.25  # shift by 0.25 grid units: features move 0.25 * (L - 1) / 2 = ~8 channels left
    spectra = fitted.decode(z)
    assert spectra.shape == (2, LENGTH)
    lag = np.argmax(np.correlate(spectra[0] - spectra[0].mean(), spectra[1] - spectra[1].mean(), "full")) - (
        LENGTH - 1
    )
    assert 6 <= lag <= 10, lag
    np.testing.assert_allclose(fitted.decode(z[:1, 1:]), spectra[:1], atol=1e-6)  # content only
    with pytest.raises(ValueError, match=r"z must have shape \(n, 2\) .* or \(n, 3\)"):
        fitted.decode(np.zeros((1, 4)))


def test_decoder_grid_follows_the_shift():
    dec = ShiftDecoder1d(1, 9, latent_dim=1, hidden=4, layers=0)
    z = torch.zeros(2, 1)
    shifted = dec(z, torch.tensor([0.0, 0.25]))
    np.testing.assert_allclose(shifted[1, 0, :-1].detach(), shifted[0, 0, 1:].detach(), atol=1e-6)


def test_multichannel_spectra_keep_their_channels(tmp_path):
    X, _, _ = shifted_spectra(32, seed=2, length=16)
    X2 = np.stack([X, 5 * X + 2], axis=1)
    model = ShiftVAE((2, 16), hidden=8, encoder_hidden=16).fit(X2, epochs=2, batch_size=8, progress=False)
    assert model.decode(np.zeros((3, 2))).shape == (3, 2, 16)
    model.save(tmp_path / "s.pt")
    loaded = ShiftVAE.load(tmp_path / "s.pt")
    np.testing.assert_array_equal(loaded.encode(X2), model.encode(X2))
    with pytest.raises(ValueError, match="holds a ShiftVAE, not a RVAE"):
        RVAE.load(tmp_path / "s.pt")


def test_same_seed_same_model():
    X, _, _ = shifted_spectra(32, seed=3, length=16)
    fit = lambda seed: ShiftVAE((16,), hidden=8, encoder_hidden=16).fit(  # noqa: E731
        X, epochs=2, batch_size=8, seed=seed, progress=False
    )
    np.testing.assert_array_equal(fit(5).encode(X), fit(5).encode(X))
    assert not np.array_equal(fit(5).encode(X), fit(6).encode(X))


@pytest.mark.parametrize(
    ("shape", "X", "message"),
    [
        ((16,), np.zeros((8, 17)), r"X must have shape \(N, 16\)"),
        ((16,), np.zeros((8, 1, 16)), r"X must have shape \(N, 16\)"),
        ((16,), np.full((8, 16), np.inf), "NaN or inf in 8 of 8"),
        ((4, 4, 4), np.zeros((8, 4, 4, 4)), r"input_shape must be \(L,\) or \(C, L\)"),
        ((16,), np.zeros((8, 16), dtype=complex), "complex"),
    ],
)
def test_bad_input_raises(shape, X, message):
    with pytest.raises(ValueError, match=message):
        ShiftVAE(shape).fit(X, progress=False)


def test_bad_shift_prior_raises():
    with pytest.raises(ValueError, match="shift_prior"):
        ShiftVAE((16,), shift_prior=-1.0).fit(np.zeros((4, 16)), progress=False)
