import numpy as np
import pytest

from aexp.config import EmbedderConfig
from aexp.features import embed_candidates, resolve_device, standardise, with_position
from aexp.patches import grid_candidates
from aexp.types import PixelTransform, Survey


def _candidates():
    img = np.random.default_rng(0).normal(size=(1, 12, 12)).astype(np.float32)
    return grid_candidates(Survey(img, PixelTransform.square(1e-9), ("haadf",)), 2, 4)


def test_raw_patch_features_are_standardised_columns():
    c = _candidates()
    f, info = embed_candidates(c, EmbedderConfig(kind="none"), seed=0, progress=False)
    assert f.shape == (36, 16) and info == {"kind": "none", "dim": 16}
    np.testing.assert_allclose(f.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(f.std(0), 1, atol=1e-12)


def test_with_position_appends_standardised_x_y():
    c = _candidates()
    f = with_position(np.zeros((36, 3)), c)
    assert f.shape == (36, 5)
    np.testing.assert_allclose(f[:, 3:], standardise(c.positions))
    assert f[1, 3] > f[0, 3]  # next column along the grid: larger x


def test_constant_columns_are_centred_not_divided_by_zero():
    out = standardise(np.array([[1.0, 2.0], [1.0, 4.0]]))
    assert np.all(np.isfinite(out)) and out[:, 0].tolist() == [0.0, 0.0]


def test_device_resolution():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            resolve_device("cuda")
