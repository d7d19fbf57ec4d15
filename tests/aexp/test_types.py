import numpy as np
import pytest

from aexp.types import Bounds, PixelTransform, Step, Survey


def test_square_transform_pins_row_col_to_x_y():
    t = PixelTransform.square(pixel_size=2e-9, origin=(1e-9, 5e-9))
    # row runs along +y, column along +x
    xy = t.to_instrument(np.array([[3.0, 7.0]]))
    np.testing.assert_allclose(xy, [[1e-9 + 7 * 2e-9, 5e-9 + 3 * 2e-9]])
    np.testing.assert_allclose(t.to_pixel(xy), [[3.0, 7.0]])
    assert t.pixel_size == pytest.approx(2e-9)


def test_rotated_transform_round_trips():
    c, s = np.cos(0.3), np.sin(0.3)
    t = PixelTransform(origin=(0.0, 0.0), matrix=((-s * 1e-9, c * 1e-9), (c * 1e-9, s * 1e-9)))
    rc = np.random.default_rng(0).uniform(0, 100, size=(20, 2))
    np.testing.assert_allclose(t.to_pixel(t.to_instrument(rc)), rc, atol=1e-9)
    assert PixelTransform.from_dict(t.to_dict()) == t


def test_bounds_contains_edges_and_rejects_nan():
    b = Bounds(0.0, 1.0, 0.0, 2.0)
    got = b.contains(np.array([[0.0, 0.0], [1.0, 2.0], [1.0001, 1.0], [np.nan, 1.0], [0.5, -0.1]]))
    assert got.tolist() == [True, True, False, False, False]
    with pytest.raises(ValueError):
        Bounds(1.0, 0.0, 0.0, 1.0)


def test_survey_rejects_wrong_shapes():
    t = PixelTransform.square(1e-9)
    with pytest.raises(ValueError, match="C x H x W"):
        Survey(np.zeros((4, 4)), t, ("haadf",))
    with pytest.raises(ValueError, match="channel names"):
        Survey(np.zeros((2, 4, 4)), t, ("haadf",))


def test_step_round_trips_through_dict():
    s = Step(step=3, index=17, position=(1e-9, 2e-9), pixel=(2.0, 1.0), target=0.5, status="ok",
             phase="policy", acquisition=1.2, timings={"fit_s": 0.1})
    assert Step.from_dict(s.to_dict()) == s
