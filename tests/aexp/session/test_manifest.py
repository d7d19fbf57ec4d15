"""The typed manifest: round trip, errors naming the field, and sessions written before it."""

import json
import shutil
from pathlib import Path

import pytest

from aexp.config import ConfigError, parse_config
from aexp.session.manifest import Manifest, SessionError, read_manifest
from aexp.session.replay import verify_session
from aexp.session.store import SessionReader

OLD = Path(__file__).parents[2] / "data" / "sessions" / "v1-plasmonic-tiny"


def test_a_recorded_manifest_round_trips_key_for_key():
    raw = json.loads((OLD / "manifest.json").read_text())
    man = Manifest.from_dict(raw)
    assert man.to_dict() == raw
    assert man.seed == 1 and man.survey.channels == ("haadf",)
    assert man.candidates.count == len(SessionReader(OLD).array("candidates"))
    assert man.spectrum_axis.n == man.instrument.spectrum_axis.n


def test_unknown_keys_survive_a_round_trip():
    raw = json.loads((OLD / "manifest.json").read_text())
    raw["recording"] = {"source": "scan.dm4", "sha256": "ab" * 32}
    man = Manifest.from_dict(raw)
    assert man.extra == {"recording": raw["recording"]} and man.to_dict() == raw


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("seed"), "missing field 'seed'"),
        (lambda d: d.update(seed="3"), "field 'seed' must be int, got str"),
        (lambda d: d.update(seed=True), "field 'seed' must be int, got bool"),
        (lambda d: d["survey"].pop("transform"), "field 'survey' is malformed"),
        (lambda d: d["instrument"]["bounds"].update(xmin=1.0, xmax=0.0), "field 'instrument' is malformed"),
        (lambda d: d.update(spectrum_axis=[1, 2]), "field 'spectrum_axis' must be dict"),
        (lambda d: d.update(format_version=99), "format version 99 is newer"),
    ],
)
def test_a_damaged_manifest_names_the_file_and_the_field(tmp_path, change, message):
    folder = tmp_path / "s"
    shutil.copytree(OLD, folder)
    raw = json.loads((folder / "manifest.json").read_text())
    change(raw)
    (folder / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(SessionError, match=message) as err:
        read_manifest(folder)
    assert "manifest.json" in str(err.value)
    with pytest.raises(SessionError, match=message):
        SessionReader(folder)


def test_a_manifest_that_is_not_an_object_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(SessionError, match="not a JSON object"):
        SessionReader(tmp_path)


def test_a_session_recorded_before_the_typed_manifest_still_verifies(tmp_path):
    folder = tmp_path / "s"
    shutil.copytree(OLD, folder)
    report = verify_session(folder)
    assert report.steps == len(SessionReader(OLD).steps) == 8
    assert all(v == 0.0 for v in report.max_deviation.values())


def test_a_session_whose_config_holds_options_its_kinds_ignored_still_verifies(tmp_path):
    """Configs recorded before each kind had its own class hold every kind's options; some may have
    been set to something the run ignored (a VAE option under `embedder: none`, beta beside
    thompson). Read from the manifest they are dropped, and the decisions replay the same."""
    folder = tmp_path / "s"
    shutil.copytree(OLD, folder)
    raw = json.loads((folder / "manifest.json").read_text())
    assert raw["config"]["embedder"]["kind"] == "none" and raw["config"]["embedder"]["latent_dim"] == 2
    raw["config"]["embedder"] |= {"latent_dim": 7, "orientation": True}
    raw["config"]["surrogate"] = {**raw["config"].get("surrogate", {}), "kind": "dkl"}
    (folder / "manifest.json").write_text(json.dumps(raw))
    cfg = SessionReader(folder).manifest.experiment_config()
    assert cfg.embedder.kind == "none" and "latent_dim" not in cfg.to_dict()["embedder"]
    assert cfg.policy.acquisition_kind == "ucb" and cfg.policy.acquisition.beta == raw["config"]["policy"]["beta"]
    with pytest.raises(ConfigError, match=r"'latent_dim' .* not options? of embedder kind 'none'"):
        parse_config(raw["config"])  # the same keys in a user's config are errors
    report = verify_session(folder)
    assert report.steps == 8 and all(v == 0.0 for v in report.max_deviation.values())


def test_verify_fails_when_it_would_check_nothing(tmp_path):
    folder = tmp_path / "s"
    shutil.copytree(OLD, folder)
    (folder / "steps.jsonl").write_bytes(b'{"step": 0, "ind')  # one torn record, nothing complete
    with pytest.raises(SessionError, match=r"no complete step to verify \(steps.jsonl: torn last record"):
        verify_session(folder)
