"""The 4D-STEM loop end to end on a tiny config: patterns recorded, replayed, resumed, exported."""

from pathlib import Path

import numpy as np
import pytest

from aexp.config import load_config
from aexp.instrument import load_instrument
from aexp.loop import run_experiment
from aexp.session.export import export_session
from aexp.session.replay import resume_session, verify_session
from aexp.session.store import SessionReader
from aexp.session.zarr_rows import MEASUREMENTS

CONFIG = Path(__file__).parents[2] / "configs" / "fourdstem-dkl.yaml"
TINY = {"instrument.options.survey_pixels": 16, "embedder.epochs": 1, "surrogate.iterations": 10,
        "surrogate.warm_iterations": 2, "stopping.max_steps": 3, "recording.figure": False}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = load_config(CONFIG).with_overrides(**TINY)
    inst = load_instrument(cfg.instrument.driver, cfg.instrument.options, seed=0)
    folder, result = run_experiment(cfg, inst, tmp_path_factory.mktemp("fd") / "run", seed=0, progress=False)
    return cfg, folder, result


def test_the_loop_records_patterns_scored_by_their_dpc_magnitude(run):
    cfg, folder, result = run
    assert len(result.steps) == cfg.budget and all(s.status == "ok" for s in result.steps)
    r = SessionReader(folder)
    patterns = r.spectra()
    assert patterns.shape == (cfg.budget, 64, 64) and (folder / MEASUREMENTS / ".zarray").is_file()
    target = cfg.target.build()
    axes = tuple(a.values() for a in r.manifest.signal_axes)
    np.testing.assert_allclose([s.target for s in r.steps], target(patterns, axes))
    assert verify_session(folder).steps == cfg.budget


def test_resume_after_a_torn_tail_continues_to_the_same_steps(run, tmp_path):
    import shutil

    cfg, folder, result = run
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    lines = (copy / "steps.jsonl").read_bytes().split(b"\n")
    (copy / "steps.jsonl").write_bytes(b"\n".join(lines[:5]) + b"\n" + lines[5][:30])  # killed mid-line
    (copy / "summary.json").unlink()
    (copy / MEASUREMENTS / "7.0.0.tmp").write_bytes(b"\0" * 100)  # and mid-chunk, earlier
    out = resume_session(copy)
    assert out.replayed == 5 and out.new == cfg.budget - 5
    again = SessionReader(copy)
    assert [(s.index, s.target) for s in again.steps] == [(s.index, s.target) for s in result.steps]
    assert len(list(copy.glob("recovered-*.bin"))) == 5  # the torn line, the chunks of steps 5..7, the .tmp
    assert verify_session(copy).steps == cfg.budget


def test_export_is_a_4d_stem_stack_calibrated_in_mrad(run, tmp_path):
    hspy = pytest.importorskip("rsciio.hspy")
    cfg, folder, _ = run
    out = export_session(folder, tmp_path / "run.hspy", format="hspy")[0]
    signal = hspy.file_reader(str(out), lazy=False)[0]
    assert signal["data"].shape == (cfg.budget, 64, 64)
    assert signal["metadata"]["Signal"]["signal_type"] == "electron_diffraction"
    names = [(a["name"], a.get("units")) for a in signal["axes"]]
    assert names == [("step", None), ("ky", "mrad"), ("kx", "mrad")]
    assert signal["axes"][2]["scale"] == pytest.approx(0.35) and signal["axes"][2]["offset"] == pytest.approx(-31.5 * 0.35)
    h5py = pytest.importorskip("h5py")
    export_session(folder, tmp_path / "run.h5", format="hdf5")
    with h5py.File(tmp_path / "run.h5") as f:
        assert f["spectra/data"].shape == (cfg.budget, 64, 64) and f["spectra/axes/kx"].attrs["units"] == "mrad"


def test_report_draws_the_discovery_curve_from_the_twins_pattern_truth(run, tmp_path):
    from aexp.session.report import write_report

    _, folder, _ = run
    page = write_report(folder, tmp_path / "report", map_steps=[]).read_text()
    assert "no discovery curve" not in page and "<img" in page
