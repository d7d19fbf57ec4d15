import numpy as np
import pytest

from aexp.patches import extract_patches, grid_candidates, grid_pixels
from aexp.types import PixelTransform, Survey


def test_grid_pixels_row_major():
    px, shape = grid_pixels((5, 7), 2)
    assert shape == (3, 4)
    assert px[:5].tolist() == [[0, 0], [0, 2], [0, 4], [0, 6], [2, 0]]


def test_patch_is_centred_on_its_pixel():
    img = np.arange(100, dtype=np.float32).reshape(1, 10, 10)
    p = extract_patches(img, np.array([[4, 6]]), 5)
    assert p.shape == (1, 1, 5, 5)
    np.testing.assert_array_equal(p[0, 0], img[0, 2:7, 4:9])
    even = extract_patches(img, np.array([[4, 6]]), 4)
    assert even[0, 0, 2, 2] == img[0, 4, 6]


def test_border_patches_are_reflected_not_dropped():
    img = np.random.default_rng(0).normal(size=(2, 8, 8)).astype(np.float32)
    px, _ = grid_pixels((8, 8), 1)
    p = extract_patches(img, px, 5)
    assert p.shape == (64, 2, 5, 5)  # every pixel keeps its patch
    corner = p[0, 0]  # centred on (0, 0): row -1 mirrors row 1
    assert corner[2, 2] == img[0, 0, 0]
    np.testing.assert_array_equal(corner[1, 2:], img[0, 1, :3])


def test_grid_candidates_positions_follow_the_survey_transform():
    img = np.zeros((1, 9, 12), dtype=np.float32)
    survey = Survey(img, PixelTransform.square(1e-9, origin=(5e-9, 0.0)), ("haadf",))
    c = grid_candidates(survey, stride=3, patch_size=4)
    assert c.grid_shape == (3, 4) and len(c) == 12
    i = 1 * 4 + 2  # grid row 1, col 2 -> pixel (3, 6)
    assert c.pixels[i].tolist() == [3.0, 6.0]
    np.testing.assert_allclose(c.positions[i], [5e-9 + 6e-9, 3e-9])


def test_patch_larger_than_survey_and_unknown_channel():
    survey = Survey(np.zeros((1, 8, 8)), PixelTransform.square(1e-9), ("haadf",))
    with pytest.raises(ValueError, match="does not fit"):
        grid_candidates(survey, 1, 9)
    with pytest.raises(ValueError, match="not in survey channels"):
        grid_candidates(survey, 1, 4, channels=["bf"])
