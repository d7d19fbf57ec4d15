"""The replay driver opens recordings directly (a .dm3, a .3ds) with the options of ``aexp import``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aexp.cli.main import main
from aexp.config import parse_config
from aexp.griddata import load_grid
from aexp.instrument import load_instrument
from aexp.io.recordings import RecordingError, read_recording
from aexp.loop import run_experiment
from drivers.replay import ReplayInstrument

REAL = Path(__file__).parents[2] / "data" / "real"
EELS = REAL / "DMReader_SpectrumImage_SI-EELS.dm3"
STS = REAL / "NanonisReader_STS_grid_lockin.3ds"


def test_replay_of_a_dm3_measures_the_recorded_spectrum():
    inst = load_instrument("replay", {"path": str(EELS), "survey": str(REAL / "DMReader_SI-HAADF.dm3"),
                                      "pixel_size": 1e-9})
    assert isinstance(inst, ReplayInstrument)
    desc = inst.describe()
    assert desc.survey_shape == (1, 385, 41) and desc.extra["grid_shape"] == [49, 6]
    assert desc.spectrum_axis.units == "eV" and desc.extra["recording"]["source"]["signal"] == "06-EELS Spectrum Image"
    raw = read_recording(EELS)[0].data  # 1024 x 49 x 6
    m = inst.measure((3e-9, 10e-9))  # x = column 3, y = row 10 (1 nm per spectrum)
    assert m.spectrum.tolist() == raw[:, 10, 3].astype(float).tolist()


def test_replay_of_a_3ds_and_its_option_errors():
    inst = load_instrument("replay", {"path": str(STS), "signal": "LockinX", "survey_band": [0.15, 0.22]})
    pos = inst.data.transform.to_instrument(np.array([[7.0, 11.0]]))[0]
    assert inst.measure(tuple(pos)).spectrum.tolist() == pytest.approx(inst.data.spectra[7, 11].tolist())
    with pytest.raises(RecordingError, match=r"unknown options \['band'\]"):
        load_instrument("replay", {"path": str(STS), "band": [0, 1]})
    with pytest.raises(RecordingError, match="several spectrum images"):
        load_instrument("replay", {"path": str(STS)})


def test_nan_spectra_are_failed_measurements_and_nan_survey_pixels_are_masked(tmp_path):
    cube = np.random.default_rng(1).uniform(1, 2, size=(4, 4, 6))
    cube[0, 1] = np.nan
    cube[2, 3, 2] = np.nan
    np.save(tmp_path / "holes.npy", cube)
    options = {"path": str(tmp_path / "holes.npy"), "axis": ["bias", "V", 0.0, 1.0], "pixel_size": 1e-9}
    base = {"instrument": {"driver": "replay", "options": options}, "embedder": "none",
            "candidates": {"stride": 1, "patch_size": 2}, "policy": {"kind": "random", "n_initial": 2},
            "target": {"name": "band_intensity", "window": [0.0, 1.0]}, "recording": {"figure": False}}
    # repair: every candidate is kept, so the two NaN spectra are measured and recorded as failed
    cfg = parse_config({**base, "candidates": {**base["candidates"], "survey_nan": "repair"},
                        "stopping": {"max_steps": 14}})
    _, res = run_experiment(cfg, load_instrument("replay", options), tmp_path / "repair", progress=False)
    failed = [s for s in res.steps if s.status == "failed"]
    assert len(res.steps) == 16 and len(failed) == 2 and all("non-finite" in s.error for s in failed)
    # drop (the default): the NaN survey pixels' candidates are never offered
    cfg = parse_config({**base, "stopping": {"max_steps": 12}})
    _, res = run_experiment(cfg, load_instrument("replay", options), tmp_path / "drop", progress=False)
    assert len(res.steps) == 14 and all(s.status == "ok" for s in res.steps)


def test_cli_import_list_and_write(tmp_path, capsys):
    assert main(["import", "--list", str(STS)]) == 0
    assert "[4] 'topography': image, 30 x 30" in capsys.readouterr().out
    out = tmp_path / "sts.h5"
    assert main(["import", str(STS), "--signal", "LockinX", "--survey", str(STS), "--survey-signal",
                 "topography", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "grid 30 x 30 spectra of 200 values, bias" in text and "topography" in text
    back = load_grid(out)
    assert back.spectra.shape == (30, 30, 200) and back.metadata["source"]["file"] == STS.name
    assert main(["import", str(EELS), "--out", str(tmp_path / "x.npz")]) == 2
    assert "--pixel-size" in capsys.readouterr().err
