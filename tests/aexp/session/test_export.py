import hashlib
import json
import os
import shutil
import stat

import h5py
import numpy as np
import pytest

from aexp.cli.main import main
from aexp.session.export import export_hdf5, export_session
from aexp.session.store import SessionError, SessionReader


@pytest.fixture(scope="module")
def session(tiny_session):
    return tiny_session(1, sample={"fail_probability": 0.2}, stopping={"max_steps": 6})[0]


def _digest(folder):
    return hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in sorted(folder.iterdir()))).hexdigest()


def test_export_holds_the_whole_session_and_reads_back(session, tmp_path):
    before = _digest(session)
    out = export_hdf5(session, tmp_path / "s.h5")
    assert _digest(session) == before  # export never modifies the session
    r = SessionReader(session)
    ok = [s for s in r.steps if s.spectrum_row is not None]
    assert any(s.status == "failed" for s in r.steps)  # fail_probability makes some
    with h5py.File(out, "r") as f:
        assert np.array_equal(f["survey"][()], np.load(session / "survey.npy"))
        assert np.array_equal(f["candidates/positions"][()], np.load(session / "candidates.npy"))
        assert json.loads(f.attrs["config"]) == r.manifest.config
        assert f.attrs["seed"] == 1 and f.attrs["session_format_version"] == 1
        assert f["steps/index"][()].tolist() == [s.index for s in r.steps]
        targets = f["steps/target"][()]
        assert [None if np.isnan(t) else t for t in targets] == [s.target for s in r.steps]
        assert [x.decode() for x in f["steps/status"][()]] == [s.status for s in r.steps]
        assert f["steps/timings/fit_s"].shape == (len(r.steps),)
        axis = f["spectra/axis"]
        assert axis.attrs["units"] == "eV" and len(axis) == r.manifest.spectrum_axis.n
        assert axis[0] == r.manifest.spectrum_axis.start
        assert np.array_equal(f["spectra/data"][()], r.spectra()[[s.spectrum_row for s in ok]])
        assert f["spectra/position"][()].tolist() == [list(s.position) for s in ok]
        assert f["spectra/step"][()].tolist() == [s.step for s in ok]


def test_export_refuses_to_overwrite_or_write_into_the_session(session, tmp_path, capsys):
    out = tmp_path / "s.h5"
    out.write_bytes(b"keep me")
    assert main(["export", str(session), "--hdf5", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    assert main(["export", str(session), "--hdf5", str(out), "--overwrite"]) == 0
    assert h5py.is_hdf5(out)
    with pytest.raises(SessionError, match="inside the session"):
        export_hdf5(session, session / "x.h5")
    assert main(["export", str(tmp_path), "--hdf5", str(tmp_path / "y.h5")]) == 2
    assert "not a session" in capsys.readouterr().err


# --- the field's formats: HyperSpy (hspy, zspy) and NSID ---------------------------------------------


def _measured_rows(folder):
    r = SessionReader(folder)
    ok = [s for s in r.steps if s.spectrum_row is not None]
    return r, ok, r.spectra()[[s.spectrum_row for s in ok]]


@pytest.mark.parametrize("fmt", ["hspy", "zspy"])
def test_hyperspy_loads_a_spectrum_per_point_and_the_calibrated_survey(session, tmp_path, fmt):
    hs = pytest.importorskip("hyperspy.api")
    before = _digest(session)
    out = tmp_path / f"s.{fmt}"
    assert main(["export", str(session), "--format", fmt, str(out)]) == 0
    assert _digest(session) == before
    r, ok, rows = _measured_rows(session)
    assert any(s.status == "failed" for s in r.steps)

    spectra = hs.load(out)
    assert type(spectra).__name__ == "Signal1D" and spectra.data.shape == rows.shape
    np.testing.assert_array_equal(spectra.data, rows)
    nav, energy = spectra.axes_manager.navigation_axes[0], spectra.axes_manager.signal_axes[0]
    assert nav.name == "step" and nav.axis.tolist() == [s.step for s in ok]  # failed steps have no row
    ax = r.manifest.to_dict()["spectrum_axis"]
    assert (energy.name, energy.units, energy.size) == (ax["name"], "eV", ax["n"])
    np.testing.assert_allclose(energy.axis, np.linspace(ax["start"], ax["stop"], ax["n"]), rtol=1e-12, atol=1e-12)
    meta = spectra.metadata.aexp
    assert meta.position_m.tolist() == [list(s.position) for s in ok]
    assert meta.index.tolist() == [s.index for s in ok] and meta.session_id == r.manifest.to_dict()["session_id"]
    np.testing.assert_array_equal(meta.target, [s.target for s in ok])
    assert json.loads(spectra.original_metadata.aexp.manifest) == r.manifest.to_dict()
    assert meta.survey_file == f"s_survey.{fmt}"

    survey = hs.load(tmp_path / meta.survey_file)
    image = np.load(session / "survey.npy")
    assert type(survey).__name__ == "Signal2D" and image.shape[0] == 1
    np.testing.assert_array_equal(survey.data, image[0])
    t = r.manifest.to_dict()["survey"]["transform"]  # tiny config: columns along +x, rows along +y
    cols, rows_ax = survey.axes_manager.signal_axes  # HyperSpy lists x (columns) first
    assert (cols.name, cols.units, rows_ax.name, rows_ax.units) == ("x", "m", "y", "m")
    assert cols.scale == t["matrix"][0][1] and rows_ax.scale == t["matrix"][1][0]
    assert cols.offset == t["origin"][0] and rows_ax.offset == t["origin"][1]
    assert survey.metadata.aexp.channels == r.manifest.to_dict()["survey"]["channels"]


def test_nsid_holds_the_spectra_as_a_point_cloud_and_the_survey(session, tmp_path):
    readers = pytest.importorskip("SciFiReaders")
    out = tmp_path / "s.h5"
    assert main(["export", str(session), str(out), "--format", "nsid"]) == 0
    r, ok, rows = _measured_rows(session)
    datasets = readers.NSIDReader(str(out)).read()
    spectra, survey = datasets["Channel_000"], datasets["Channel_001"]
    np.testing.assert_array_equal(np.asarray(spectra), rows)
    assert spectra.data_type.name == "POINT_CLOUD" and spectra.units == "counts"
    np.testing.assert_array_equal(spectra.point_cloud["coordinates"], [list(s.position) for s in ok])
    step, energy = spectra._axes[0], spectra._axes[1]
    assert step.name == "step" and np.asarray(step).tolist() == [s.step for s in ok]
    ax = r.manifest.to_dict()["spectrum_axis"]
    assert (energy.name, energy.units, energy.dimension_type.name) == (ax["name"], "eV", "SPECTRAL")
    np.testing.assert_allclose(np.asarray(energy), np.linspace(ax["start"], ax["stop"], ax["n"]), atol=1e-12)
    image = np.load(session / "survey.npy")[0]
    np.testing.assert_array_equal(np.asarray(survey), image)
    y, x = survey._axes[0], survey._axes[1]
    t = r.manifest.to_dict()["survey"]["transform"]
    assert (y.name, y.units, x.name, x.units) == ("y", "m", "x", "m")
    np.testing.assert_allclose(np.asarray(x), t["origin"][0] + t["matrix"][0][1] * np.arange(image.shape[1]))
    np.testing.assert_allclose(np.asarray(y), t["origin"][1] + t["matrix"][1][0] * np.arange(image.shape[0]))


def test_a_scan_with_rows_along_x_or_rotated_is_calibrated_honestly(session, tmp_path):
    hs = pytest.importorskip("hyperspy.api")
    copy = tmp_path / "copy"
    shutil.copytree(session, copy)
    man = json.loads((copy / "manifest.json").read_text())
    man["survey"]["transform"] = {"origin": [1e-6, 2e-6], "matrix": [[3e-9, 0.0], [0.0, 4e-9]]}  # rows along x
    (copy / "manifest.json").write_text(json.dumps(man))
    export_session(copy, tmp_path / "a.hspy", format="hspy")
    cols, rows = hs.load(tmp_path / "a_survey.hspy").axes_manager.signal_axes
    assert (rows.name, rows.scale, rows.offset, cols.name, cols.scale, cols.offset) == ("x", 3e-9, 1e-6, "y", 4e-9, 2e-6)
    man["survey"]["transform"]["matrix"] = [[3e-9, -1e-9], [1e-9, 3e-9]]  # rotated: no axis-aligned calibration
    (copy / "manifest.json").write_text(json.dumps(man))
    export_session(copy, tmp_path / "b.hspy", format="hspy")
    survey = hs.load(tmp_path / "b_survey.hspy")
    assert [a.units for a in survey.axes_manager.signal_axes] == ["px", "px"]
    assert json.loads(survey.metadata.aexp.transform) == man["survey"]["transform"]


def test_export_writes_only_regular_files_and_says_why_not(session, tmp_path, capsys):
    folder = tmp_path / "a_folder.hspy"
    folder.mkdir()
    assert main(["export", str(session), "--format", "hspy", str(folder), "--overwrite"]) == 2
    assert "is a folder" in capsys.readouterr().err and folder.is_dir()
    fifo = tmp_path / "pipe.h5"
    os.mkfifo(fifo)
    assert main(["export", str(session), "--hdf5", str(fifo), "--overwrite"]) == 2
    assert "not a regular file" in capsys.readouterr().err and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    link = tmp_path / "link.h5"
    link.symlink_to(tmp_path / "elsewhere.h5")
    with pytest.raises(SessionError, match="symbolic link"):
        export_session(session, link, format="nsid", overwrite=True)
    assert main(["export", str(session), str(tmp_path / "no" / "such" / "s.h5")]) == 2
    assert "does not exist; create it first" in capsys.readouterr().err
    # hspy writes two files: an existing survey sibling stops the export before either is written
    (tmp_path / "two_survey.hspy").write_bytes(b"keep me")
    with pytest.raises(SessionError, match="two_survey.hspy already exists"):
        export_session(session, tmp_path / "two.hspy", format="hspy")
    assert not (tmp_path / "two.hspy").exists() and (tmp_path / "two_survey.hspy").read_bytes() == b"keep me"
    assert export_session(session, tmp_path / "two.hspy", format="hspy", overwrite=True)[1].stat().st_size > 100
    assert not list(tmp_path.glob(".*partial"))  # nothing left half-written


def test_export_command_line_forms_and_a_session_without_spectra(session, tmp_path, capsys):
    assert main(["export", str(session), str(tmp_path / "d.h5")]) == 0  # hdf5 is the default format
    assert h5py.is_hdf5(tmp_path / "d.h5")
    assert main(["export", str(session)]) == 2
    assert "give the file to create once" in capsys.readouterr().err
    assert main(["export", str(session), "--hdf5", str(tmp_path / "e.h5"), "--format", "hspy"]) == 2
    assert "for --format hspy give the file as OUT" in capsys.readouterr().err
    bare = tmp_path / "bare"
    shutil.copytree(session, bare)
    # as a run with recording.spectra off leaves it: no step points into an empty spectra.bin
    lines = [json.loads(line) for line in (bare / "steps.jsonl").read_text().splitlines()]
    (bare / "steps.jsonl").write_text("".join(json.dumps({**r, "spectrum_row": None}) + "\n" for r in lines))
    (bare / "spectra.bin").write_bytes(b"")
    with pytest.raises(SessionError, match="no step has a recorded spectrum"):
        export_session(bare, tmp_path / "bare.hspy", format="hspy")
    assert not (tmp_path / "bare.hspy").exists()
