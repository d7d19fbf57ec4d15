import numpy as np
import pytest

from aexp.patches import context_views, extract_patches, grid_candidates, grid_pixels
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


# --- atom finding and atom-centred candidates ----------------------------------------------------

from aexp.config import CandidatesConfig  # noqa: E402
from aexp.patches import atom_candidates, find_atoms, make_candidates  # noqa: E402


def _blobs(centres: np.ndarray, heights: np.ndarray, shape=(48, 48), sigma=1.3) -> np.ndarray:
    rr, cc = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    img = np.zeros(shape)
    for (r, c), h in zip(centres, heights):
        img += h * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * sigma**2))
    return img


def _match(found: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Distance from each true centre to the nearest found one."""
    return np.linalg.norm(true[:, None] - found[None], axis=-1).min(axis=1)


def test_find_atoms_recovers_subpixel_centres():
    rng = np.random.default_rng(3)
    base = np.array([(r, c) for r in range(6, 44, 8) for c in range(6, 44, 8)], dtype=float)
    true = base + rng.uniform(-0.5, 0.5, size=base.shape)
    found = find_atoms(_blobs(true, np.ones(len(true))), sigma_px=1.3, min_distance_px=4)
    assert len(found) == len(true)
    assert _match(found, true).max() < 0.1  # the quadratic refinement, not the integer peak


def test_find_atoms_threshold_keeps_weak_columns_and_drops_noise():
    true = np.array([[10.0, 10.0], [10.0, 30.0], [30.0, 20.0]])
    img = _blobs(true, np.array([1.0, 0.3, 0.3]))
    img += np.random.default_rng(0).normal(0, 0.01, img.shape)
    found = find_atoms(img, sigma_px=1.3, min_distance_px=4, threshold=0.15)
    assert len(found) == 3 and _match(found, true).max() < 0.3
    assert len(find_atoms(img, sigma_px=1.3, min_distance_px=4, threshold=0.6)) == 1


def test_find_atoms_respects_min_distance_and_bad_arguments():
    pair = np.array([[20.0, 20.0], [20.0, 23.0]])  # 3 px apart
    img = _blobs(pair, np.array([1.0, 0.9]), sigma=1.0)
    assert len(find_atoms(img, sigma_px=1.0, min_distance_px=2)) == 2
    assert len(find_atoms(img, sigma_px=1.0, min_distance_px=4)) == 1
    assert len(find_atoms(np.zeros((16, 16)))) == 0
    with pytest.raises(ValueError, match="sigma_px"):
        find_atoms(img, sigma_px=0)
    with pytest.raises(ValueError, match="H x W"):
        find_atoms(img[None])


def _survey(img: np.ndarray, pixel=2e-10) -> Survey:
    return Survey(image=img[None], transform=PixelTransform.square(pixel), channels=("haadf",))


def test_atom_candidates_keep_each_atom_position_and_patch():
    true = np.array([[10.3, 12.6], [25.0, 30.2], [40.7, 8.1]])
    survey = _survey(_blobs(true, np.ones(3)))
    cfg = CandidatesConfig(mode="atoms", patch_size=8, atom_sigma_px=1.3, min_distance_px=4)
    cands = make_candidates(survey, cfg)
    assert cands.grid_shape is None and cands.patches.shape == (3, 1, 8, 8)
    order = np.argsort(cands.pixels[:, 0])
    np.testing.assert_allclose(cands.pixels[order], true, atol=0.1)
    np.testing.assert_allclose(cands.positions, survey.transform.to_instrument(cands.pixels))
    # each patch is centred on its atom's pixel: the centre is the patch's brightest pixel
    centre = cands.patches[:, 0, 4, 4]
    assert np.all(centre >= cands.patches[:, 0].reshape(3, -1).max(axis=1) - 1e-6)


def test_atom_candidates_name_the_problem_when_nothing_is_found():
    with pytest.raises(ValueError, match="no atoms found in survey channel 'haadf'"):
        atom_candidates(_survey(np.zeros((32, 32))), patch_size=8)


def test_make_candidates_grid_mode_is_grid_candidates():
    survey = _survey(np.random.default_rng(1).random((20, 20)))
    a = make_candidates(survey, CandidatesConfig(stride=4, patch_size=6))
    b = grid_candidates(survey, 4, 6)
    assert a.grid_shape == b.grid_shape == (5, 5)
    np.testing.assert_array_equal(a.patches, b.patches)


def test_context_view_is_the_wider_window_averaged_in_blocks_and_centred_like_the_patch():
    img = np.random.default_rng(2).random((2, 30, 30)).astype(np.float32)
    view = context_views(img, np.array([[15, 14]]), 4, 3)
    many = np.array([[r, c] for r in range(0, 30, 3) for c in range(0, 30, 4)])
    np.testing.assert_array_equal(context_views(img, many, 4, 3, chunk=7), context_views(img, many, 4, 3))
    assert view.shape == (1, 2, 4, 4) and view.dtype == np.float32
    wide = img[:, 15 - 6:15 + 6, 14 - 6:14 + 6]  # 12 px centred as an even patch is
    np.testing.assert_allclose(view[0], wide.reshape(2, 4, 3, 4, 3).mean(axis=(2, 4)), rtol=1e-6)
    dot = np.zeros((1, 30, 30), np.float32)
    dot[0, 15, 14] = 9.0
    assert np.unravel_index(context_views(dot, np.array([[15, 14]]), 4, 3)[0, 0].argmax(), (4, 4)) == (2, 2)
    with pytest.raises(ValueError, match="at least 2"):
        context_views(img, np.array([[15, 14]]), 4, 1)
    with pytest.raises(ValueError, match="does not fit"):
        context_views(img, np.array([[15, 14]]), 16, 2)


def test_make_candidates_adds_the_context_views_only_when_asked():
    survey = _survey(np.random.default_rng(1).random((24, 24)))
    plain = make_candidates(survey, CandidatesConfig(stride=4, patch_size=4))
    wide = make_candidates(survey, CandidatesConfig(stride=4, patch_size=4, context=3))
    assert plain.context is None
    np.testing.assert_array_equal(wide.patches, plain.patches)
    np.testing.assert_array_equal(wide.context, context_views(survey.image, plain.pixels, 4, 3))
    atoms = np.zeros((32, 32))
    atoms[8::8, 8::8] = 1.0
    found = make_candidates(_survey(atoms), CandidatesConfig(mode="atoms", patch_size=4, context=2,
                                                             atom_sigma_px=1.0))
    assert found.context.shape == (len(found), 1, 4, 4)
