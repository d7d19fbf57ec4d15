import json
import os

import numpy as np
import pytest

from aexp.session.manifest import CandidatesRecord, Manifest, SurveyRecord, TorchRecord
from aexp.session.store import FORMAT_VERSION, SessionError, SessionReader, SessionWriter
from aexp.types import Bounds, InstrumentDescription, PixelTransform, SpectrumAxis, Step


def manifest(length: int) -> dict:
    """A complete manifest of a session with spectra of ``length`` values."""
    axis = SpectrumAxis("energy_loss", "eV", 0.0, 1.0, length)
    return Manifest(
        session_id="s", created="", seed=0, budget=10, config={}, versions={}, torch=TorchRecord(),
        instrument=InstrumentDescription("twin", Bounds(0, 1, 0, 1), (1, 4, 4), ("haadf",), axis),
        spectrum_axis=axis, survey=SurveyRecord((1, 4, 4), ("haadf",), PixelTransform.square(1e-9)),
        candidates=CandidatesRecord(16, (4, 4), (1, 3, 3)), features={},
    ).to_dict()


def _step(k, target=1.0, status="ok"):
    return Step(step=k, index=10 + k, position=(k * 1e-9, 0.0), pixel=(0.0, float(k)),
                target=target, status=status, phase="policy")


def _session(folder, n=3, length=4):
    w = SessionWriter(folder)
    w.write_json("manifest.json", manifest(length))
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
    w.write_json("manifest.json", manifest(2))
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


def test_truncated_spectra_drop_the_steps_that_lost_their_row(tmp_path):
    folder = _session(tmp_path / "s", n=5)
    with open(folder / "spectra.bin", "r+b") as fh:
        fh.truncate(3 * 4 * 8 + 5)  # three whole rows and a few bytes of the fourth
    r = SessionReader(folder)
    assert [s.step for s in r.steps] == [0, 1, 2]
    assert any("steps 3..4 (2)" in d for d in r.dropped)
    assert r.steps_bytes == len(b"".join((folder / "steps.jsonl").read_bytes().splitlines(True)[:3]))


def test_unreadable_pieces_are_named(tmp_path):
    folder = _session(tmp_path / "s")
    np.save(folder / "survey.npy", np.zeros((1, 8, 8), np.float32))
    raw = (folder / "survey.npy").read_bytes()
    (folder / "survey.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(SessionError, match="survey.npy: unreadable or truncated"):
        SessionReader(folder).array("survey")
    with pytest.raises(SessionError, match="candidates.npy is missing"):
        SessionReader(folder).array("candidates")
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(SessionError, match="manifest.json: not valid JSON"):
        SessionReader(folder)
    with pytest.raises(SessionError, match="no such folder"):
        SessionReader(tmp_path / "missing")


def test_a_corrupt_record_before_the_last_is_an_error_not_a_silent_skip(tmp_path):
    folder = _session(tmp_path / "s")
    lines = (folder / "steps.jsonl").read_bytes().splitlines(True)
    (folder / "steps.jsonl").write_bytes(lines[0] + b"garbage\n" + lines[2])
    with pytest.raises(SessionError, match="line 2 is not a valid step record"):
        SessionReader(folder)


def test_appending_after_a_crash_sets_the_torn_bytes_aside(tmp_path):
    folder = _session(tmp_path / "s")
    with open(folder / "steps.jsonl", "ab") as fh:
        fh.write(b'{"step": 3, "ind')
    with open(folder / "spectra.bin", "ab") as fh:
        fh.write(np.full(4, 7.0).tobytes() + b"\x01\x02")  # a row whose step never landed + a torn one
    reader = SessionReader(folder)
    w = SessionWriter.append_to(reader)
    w.append_step(_step(3, target=3.0), np.full(4, 3.0))
    w.close()
    r = SessionReader(folder)
    assert [s.step for s in r.steps] == [0, 1, 2, 3] and r.dropped == []
    assert r.steps[3].spectrum_row == 3 and r.spectra()[3].tolist() == [3.0] * 4
    aside = sorted(p.name for p in folder.glob("recovered-*.bin"))
    assert aside == ["recovered-0.bin", "recovered-1.bin"]
    header, body = (folder / "recovered-0.bin").read_bytes().split(b"\n", 1)
    assert json.loads(header)["from"] == "steps.jsonl" and body == b'{"step": 3, "ind'
    header, body = (folder / "recovered-1.bin").read_bytes().split(b"\n", 1)
    assert json.loads(header)["bytes"] == 34 and body[:32] == np.full(4, 7.0).tobytes()
    assert any("recovered-0.bin" in d for d in reader.dropped)


def test_overwrite_never_deletes_a_session_holding_foreign_files(tmp_path):
    folder = _session(tmp_path / "s")
    (folder / "my-notes.txt").write_text("keep me")
    (folder / "analysis").mkdir()
    with pytest.raises(SessionError, match=r"holds files aexp did not write \(analysis, my-notes.txt\)"):
        SessionWriter(folder, overwrite=True)
    assert (folder / "my-notes.txt").read_text() == "keep me" and len(SessionReader(folder).steps) == 3


def test_a_folder_left_before_the_manifest_is_recognised_and_can_be_overwritten(tmp_path):
    w = SessionWriter(tmp_path / "s")  # e.g. killed while the embedder trained: no manifest yet
    w.close()
    with pytest.raises(SessionError, match="stopped before its first measurement.*--overwrite"):
        SessionReader(tmp_path / "s")
    SessionWriter(tmp_path / "s", overwrite=True).close()
    # killed after taking the lock, while the marker's temporary file was being written
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / ".aexp-lock").write_text("process 1")
    (folder / ".aexp-session.tmp").write_text("{")
    with pytest.raises(SessionError, match="stopped before its first measurement"):
        SessionReader(folder)
    SessionWriter(folder, overwrite=True).close()


def test_one_writer_at_a_time_and_the_second_is_told_who_writes(tmp_path):
    folder = _session(tmp_path / "s")
    first = SessionWriter.append_to(SessionReader(folder))
    (folder / "steps.jsonl").open("ab").write(b'{"torn": ')  # a live writer's step in progress
    with pytest.raises(SessionError, match=rf"being written by process {os.getpid()}"):
        SessionWriter.append_to(SessionReader(folder))
    with pytest.raises(SessionError, match="being written by"):
        SessionWriter(folder, overwrite=True)
    assert not list(folder.glob("recovered-*.bin")) and (folder / "steps.jsonl").exists()
    first.close()
    SessionWriter.append_to(SessionReader(folder)).close()  # free again once the first closed


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"null", "line 2 is not a valid step record: a step record is a JSON object, not NoneType"),
        (b"[1, 2]", "line 2 is not a valid step record: a step record is a JSON object, not list"),
        (b'{"step": 1}', "line 2 is not a valid step record: index must be a non-negative integer"),
    ],
)
def test_a_line_that_is_json_but_not_a_step_is_named(tmp_path, line, message):
    folder = _session(tmp_path / "s", n=1)
    with open(folder / "steps.jsonl", "ab") as fh:
        fh.write(line + b"\n")
    with pytest.raises(SessionError, match=message):
        SessionReader(folder)


def test_a_spectrum_row_out_of_range_or_order_is_named(tmp_path):
    folder = _session(tmp_path / "s", n=3)
    lines = (folder / "steps.jsonl").read_text().splitlines()

    def rewrite(k, row):
        record = json.loads(lines[k])
        record["spectrum_row"] = row
        damaged = list(lines)
        damaged[k] = json.dumps(record)
        (folder / "steps.jsonl").write_text("\n".join(damaged) + "\n")

    rewrite(2, 7)  # far past the 3 rows spectra.bin holds: no cut-off file explains it
    with pytest.raises(SessionError, match=r"line 3: spectrum_row 7 out of range \(spectra.bin holds 3 rows\)"):
        SessionReader(folder)
    rewrite(1, 0)  # a row recorded twice
    with pytest.raises(SessionError, match=r"line 2: spectrum_row 0 out of order"):
        SessionReader(folder)


def test_missing_spectra_are_a_damaged_session_not_an_empty_one(tmp_path):
    folder = _session(tmp_path / "s", n=3)
    (folder / "spectra.bin").unlink()
    with pytest.raises(SessionError, match="spectra.bin is missing while steps.jsonl points into it"):
        SessionReader(folder)
