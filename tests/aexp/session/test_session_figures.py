import numpy as np
import pytest

from aexp.session.figures import (
    Quantity,
    SurveyFrame,
    _draw_map,
    map_quantities,
    pyplot,
    scale_bar_length,
    spectra_to_show,
    target_quantity,
)
from aexp.types import Candidates, PixelTransform, SpectrumAxis, Step, Survey


def _pixel_at(image, x: float, y: float) -> tuple[int, int]:
    """(row, col) of the array element an ``imshow`` image shows at data point (x, y)."""
    left, right, bottom, top = image.get_extent()
    rows, cols = image.get_array().shape
    col = int(np.floor((x - left) / (right - left) * cols))
    row = int(np.floor((y - top) / (bottom - top) * rows))
    return row, col


def test_model_map_cells_land_on_their_candidates_survey_pixels():
    """Each candidate's value is drawn where its centre pixel lies on the survey, not up to a pixel off."""
    shape = (32, 32)
    rows, cols = np.arange(2, 30, 3), np.arange(5, 29, 4)  # stride 3 x 4, away from the edges
    rc = np.stack(np.meshgrid(rows, cols, indexing="ij"), -1).reshape(-1, 2).astype(float)
    transform = PixelTransform.square(0.5e-9, origin=(10e-9, -4e-9))
    cands = Candidates(positions=transform.to_instrument(rc), pixels=rc, patches=np.zeros((len(rc), 1, 2, 2)),
                       grid_shape=(len(rows), len(cols)))
    values = np.arange(len(rc), dtype=float)
    frame = SurveyFrame.of(transform)
    plt = pyplot()
    fig, ax = plt.subplots()
    survey = ax.imshow(np.zeros(shape), extent=frame.image_extent(shape))
    model = _draw_map(ax, fig, values, cands, frame, shape, "v")
    x, y = frame.xy(rc)
    for k in range(len(rc)):
        assert _pixel_at(survey, x[k], y[k]) == tuple(rc[k].astype(int))  # the survey pixel under it
        assert model.get_array()[_pixel_at(model, x[k], y[k])] == values[k]  # the map's value there
    # the axes are the instrument's own coordinates in nm: pixel (0, 0) at the transform's origin
    assert (frame.x0, frame.y0, frame.dx, frame.dy) == pytest.approx((10.0, -4.0, 0.5, 0.5))
    np.testing.assert_allclose(np.stack([x, y], 1), transform.to_instrument(rc) * 1e9)
    assert ax.get_xlabel() == "x (nm)" and ax.get_ylabel() == "y (nm)"
    assert [a.get_ylabel() for a in fig.axes if a is not ax] == ["v"]  # the colorbar, labelled
    plt.close(fig)


def test_rotated_scan_is_drawn_upright_in_nm_along_the_scan():
    c, s = np.cos(0.3) * 2e-9, np.sin(0.3) * 2e-9
    frame = SurveyFrame.of(PixelTransform(origin=(0.0, 0.0), matrix=((-s, c), (c, s))))
    assert (frame.dx, frame.dy) == pytest.approx((2.0, 2.0))
    assert frame.image_extent((10, 20)) == pytest.approx((-1.0, 39.0, 19.0, -1.0))
    assert "scan" in frame.xlabel and "scan" in frame.ylabel


def test_scattered_candidates_are_drawn_at_their_pixels():
    rc = np.array([[3.0, 4.0], [10.5, 20.25]])
    cands = Candidates(positions=rc * 1e-9, pixels=rc, patches=np.zeros((2, 1, 2, 2)))
    frame = SurveyFrame.of(PixelTransform.square(1e-9))
    plt = pyplot()
    fig, ax = plt.subplots()
    dots = _draw_map(ax, fig, np.array([1.0, 2.0]), cands, frame, (32, 32), "v")
    np.testing.assert_allclose(dots.get_offsets(), [[4.0, 3.0], [20.25, 10.5]])
    plt.close(fig)


@pytest.mark.parametrize(("width", "bar"), [(31.0, 5.0), (128.0, 20.0), (1000.0, 200.0), (0.9, 0.1), (4.0, 0.5)])
def test_scale_bar_is_a_round_length_near_a_fifth(width, bar):
    assert scale_bar_length(width) == pytest.approx(bar)


def test_target_quantity_names_unit_and_window():
    ev = SpectrumAxis("energy", "eV", 0.5, 4.0, 64)
    q = target_quantity("band_intensity", {"window": (1.0, 3.0)}, ev, "counts")
    assert q.label == "band_intensity (counts·eV), window 1–3 eV"
    assert target_quantity("peak_position", {"window": [2, 2.6]}, ev, "counts").unit == "eV"
    assert target_quantity("peak_ratio", {"window": (1, 2), "reference": (3, 4)}, ev, "").detail == \
        "window 1–2 eV, reference 3–4 eV"
    assert target_quantity("my_plugin", {}, ev, "counts").label == "my_plugin"  # unit unknown: not guessed
    maps = map_quantities(Quantity("band_intensity", "counts·eV"), "log_ei")
    assert [m.label for m in maps.values()] == [
        "predicted band_intensity (counts·eV)", "uncertainty (std) of band_intensity (counts·eV)",
        "acquisition: log_ei (log counts·eV)"]


def test_spectra_to_show_puts_the_best_first_then_spreads_over_the_ranks():
    steps = [Step(step=k, index=k, position=(0.0, 0.0), pixel=(0.0, 0.0), target=float(v), status="ok",
                  phase="policy", spectrum_row=k) for k, v in enumerate([5, 9, 1, 7, 3, 8, 2, 6, 4, 0])]
    steps.append(Step(step=10, index=10, position=(0.0, 0.0), pixel=(0.0, 0.0), target=None, status="failed",
                      phase="policy"))
    shown = spectra_to_show(steps, n_others=3)
    assert [s.target for s in shown] == [9.0, 8.0, 4.0, 0.0]
    assert [s.target for s in spectra_to_show(steps[:3], n_others=3)] == [9.0, 5.0, 1.0]


def test_run_overview_figure_names_the_target_and_takes_a_dollar_literally(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from aexp.loop import CampaignResult

    closed = []
    monkeypatch.setattr(plt, "close", closed.append)
    rows, cols = np.arange(2, 16, 4), np.arange(2, 16, 4)
    rc = np.stack(np.meshgrid(rows, cols, indexing="ij"), -1).reshape(-1, 2).astype(float)
    cands = Candidates(positions=rc * 1e-9, pixels=rc, patches=np.zeros((len(rc), 1, 2, 2)), grid_shape=(4, 4))
    survey = Survey(image=np.zeros((1, 16, 16)), transform=PixelTransform.square(1e-9), channels=("haadf",))
    steps = [Step(step=k, index=k, position=(0.0, 0.0), pixel=tuple(rc[k]), target=float(k), status="ok",
                  phase="policy", best_so_far=float(k)) for k in range(3)]
    maps = {"mean": np.arange(16.0), "std": np.ones(16)}
    target = Quantity("cost $x^$", "counts·eV", "window 1–3 eV")  # as math, "$x^$" would not parse
    from aexp.session.figures import session_figure

    path = session_figure(tmp_path, survey, cands, CampaignResult(steps=steps, maps=maps), target=target)
    assert path.exists()
    labels = [ax.get_ylabel() for ax in closed[0].axes]
    assert "predicted cost $x^$ (counts·eV)" in labels and "cost $x^$ (counts·eV), window 1–3 eV" in labels
