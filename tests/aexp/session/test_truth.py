import numpy as np
import pytest

from aexp.errors import UsageError
from aexp.instrument import load_instrument
from aexp.session import SessionReader, require_ground_truth, session_truth
from aexp.targets import make_target


@pytest.fixture(scope="module")
def folder(tiny_session):
    return tiny_session(5, stopping={"max_steps": 3})[0]


def test_session_truth_is_the_recorded_twins_noiseless_target(folder, tiny_config):
    reader = SessionReader(folder)
    positions = reader.array("candidates")[:7]
    twin = load_instrument("plasmonic", tiny_config()["instrument"]["options"], seed=5)
    expected = twin.truth(positions, make_target("band_intensity", window=(1.0, 3.0)))
    notes: list[str] = []
    np.testing.assert_allclose(session_truth(reader, positions, notes), expected)
    assert notes == []


def test_session_truth_says_why_when_the_twin_changed(folder, tmp_path):
    import json
    import shutil

    folder = shutil.copytree(folder, tmp_path / "s")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["instrument"]["extra"]["pixel_size_m"] *= 2  # as if the simulator had changed since
    (folder / "manifest.json").write_text(json.dumps(manifest))
    notes: list[str] = []
    assert session_truth(SessionReader(folder), np.zeros((1, 2)), notes) is None
    assert notes == ["no discovery curve: the instrument differs from the recorded one"]


def test_require_ground_truth_refuses_an_instrument_without_one():
    twin = object()
    with pytest.raises(UsageError, match="instrument 'zmq' has no hidden truth"):
        require_ground_truth(twin, "zmq")
