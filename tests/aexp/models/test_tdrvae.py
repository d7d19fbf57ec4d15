import numpy as np
import pytest

from aexp.models.rvae import RVAE
from aexp.models.tdrvae import time_delay_patches

SPACING, PATCH = 8, 8


def blinking_sites(n_frames=9, sites_per_side=8, seed=0, noise=0.05):
    """Frames of a square lattice of round spots; half of the sites blink (on, off, on, ...,
    random phase), the others stay on.

    Returns frames ``T x H x W`` (float32), the site centres ``M x 2`` and which sites blink.
    """
    rng = np.random.default_rng(seed)
    size = SPACING * sites_per_side
    centres = np.array(
        [
            (SPACING // 2 + SPACING * i, SPACING // 2 + SPACING * j)
            for i in range(sites_per_side)
            for j in range(sites_per_side)
        ]
    )
    blinks = rng.permutation(len(centres)) < len(centres) // 2
    phase = rng.integers(2, size=len(centres))
    rr, cc = np.mgrid[:size, :size]
    frames = np.zeros((n_frames, size, size), np.float32)
    for t in range(n_frames):
        on = ~blinks | ((t + phase) % 2 == 0)
        for (r, c), lit in zip(centres, on, strict=True):
            if lit:
                frames[t] += np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * 1.5**2))
    frames += noise * rng.standard_normal(frames.shape).astype(np.float32)
    return frames, centres, blinks


def neighbour_accuracy(z, labels):
    """Leave-one-out 1-nearest-neighbour accuracy of ``labels`` in latent space."""
    d = ((z[:, None] - z[None]) ** 2).sum(axis=2)
    np.fill_diagonal(d, np.inf)
    return float((labels[d.argmin(axis=1)] == labels).mean())


def test_stacks_hold_the_three_frames_in_order():
    frames = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((5, 6, 6), np.float32)
    frames[:, 0, 0] += 100.0  # a mark in the corner
    pixels = np.array([[0, 0], [3, 3], [5, 2]])  # border pixels are kept (mirror padding)
    stacks = time_delay_patches(frames, pixels, patch_size=4, delay=2)
    assert stacks.patches.shape == (1 * 3, 3, 4, 4) and stacks.patches.dtype == np.float32
    np.testing.assert_array_equal(stacks.frame, [2, 2, 2])
    np.testing.assert_array_equal(stacks.pixel, pixels)
    np.testing.assert_array_equal(stacks.patches[1, :, 1, 1], [0.0, 2.0, 4.0])  # frames t-2, t, t+2
    assert stacks.patches[0, 0, 2, 2] == 100.0  # patch centre (p // 2) on the corner pixel

    stacks = time_delay_patches(frames, pixels, patch_size=4, delay=1)
    np.testing.assert_array_equal(stacks.frame, np.repeat([1, 2, 3], 3))  # frame by frame
    np.testing.assert_array_equal(stacks.patches[3:6, 1, 1, 1], [2.0, 2.0, 2.0])


def test_channels_of_multichannel_frames_stay_together():
    frames = np.stack([np.full((4, 5, 5), c, np.float32) for c in (1.0, 10.0)], axis=1)
    frames = frames + np.arange(4, dtype=np.float32)[:, None, None, None]
    stacks = time_delay_patches(frames, [[2, 2]], patch_size=3)
    assert stacks.patches.shape == (2, 6, 3, 3)
    np.testing.assert_array_equal(stacks.patches[0, :, 0, 0], [1, 10, 2, 11, 3, 12])


@pytest.mark.parametrize(
    ("frames", "kwargs", "message"),
    [
        (np.zeros((2, 8, 8)), {}, "2 frames; delay=1 needs at least 3"),
        (np.zeros((5, 8, 8)), {"delay": 0}, "delay must be an integer >= 1"),
        (np.zeros((5, 8)), {}, "T x H x W or T x C x H x W"),
        (np.full((5, 8, 8), np.nan), {}, "NaN or inf .first in frame 0"),
        (np.zeros((5, 8, 8), dtype=complex), {}, "real numbers"),
        (np.zeros((5, 8, 8)), {"pixels": [[9, 0]]}, "inside the survey"),
    ],
)
def test_bad_input_raises(frames, kwargs, message):
    kwargs = {"pixels": [[1, 1]], "patch_size": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        time_delay_patches(frames, **kwargs)


def test_time_delay_rvae_tells_blinking_from_static_sites():
    frames, centres, blinks = blinking_sites(seed=1)
    stacks = time_delay_patches(frames, centres, PATCH)
    labels = np.tile(blinks, len(np.unique(stacks.frame))).astype(int)
    delayed = RVAE(input_shape=(3, PATCH, PATCH), latent_dim=2, translation=False)
    z = delayed.fit(stacks.patches, epochs=15, batch_size=32, progress=False).encode(stacks.patches)
    assert neighbour_accuracy(z[:, 1:], labels) >= 0.95
    # One frame alone cannot show it: a blinking site that is on looks like a static one.
    single = stacks.patches[:, 1]
    plain = RVAE(input_shape=(PATCH, PATCH), latent_dim=2, translation=False)
    z1 = plain.fit(single, epochs=15, batch_size=32, progress=False).encode(single)
    assert neighbour_accuracy(z1[:, 1:], labels) <= 0.85
