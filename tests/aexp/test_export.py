import hashlib
import json

import h5py
import numpy as np
import pytest

from aexp.cli.main import main
from aexp.session.export import export_hdf5
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
