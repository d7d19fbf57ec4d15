import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
import yaml

from aexp.cli.main import main
from aexp.config import parse_config
from aexp.instrument import load_instrument
from aexp.loop import run_experiment
from aexp.session.replay import NotRecorded, ReplayDivergence, SessionInstrument, resume_session, verify_session
from aexp.session.store import SessionError, SessionReader

SMALL = {
    "name": "replay-small",
    "instrument": {"driver": "plasmonic",
                   "options": {"survey_pixels": 32, "n_particles": 2, "size_range_m": [6e-9, 10e-9]}},
    "candidates": {"stride": 2, "patch_size": 8},
    "embedder": {"kind": "rvae", "epochs": 1, "hidden": 8},
    "surrogate": {"iterations": 20, "warm_iterations": 5},
    "policy": {"kind": "dkl", "acquisition": "thompson", "n_initial": 3},  # thompson: the loop's rng matters
    "target": {"name": "band_intensity", "window": [1.0, 3.0]},
    "stopping": {"max_steps": 7},
    "recording": {"figure": False},
}
SEED = 4


def _run(folder, config=SMALL):
    cfg = parse_config(config)
    inst = load_instrument("plasmonic", config["instrument"]["options"], seed=SEED)
    return run_experiment(cfg, inst, folder, seed=SEED, progress=False)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    folder, _ = _run(tmp_path_factory.mktemp("rec") / "session")
    return folder


@pytest.fixture
def session(recorded, tmp_path):
    return shutil.copytree(recorded, tmp_path / "session")


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(p.name.encode() + (p.read_bytes() if p.is_file() else b""))
    return h.hexdigest()


def _rewrite_step(folder, k, **changes):
    path = folder / "steps.jsonl"
    lines = path.read_text().splitlines()
    d = json.loads(lines[k])
    d.update(changes)
    lines[k] = json.dumps(d)
    path.write_text("\n".join(lines) + "\n")


def test_verify_reproduces_every_decision_and_changes_nothing(session):
    before = _digest(session)
    threads = torch.get_num_threads()
    report = verify_session(session)
    assert report.steps == 10
    assert report.max_deviation == {k: 0.0 for k in report.max_deviation}  # bit-identical here
    assert report.warnings == [] and report.dropped == []
    assert _digest(session) == before
    assert torch.get_num_threads() == threads  # the recorded thread count is applied, then undone
    manifest = json.loads((session / "manifest.json").read_text())
    assert manifest["torch"]["deterministic"] is True and manifest["torch"]["num_threads"] >= 1
    assert len(manifest["features"]["sha256"]) == 64


def test_verify_names_the_first_diverging_step(session, capsys):
    steps = SessionReader(session).steps
    other = next(i for i in range(256) if i not in {s.index for s in steps})
    _rewrite_step(session, 6, index=other)
    with pytest.raises(ReplayDivergence) as info:
        verify_session(session)
    assert info.value.step == 6 and info.value.field == "index"
    assert info.value.replayed == steps[6].index and info.value.recorded == other
    assert main(["replay", str(session), "--verify", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"step 6 diverges in index: the replay chose {steps[6].index}, the record has {other}" in err


def test_verify_checks_acquisition_values_against_the_stated_tolerance(session):
    acq = SessionReader(session).steps[5].acquisition
    _rewrite_step(session, 5, acquisition=acq * (1 + 1e-4) + 1e-4)
    with pytest.raises(ReplayDivergence, match="step 5 diverges in acquisition"):
        verify_session(session)


def test_verify_cli_passes_and_reports_the_tolerance(session, capsys):
    assert main(["replay", str(session), "--verify", "--quiet"]) == 0
    assert "verified: 10 steps reproduced" in capsys.readouterr().out
    assert main(["replay", str(session)]) == 2  # without --verify: told what to do


def test_session_instrument_serves_only_recorded_positions(session):
    reader = SessionReader(session)
    inst = SessionInstrument(reader)
    step = reader.steps[0]
    m = inst.measure(step.position)
    assert np.array_equal(m.spectrum, reader.spectra()[step.spectrum_row])
    assert np.array_equal(inst.survey().image, np.load(session / "survey.npy"))
    with pytest.raises(NotRecorded, match="holds no measurement"):
        inst.measure((0.0, 0.0) if step.position != (0.0, 0.0) else (1e-9, 1e-9))


def _cut(folder, keep_steps, torn=b'{"step": 99, "ind'):
    """What a crash leaves: the first ``keep_steps`` steps, a torn record, no summary."""
    lines = (folder / "steps.jsonl").read_bytes().splitlines(True)
    (folder / "steps.jsonl").write_bytes(b"".join(lines[:keep_steps]) + torn)
    (folder / "summary.json").unlink()


def test_resume_continues_exactly_as_the_uninterrupted_run(session, recorded):
    _cut(session, 5)
    out = resume_session(session)
    assert (out.replayed, out.new) == (5, 5)
    full = [(s.index, s.target) for s in SessionReader(recorded).steps]
    resumed = SessionReader(session)
    assert [(s.index, s.target) for s in resumed.steps] == full  # nothing lost, nothing twice
    assert resumed.dropped == []
    summary = json.loads((session / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 10
    assert summary["resumes"][0]["from_step"] == 5 and "torn" in summary["resumes"][0]["dropped"][0]
    assert verify_session(session).steps == 10
    # resuming a finished session changes nothing
    before = _digest(session)
    assert resume_session(session).new == 0
    assert _digest(session) == before


def test_resume_refuses_a_config_that_no_longer_matches(session, tmp_path, capsys):
    _cut(session, 5)
    before = _digest(session)
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump({**SMALL, "policy": {**SMALL["policy"], "acquisition": "log_ei"}}))
    with pytest.raises(SessionError, match="policy.acquisition.kind differ"):
        resume_session(session, config_path=changed)
    assert main(["resume", str(session), "--config", str(changed), "--quiet"]) == 2
    assert "no longer matches" in capsys.readouterr().err
    assert _digest(session) == before
    same = tmp_path / "same.yaml"  # the budget of the file is ignored: the recorded one holds
    same.write_text(yaml.safe_dump({**SMALL, "stopping": {"max_steps": 50}}))
    assert resume_session(session, config_path=same).new == 5


def test_resume_refuses_another_sample(session):
    _cut(session, 5)
    before = _digest(session)
    other = load_instrument("plasmonic", SMALL["instrument"]["options"], seed=SEED + 1)
    with pytest.raises(SessionError, match="survey differs"):
        resume_session(session, instrument=other)
    assert _digest(session) == before


def test_resume_stops_at_the_first_divergence_and_writes_nothing(session):
    _rewrite_step(session, 4, acquisition=123.0)
    _cut(session, 6)
    before = _digest(session)
    with pytest.raises(ReplayDivergence, match="step 4"):
        resume_session(session)
    assert _digest(session) == before


def test_version_differences_are_warnings(session):
    from aexp.session.replay import version_warnings

    manifest = json.loads((session / "manifest.json").read_text())
    assert version_warnings(manifest) == []
    manifest["versions"]["torch"] = "1.0.0"
    assert version_warnings(manifest) == [f"torch {torch.__version__} here, 1.0.0 when recorded"]


def test_a_step_without_its_spectrum_cannot_be_replayed(session):
    _rewrite_step(session, 0, spectrum_row=None)
    reader = SessionReader(session)
    with pytest.raises(NotRecorded, match="step 0 has no recorded spectrum"):
        SessionInstrument(reader).measure(reader.steps[0].position)


def test_a_session_with_context_views_replays_exactly(tiny_session):
    """Both embedders (the patch's and the context view's, seed + 1) are rebuilt identically."""
    folder, _ = tiny_session(4, candidates={"context": 2}, stopping={"max_steps": 3},
                             embedder={"kind": "rvae", "epochs": 2, "hidden": 8})
    features = json.loads((folder / "manifest.json").read_text())["features"]
    assert features["context"]["kind"] == "rvae" and features["dim"] == 10
    report = verify_session(folder)
    assert report.steps == 6


def test_a_session_with_centre_pixels_and_gradient_records_them_and_replays_exactly(tiny_session):
    folder, _ = tiny_session(5, surrogate={"centre_pixels": 3, "centre_gradient": True}, stopping={"max_steps": 3},
                             embedder={"kind": "rvae", "epochs": 2, "hidden": 8})
    features = json.loads((folder / "manifest.json").read_text())["features"]
    assert features["dim"] == 5 and features["centre_columns"] == 9
    assert features["gradient_columns"] == 1 and features["position_columns"] == 2
    assert verify_session(folder).steps == 6
