import numpy as np
import pytest

from aexp.bench import run_bench
from aexp.config import parse_config
from aexp.griddata import GridDataset, GridDatasetError, load_grid, save_grid
from aexp.instrument import OutOfBounds, load_instrument
from aexp.loop import run_experiment
from aexp.session.replay import NotRecorded, SessionInstrument
from aexp.targets import make_target
from aexp.types import PixelTransform, SpectrumAxis
from drivers.replay import ReplayInstrument

AXIS = SpectrumAxis("energy_loss", "eV", 0.0, 4.0, 5)


def _grid(stride=2, h=6, w=8):
    rows, cols = -(-h // stride), -(-w // stride)
    spectra = np.arange(rows * cols * AXIS.n, dtype=float).reshape(rows, cols, AXIS.n)
    survey = np.random.default_rng(0).uniform(size=(1, h, w)).astype(np.float32)
    return GridDataset(survey, spectra, PixelTransform.square(1e-9), ("haadf",), AXIS, stride=stride)


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_grid_round_trip_and_measure_the_recorded_spectrum(tmp_path, suffix):
    path = save_grid(tmp_path / f"g{suffix}", _grid())
    back = load_grid(path)
    assert back.spectra.shape == (3, 4, 5) and back.stride == 2 and back.channels == ("haadf",)
    assert back.axis == AXIS
    inst = load_instrument("replay", {"path": str(path)})
    assert isinstance(inst, ReplayInstrument)
    desc = inst.describe()
    assert desc.survey_shape == (1, 6, 8) and desc.extra["grid_shape"] == [3, 4] and len(desc.extra["sha256"]) == 64
    m = inst.measure((6e-9, 4e-9))  # x = col 6, y = row 4 -> grid (2, 3)
    assert m.spectrum.tolist() == back.spectra[2, 3].tolist()
    assert np.array_equal(inst.survey().image, back.survey)
    with pytest.raises(NotRecorded, match="every 2 survey pixel"):
        inst.measure((1e-9, 0.0))  # a survey pixel without a spectrum
    with pytest.raises(OutOfBounds):
        inst.measure((50e-9, 0.0))
    with pytest.raises(GridDatasetError, match="already exists"):
        save_grid(path, _grid())


def test_truth_scores_the_grid_with_the_target():
    inst = ReplayInstrument.__new__(ReplayInstrument)
    inst.data, inst.path = _grid(stride=1), None
    target = make_target("band_intensity", window=(0.0, 4.0))
    pos = np.array([[0.0, 0.0], [3e-9, 5e-9]])
    want = target(inst.data.spectra[[0, 5], [0, 3]], AXIS.values())
    assert inst.truth(pos, target).tolist() == pytest.approx(want.tolist())


def test_shapes_that_disagree_are_named(tmp_path):
    good = _grid().fields()
    for key, value, message in [
        ("spectra", np.zeros((2, 4, 5)), "spectra must be 3 x 4 x L"),
        ("survey", np.zeros((6, 8)), "survey must be C x H x W"),
        ("channels", np.array(["a", "b"]), "2 channel names"),
        ("transform_matrix", np.zeros(3), "2 x 2"),
    ]:
        path = tmp_path / f"bad-{key}.npz"
        np.savez(path, **{**good, key: value})
        with pytest.raises(GridDatasetError, match=message):
            load_grid(path)
    np.savez(tmp_path / "nokey.npz", survey=good["survey"])
    with pytest.raises(GridDatasetError, match="missing spectra"):
        load_grid(tmp_path / "nokey.npz")
    with pytest.raises(GridDatasetError, match="no such data set"):
        load_grid(tmp_path / "absent.npz")
    with pytest.raises(ValueError, match="unknown options"):
        load_instrument("replay", {"path": "x.npz", "speed": 2})


@pytest.fixture(scope="module")
def sim_grid(tmp_path_factory, tiny_config):
    from simulators.grid_dataset import make_grid_dataset

    sample = tiny_config()["instrument"]["options"]
    return make_grid_dataset(tmp_path_factory.mktemp("g") / "grid.npz", seed=3, stride=2, **sample)


def test_a_simulator_grid_replays_what_the_simulator_measures(sim_grid, tiny_config):
    sim = load_instrument("plasmonic", tiny_config()["instrument"]["options"], seed=3)
    inst = load_instrument("replay", {"path": str(sim_grid)})
    assert np.array_equal(inst.survey().image, sim.survey().image)
    pos = (10e-9, 4e-9)
    assert np.array_equal(inst.measure(pos).spectrum, sim.measure(pos).spectrum)


def test_whatif_run_and_bench_on_a_grid(sim_grid, tiny_config, tmp_path):
    cfg = parse_config(tiny_config(instrument={"driver": "replay", "options": {"path": str(sim_grid)}}))
    inst = load_instrument("replay", {"path": str(sim_grid)})
    folder, res = run_experiment(cfg, inst, tmp_path / "whatif", progress=False)
    assert len(res.steps) == 8 and all(s.status == "ok" for s in res.steps)
    bench = run_bench(cfg, [0], policies=["random", "raster"], progress=False, log=lambda s: None)
    assert bench["n_candidates"] == 256
    assert all(0.0 <= bench["policies"][p]["discovery"][0] <= 1.0 for p in ("random", "raster"))
    # a session as the instrument: its measured positions only
    session = load_instrument("replay", {"path": str(folder)})
    assert isinstance(session, SessionInstrument)
    assert session.measure(res.steps[0].position).spectrum.shape == (inst.describe().spectrum_axis.n,)
    unmeasured = next(p for p in inst.survey().transform.to_instrument(np.array([[0, 0], [0, 2], [2, 0]]))
                      if tuple(p) not in {s.position for s in res.steps})
    with pytest.raises(NotRecorded, match="replays only its 8 recorded steps"):
        session.measure(tuple(unmeasured))
