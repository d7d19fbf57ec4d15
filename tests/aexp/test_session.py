import json

import numpy as np
import pytest

from aexp.session import FORMAT_VERSION, SessionError, SessionReader, SessionWriter
from aexp.types import Step


def _step(k, target=1.0, status="ok"):
    return Step(step=k, index=10 + k, position=(k * 1e-9, 0.0), pixel=(0.0, float(k)),
                target=target, status=status, phase="policy")


def _session(folder, n=3, length=4):
    w = SessionWriter(folder)
    w.write_json("manifest.json", {"format_version": FORMAT_VERSION, "spectrum_axis": {"n": length}})
    for k in range(n):
        w.append_step(_step(k, target=float(k)), np.full(length, k, dtype=float))
    w.close()
    return folder


def test_steps_and_spectra_round_trip(tmp_path):
    r = SessionReader(_session(tmp_path / "s"))
    assert [s.index for s in r.steps] == [10, 11, 12]
    assert [s.spectrum_row for s in r.steps] == [0, 1, 2]
    spectra = r.spectra()
    assert spectra.shape == (3, 4) and spectra[2].tolist() == [2.0] * 4
    assert r.dropped == []


def test_torn_last_record_is_reported_and_ignored(tmp_path):
    folder = _session(tmp_path / "s")
    with open(folder / "steps.jsonl", "ab") as fh:
        fh.write(b'{"step": 3, "index": 1')  # a crash mid-write
    with open(folder / "spectra.bin", "ab") as fh:
        fh.write(np.zeros(2).tobytes())
    r = SessionReader(folder)
    assert len(r.steps) == 3
    assert r.spectra().shape == (3, 4)
    assert any("steps.jsonl" in d for d in r.dropped) and any("spectra.bin" in d for d in r.dropped)


def test_existing_folder_is_never_overwritten_silently(tmp_path):
    folder = _session(tmp_path / "s")
    with pytest.raises(SessionError, match="already exists"):
        SessionWriter(folder)
    assert len(SessionReader(folder).steps) == 3  # untouched
    other = tmp_path / "notes"
    other.mkdir()
    (other / "important.txt").write_text("data")
    with pytest.raises(SessionError, match="not a session"):
        SessionWriter(other, overwrite=True)
    assert (other / "important.txt").exists()
    SessionWriter(folder, overwrite=True).close()  # a session may be replaced on request
    assert not (folder / "manifest.json").exists()


def test_reader_rejects_non_sessions_and_newer_formats(tmp_path):
    with pytest.raises(SessionError, match="not a session"):
        SessionReader(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": FORMAT_VERSION + 1}))
    with pytest.raises(SessionError, match="format version"):
        SessionReader(tmp_path)


def test_each_step_is_on_disk_when_append_returns(tmp_path):
    w = SessionWriter(tmp_path / "s")
    w.write_json("manifest.json", {"format_version": FORMAT_VERSION, "spectrum_axis": {"n": 2}})
    w.append_step(_step(0), np.ones(2))
    # read while the writer is still open, as a crash right now would leave it
    assert len(SessionReader(tmp_path / "s").steps) == 1
    with pytest.raises(SessionError, match="records 2"):
        w.append_step(_step(1), np.ones(3))
    w.close()


def test_non_finite_target_cannot_be_written_as_json(tmp_path):
    w = SessionWriter(tmp_path / "s")
    with pytest.raises(ValueError):
        w.append_step(_step(0, target=float("nan")))
    w.close()
