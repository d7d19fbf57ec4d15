"""A 4D-STEM file (written by the twin's write_4d) imported as a full-grid data set of patterns,
served by the replay driver, and a what-if loop run on it."""

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rsciio")

from aexp.config import load_config  # noqa: E402
from aexp.griddata import load_grid, save_grid  # noqa: E402
from aexp.instrument import load_instrument  # noqa: E402
from aexp.io.recordings import ImportOptions, RecordingError, import_recording  # noqa: E402
from aexp.loop import run_experiment  # noqa: E402
from aexp.session.replay import verify_session  # noqa: E402
from aexp.targets import make_target  # noqa: E402
from simulators.fourdstem import FourDStemSimulator, write_4d  # noqa: E402

CONFIG = Path(__file__).parents[3] / "configs" / "fourdstem-dkl.yaml"


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    path = tmp_path_factory.mktemp("4d") / "scan.hspy"
    data = write_4d(path, FourDStemSimulator(seed=0, survey_pixels=16), stride=2)  # 8 x 8 x 64 x 64
    return path, data


def test_a_4d_file_becomes_a_grid_of_calibrated_patterns(scan, tmp_path):
    path, written = scan
    ds = import_recording(path)
    assert ds.spectra.shape == (8, 8, 64, 64) and ds.channels == ("sum", "adf", "com_x", "com_y")
    np.testing.assert_array_equal(ds.spectra, written)
    ky, kx = ds.signal_axes
    assert (ky.name, ky.units, kx.name, kx.units) == ("ky", "mrad", "kx", "mrad")
    assert kx.start == pytest.approx(-31.5 * 0.35) and kx.scale == pytest.approx(0.35)
    assert ds.transform.pixel_size == pytest.approx(2e-9)  # 2 nm scan steps, from the navigation axes
    # the survey's DPC channels are the centre of mass of each pattern, in mrad
    com = np.array([make_target("com_magnitude")(p, (ky.values(), kx.values())) for p in ds.spectra[3]])
    np.testing.assert_allclose(np.hypot(ds.survey[2, 3], ds.survey[3, 3]), com, rtol=1e-5)
    back = load_grid(save_grid(tmp_path / "g.npz", ds))
    assert back.signal_axes == ds.signal_axes and back.spectra.shape == (8, 8, 64, 64)
    with pytest.raises(RecordingError, match="virtual images"):
        import_recording(path, ImportOptions(survey_band=(0.0, 1.0)))


def test_what_if_on_the_recorded_patterns(scan, tmp_path):
    path, written = scan
    grid = save_grid(tmp_path / "g.npz", import_recording(path))
    inst = load_instrument("replay", {"path": str(grid)})
    m = inst.measure(tuple(inst.survey().transform.to_instrument(np.array([2.0, 5.0]))))
    np.testing.assert_array_equal(m.spectrum, written[2, 5])
    assert [a.name for a in m.signal_axes] == ["ky", "kx"]
    cfg = load_config(CONFIG).with_overrides(**{
        "instrument.driver": "replay", "instrument.options": {"path": str(grid)},
        "candidates.stride": 1, "candidates.patch_size": 4, "embedder.kind": "none", "surrogate.iterations": 10,
        "surrogate.warm_iterations": 2, "stopping.max_steps": 3, "recording.figure": False})
    folder, result = run_experiment(cfg, inst, tmp_path / "run", seed=0, progress=False)
    assert len(result.steps) == cfg.budget and all(s.status == "ok" for s in result.steps)
    assert verify_session(folder).steps == cfg.budget
