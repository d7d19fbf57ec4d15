"""Sessions of N-D measurements (diffraction patterns): measurements.zarr, its crash safety and readers."""

import json

import numpy as np
import pytest

from aexp.session.manifest import CandidatesRecord, Manifest, SurveyRecord, TorchRecord
from aexp.session.store import SessionError, SessionReader, SessionWriter
from aexp.session.zarr_rows import MEASUREMENTS, ZarrRows
from aexp.types import Bounds, InstrumentDescription, PixelTransform, SpectrumAxis, Step

KY = SpectrumAxis("ky", "mrad", -1.5, 1.5, 3)
KX = SpectrumAxis("kx", "mrad", -2.0, 2.0, 5)


def manifest() -> dict:
    desc = InstrumentDescription("twin", Bounds(0, 1, 0, 1), (1, 4, 4), ("haadf",), KY, measurement_axes=(KY, KX))
    return Manifest(
        session_id="s", created="", seed=0, budget=10, config={}, versions={}, torch=TorchRecord(),
        instrument=desc, spectrum_axis=KY, survey=SurveyRecord((1, 4, 4), ("haadf",), PixelTransform.square(1e-9)),
        candidates=CandidatesRecord(16, (4, 4), (1, 3, 3)), features={},
    ).to_dict()


def pattern(k: int) -> np.ndarray:
    return np.arange(15, dtype=float).reshape(3, 5) + 100 * k


def _step(k):
    return Step(step=k, index=10 + k, position=(k * 1e-9, 0.0), pixel=(0.0, float(k)), target=float(k),
                status="ok", phase="policy")


def _session(folder, n=3):
    w = SessionWriter(folder)
    w.write_json("manifest.json", manifest())
    for k in range(n):
        w.append_step(_step(k), pattern(k))
    w.close()
    return folder


def test_patterns_round_trip_and_zarr_reads_them(tmp_path):
    folder = _session(tmp_path / "s")
    r = SessionReader(folder)
    assert r.manifest.signal_axes == (KY, KX) and r.measurement_shape == (3, 5)
    assert [s.spectrum_row for s in r.steps] == [0, 1, 2]
    np.testing.assert_array_equal(r.spectrum(r.steps[1]), pattern(1))
    np.testing.assert_array_equal(r.spectra(), np.stack([pattern(k) for k in range(3)]))
    assert (folder / "spectra.bin").stat().st_size == 0 and r.dropped == []
    zarr = pytest.importorskip("zarr")
    z = zarr.open(str(folder / MEASUREMENTS), mode="r")
    assert z.shape == (3, 3, 5) and z.chunks == (1, 3, 5)
    np.testing.assert_array_equal(z[2], pattern(2))
    assert z.attrs["_ARRAY_DIMENSIONS"] == ["row", "ky", "kx"]
    assert z.attrs["axes"][1] == {"name": "kx", "units": "mrad", "start": -2.0, "stop": 2.0, "n": 5}


def test_a_session_records_one_shape(tmp_path):
    w = SessionWriter(tmp_path / "s")
    w.write_json("manifest.json", manifest())
    w.append_step(_step(0), pattern(0))
    with pytest.raises(SessionError, match=r"shape \(5, 3\); this session records \(3, 5\)"):
        w.append_step(_step(1), pattern(1).T)
    w.close()


def test_a_chunk_written_but_not_its_step_is_ignored_then_set_aside_on_resume(tmp_path):
    folder = _session(tmp_path / "s")
    store = ZarrRows(folder / MEASUREMENTS, (3, 5))
    store.append(3, pattern(3))  # killed after the chunk, before the step line
    (folder / MEASUREMENTS / "4.0.0.tmp").write_bytes(b"\0" * 7)  # killed mid-chunk
    r = SessionReader(folder)
    assert len(r.steps) == 3 and r.spectra().shape == (4, 3, 5)
    w = SessionWriter.append_to(r)
    assert sorted(p.name for p in folder.glob("recovered-*.bin")) == ["recovered-0.bin", "recovered-1.bin"]
    head, _, data = (folder / "recovered-0.bin").read_bytes().partition(b"\n")
    assert json.loads(head)["from"] == f"{MEASUREMENTS}/3.0.0"
    np.testing.assert_array_equal(np.frombuffer(data, "<f8").reshape(3, 5), pattern(3))  # nothing lost
    w.append_step(_step(3), pattern(30))
    w.close()
    again = SessionReader(folder)
    assert [s.spectrum_row for s in again.steps] == [0, 1, 2, 3]
    np.testing.assert_array_equal(again.spectrum(again.steps[3]), pattern(30))
    assert json.loads((folder / MEASUREMENTS / ".zarray").read_text())["shape"] == [4, 3, 5]


def test_a_lost_chunk_drops_the_steps_from_there_with_a_note(tmp_path):
    folder = _session(tmp_path / "s")
    (folder / MEASUREMENTS / "1.0.0").unlink()
    r = SessionReader(folder)
    assert len(r.steps) == 1 and any("measurements.zarr: holds 1 complete rows" in d for d in r.dropped)


def test_a_missing_store_is_a_damaged_session(tmp_path):
    import shutil

    folder = _session(tmp_path / "s")
    shutil.rmtree(folder / MEASUREMENTS)
    with pytest.raises(SessionError, match="measurements.zarr is missing"):
        SessionReader(folder)


def test_overwrite_replaces_a_pattern_session_but_not_a_foreign_folder(tmp_path):
    folder = _session(tmp_path / "s")
    SessionWriter(folder, overwrite=True).close()
    assert not (folder / MEASUREMENTS).exists()
    folder = _session(tmp_path / "t")
    (folder / MEASUREMENTS / "notes").mkdir()
    with pytest.raises(SessionError, match="aexp did not write"):
        SessionWriter(folder, overwrite=True)
