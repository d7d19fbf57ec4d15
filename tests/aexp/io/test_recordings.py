"""Import of real recordings: the shipped formats (shapes, axes, units, transform) and the error paths."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest

from aexp.griddata import load_grid, save_grid
from aexp.io.recordings import ImportOptions, RecordingError, import_recording, list_recording, read_recording
from aexp.targets import make_target

REAL = Path(__file__).parents[3] / "data" / "real"
EELS = REAL / "DMReader_SpectrumImage_SI-EELS.dm3"
HAADF = REAL / "DMReader_SI-HAADF.dm3"
GATAN_SURVEY = REAL / "DMReader_Image_SI-Survey.dm3"
EMD = REAL / "EMDReader_SpectrumImage_Si.emd"
STS = REAL / "NanonisReader_STS_grid_lockin.3ds"


def _hspy(path: Path, data: np.ndarray, axes: list[dict], title: str = "si") -> Path:
    """A HyperSpy file written by rosettasciio's own writer (the test's stand-in for a microscope)."""
    from rsciio.hspy import file_writer

    file_writer(str(path), {
        "data": data, "axes": axes, "original_metadata": {}, "tmp_parameters": {}, "models": {},
        "metadata": {"General": {"title": title}, "Signal": {"signal_type": "EELS"}},
        "attributes": {"_lazy": False}, "package_info": {"name": "aexp-test", "version": "0"},
        "learning_results": {},
    })
    return path


def _nav(rows: int = 4, cols: int = 5, units: str = "nm") -> list[dict]:
    return [{"name": "y", "size": rows, "scale": 2.0, "offset": 10.0, "units": units, "navigate": True},
            {"name": "x", "size": cols, "scale": 2.0, "offset": 20.0, "units": units, "navigate": True}]


def _energy(n: int = 8, scale: float = 1.0, offset: float = 100.0) -> dict:
    return {"name": "Energy loss", "size": n, "scale": scale, "offset": offset, "units": "eV", "navigate": False}


def test_gatan_eels_with_its_haadf():
    listing = list_recording(EELS)
    assert "'06-EELS Spectrum Image': spectrum image, 1024 x 49 x 6" in listing and "350 .. 861.5 eV" in listing
    ds = import_recording(EELS, ImportOptions(survey=HAADF, pixel_size=2e-10))
    assert ds.spectra.shape == (49, 6, 1024) and ds.spectra.dtype == np.float32
    assert (ds.axis.name, ds.axis.units, ds.axis.start, ds.axis.stop) == ("energy_loss", "eV", 350.0, 861.5)
    # the HAADF has 32 pixels per spectrum: kept at 8 (the cap), so 48 * 8 + 1 rows
    assert ds.stride == 8 and ds.survey.shape == (1, 385, 41) and ds.channels == ("haadf",)
    assert ds.transform.pixel_size == pytest.approx(2e-10 / 8)
    assert ds.bounds.ymax == pytest.approx(48 * 2e-10) and ds.bounds.xmax == pytest.approx(5 * 2e-10)
    assert "DMReader_SI-HAADF.dm3" in ds.survey_source and "resampled from 1568 x 192" in ds.survey_source
    src = ds.metadata["source"]
    assert src["sha256"] == hashlib.sha256(EELS.read_bytes()).hexdigest()
    assert ds.metadata["recording"]["tags"]["Microscope Info"]["Voltage"] == 200000.0
    assert ds.metadata["survey"]["independent"] is True
    # the spectrum at a grid point is the file's, unchanged
    raw = read_recording(EELS)[0].data  # 1024 x 49 x 6
    assert np.array_equal(ds.spectra[7, 3], raw[:, 7, 3])


def test_eels_without_a_length_calibration_asks_for_the_pixel_size():
    with pytest.raises(RecordingError, match=r"DMReader_SpectrumImage_SI-EELS.dm3, signal '06-EELS Spectrum "
                                             r"Image': the navigation axes carry no length units.*--pixel-size"):
        import_recording(EELS)


def test_gatan_survey_is_placed_by_the_si_rectangle_not_cropped():
    from aexp.io.survey import place_image

    sigs, grid = read_recording(GATAN_SURVEY), read_recording(EELS)[0]
    mapping, how = place_image(sigs[0], grid, None, False, "test")
    assert "SI rectangle [52, 213, 428, 259]" in how
    # the centre of the first spectrum-image pixel: half a pixel (376/49 and 46/6 survey px) inside the rectangle
    centre = np.array([52 + 376 / 49 / 2 - 0.5, 213 + 46 / 6 / 2 - 0.5, 1.0])
    assert mapping @ centre == pytest.approx([0.0, 0.0, 1.0], abs=1e-9)
    last = np.array([428 - 376 / 49 / 2 - 0.5, 259 - 46 / 6 / 2 - 0.5, 1.0])
    assert mapping @ last == pytest.approx([48.0, 5.0, 1.0], abs=1e-9)
    ds = import_recording(EELS, ImportOptions(survey=GATAN_SURVEY, pixel_size=1e-9, register=False))
    assert ds.survey.shape == (1, 385, 41) and np.isfinite(ds.survey).all()
    assert ds.channels == ("survey",)


def test_velox_eds_with_the_haadf_inside_the_same_file():
    names = [s.name for s in read_recording(EMD)]
    assert names == ["HAADF", "EDS"]
    ds = import_recording(EMD, ImportOptions(survey=EMD))
    assert ds.spectra.shape == (16, 16, 4096) and ds.stride == 1
    assert (ds.axis.name, ds.axis.units, ds.axis.start, ds.axis.n) == ("x_ray_energy", "keV", -1.0, 4096)
    assert ds.axis.stop == pytest.approx(39.95)
    s = 5.302414837991601e-9
    assert ds.transform.origin == pytest.approx((-47.72173354192441e-9, -10.604829675983202e-9))
    assert np.asarray(ds.transform.matrix) == pytest.approx(np.array([[0, s], [s, 0]]))
    haadf = read_recording(EMD)[0].data
    assert np.allclose(ds.survey[0], haadf, rtol=1e-6)  # the same grid: no resampling
    assert ds.survey_source.endswith("recorded on the same grid")


def test_nanonis_grid_with_its_topography_and_rotated_positions():
    sigs = read_recording(STS)
    assert [s.name for s in sigs] == ["Current", "LockinX", "LockinY", "Bias_m", "topography"]
    with pytest.raises(RecordingError, match="several spectrum images .*choose one with --signal"):
        import_recording(STS)
    ds = import_recording(STS, ImportOptions(signal="LockinX", survey=STS, survey_signal="topography"))
    assert ds.spectra.shape == (30, 30, 200)
    assert (ds.axis.name, ds.axis.units) == ("bias", "V") and ds.axis.start < ds.axis.stop
    om = sigs[1].original
    xy = np.stack([np.asarray(om["X (m)"]), np.asarray(om["Y (m)"])], axis=-1)
    r, q = np.meshgrid(np.arange(30), np.arange(30), indexing="ij")
    fitted = ds.transform.to_instrument(np.stack([r, q], axis=-1).reshape(-1, 2).astype(float))
    assert np.abs(fitted - xy.reshape(-1, 2)).max() < 1e-12  # the file's 45-degree grid, to the picometre
    assert ds.transform.pixel_size == pytest.approx(5e-9 / 30, rel=1e-3)
    assert np.allclose(ds.survey[0], np.asarray(om["Z (m)"]), rtol=1e-6) and ds.channels == ("topography",)


def test_band_survey_is_recorded_as_made_from_the_spectra(tmp_path):
    ds = import_recording(STS, ImportOptions(signal="LockinX", survey_band=(-0.1, 0.1)))
    assert ds.survey_source == "band [-0.1, 0.1] V of the spectra (not an independent image)"
    want = make_target("band_intensity", window=(-0.1, 0.1))(ds.spectra.reshape(900, -1), ds.axis.values())
    assert ds.survey[0].ravel() == pytest.approx(want, rel=1e-4)
    back = load_grid(save_grid(tmp_path / "sts.npz", ds))
    assert back.survey_source == ds.survey_source and back.metadata["survey"]["independent"] is False
    assert back.metadata["source"]["file"] == STS.name


def test_a_backwards_signal_axis_is_turned_round(tmp_path):
    data = np.zeros((4, 5, 8), dtype=np.float32)
    data[..., 1] = 100.0  # a peak at 109 eV on an axis running 110, 109, ... 103
    path = _hspy(tmp_path / "back.hspy", data, _nav() + [_energy(scale=-1.0, offset=110.0)])
    ds = import_recording(path, ImportOptions())
    assert (ds.axis.start, ds.axis.stop) == (103.0, 110.0) and ds.metadata["axis_reversed"] is True
    values = ds.axis.values()
    assert values[int(np.argmax(ds.spectra[0, 0]))] == 109.0
    band = make_target("band_intensity", window=(108.0, 110.0))(ds.spectra[0, :1], values)
    assert band[0] > 0  # maximising it finds the peak, not its absence


def test_bad_recordings_are_named(tmp_path):
    ok_nav = _nav()
    uneven = {"name": "Energy loss", "axis": np.array([0, 1, 2, 4, 8, 16, 32, 64.0]), "units": "eV",
              "navigate": False}
    cases = [
        (_hspy(tmp_path / "uneven.hspy", np.ones((4, 5, 8), np.float32), ok_nav + [uneven]),
         r"uneven.hspy, signal 'si': the signal axis 'Energy loss' is non-uniform"),
        (_hspy(tmp_path / "image.hspy", np.ones((4, 5), np.float32), ok_nav, title="just an image"),
         r"image.hspy: holds no spectrum image; its signals are \[0\] 'just an image' \(image\)"),
        (_hspy(tmp_path / "allnan.hspy", np.full((4, 5, 8), np.nan, np.float32), ok_nav + [_energy()]),
         r"allnan.hspy, signal 'si': every spectrum holds NaN"),
    ]
    for path, message in cases:
        with pytest.raises(RecordingError, match=message):
            import_recording(path, ImportOptions())
    odd = tmp_path / "scan.xyz"
    odd.write_bytes(b"not a recording")
    with pytest.raises(RecordingError, match=r"scan.xyz: unknown format '.xyz'; readable: .*dm3"):
        import_recording(odd)
    np.save(tmp_path / "cube.npy", np.ones((4, 5, 8)))
    with pytest.raises(RecordingError, match=r"cube.npy: a .npy cube has no axes; give the signal axis"):
        import_recording(tmp_path / "cube.npy")
    with pytest.raises(RecordingError, match="no signal 'EELS'; it holds"):
        import_recording(EMD, ImportOptions(signal="EELS"))


def test_mismatched_survey_size_is_refused(tmp_path):
    si = _hspy(tmp_path / "si.hspy", np.ones((4, 5, 8), np.float32), _nav(units="") + [_energy()])
    other = _hspy(tmp_path / "other.hspy", np.ones((30, 30), np.float32), [
        {"name": "y", "size": 30, "scale": 1.0, "offset": 0.0, "units": "", "navigate": False},
        {"name": "x", "size": 30, "scale": 1.0, "offset": 0.0, "units": "", "navigate": False}], title="adf")
    with pytest.raises(RecordingError, match=r"other.hspy, image 'adf'.*: cannot place the survey 'adf' \(30 x 30"):
        import_recording(si, ImportOptions(survey=other, pixel_size=1e-9))


def test_nan_spectra_are_kept_and_their_survey_pixels_are_nan(tmp_path):
    data = np.random.default_rng(0).uniform(1, 2, size=(4, 5, 8)).astype(np.float32)
    data[1, 2, 3] = np.nan
    data[3] = np.nan  # a whole scan row lost
    ds = import_recording(_hspy(tmp_path / "holes.hspy", data, _nav() + [_energy()]), ImportOptions())
    assert ds.metadata["nan_spectra"] == 6
    assert np.isnan(ds.survey[0]).sum() == 6 and np.isnan(ds.spectra[3]).all()
    assert ds.transform.origin == pytest.approx((20e-9, 10e-9))  # x from the column axis


def test_npy_cube_with_axes_given(tmp_path):
    cube = np.arange(3 * 4 * 6, dtype=float).reshape(3, 4, 6)
    np.save(tmp_path / "cube.npy", cube)
    opts = ImportOptions(axis=("bias", "V", 2.0, -3.0), pixel_size=5e-9)  # a sweep recorded downwards
    ds = import_recording(tmp_path / "cube.npy", opts)
    assert (ds.axis.start, ds.axis.stop, ds.axis.n) == (-3.0, 2.0, 6)
    assert ds.spectra[2, 1].tolist() == cube[2, 1, ::-1].tolist()
    assert ds.bounds.xmax == pytest.approx(15e-9) and ds.bounds.ymax == pytest.approx(10e-9)


def test_missing_readers_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "rsciio", None)
    with pytest.raises(RecordingError, match=r"pip install 'aexp\[io\]'"):
        read_recording(EMD)
    monkeypatch.setitem(sys.modules, "SciFiReaders", None)
    with pytest.raises(RecordingError, match=r"pip install 'aexp\[io\]'"):
        read_recording(STS)


def test_a_survey_with_a_non_uniform_axis_is_placed_only_by_a_recorded_rectangle():
    from aexp.io.recordings import Axis, Signal
    from aexp.io.survey import place_image
    from aexp.types import PixelTransform

    def spatial(name, size, scale):
        return Axis(name, size, 0.0, scale, "nm", True)

    energy = Axis("E", 3, 0.0, 1.0, "eV", False)
    grid = Signal("si", np.zeros((4, 5, 3)), (spatial("y", 4, 1.0), spatial("x", 5, 1.0), energy))
    image = Signal("haadf", np.zeros((4, 5)), (spatial("y", 4, None), spatial("x", 5, 1.0)))
    # the same size and units would place it by the calibrations, which a non-uniform axis lacks
    with pytest.raises(RecordingError, match=r"test: cannot place the survey 'haadf' \(4 x 5: y \(4, non-uniform"):
        place_image(image, grid, PixelTransform.square(pixel_size=1e-9), True, "test")
    uniform = Signal("haadf", np.zeros((4, 5)), (spatial("y", 4, 1.0), spatial("x", 5, 1.0)))
    assert place_image(uniform, grid, PixelTransform.square(pixel_size=1e-9), False, "test")[1] == (
        "recorded on the same grid")
