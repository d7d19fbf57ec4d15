"""The recipe for a new sample end to end: the group average decides, each step records the weight of
every input group, replay reproduces them, the report draws them; the patch size comes from the survey."""

import json
import math

import numpy as np
import pytest

from aexp.patches import auto_patch_size, correlation_length
from aexp.session.replay import compare_steps, verify_session
from aexp.session.report import write_report
from aexp.session.store import SessionReader
from aexp.types import PixelTransform, Survey


@pytest.fixture(scope="module")
def recipe_session(tiny_session):
    return tiny_session(3, candidates={"patch_size": "auto"},
                        surrogate={"kind": "groups", "centre_pixels": 1, "centre_gradient": True})[0]


def test_steps_record_group_weights_and_the_chosen_patch_size(recipe_session):
    reader = SessionReader(recipe_session)
    policy_steps = [s for s in reader.steps if s.phase == "policy"]
    assert policy_steps and all(s.weights is not None for s in policy_steps)
    assert all(s.weights is None for s in reader.steps if s.phase == "initial")
    for s in policy_steps:
        assert set(s.weights) == {"embedding", "survey", "position"}
        assert math.isclose(sum(s.weights.values()), 1.0, rel_tol=1e-9)
        assert min(s.weights.values()) >= 0
    features = json.loads((recipe_session / "manifest.json").read_text())["features"]
    assert features["patch_size_auto"] is True
    assert features["patch_size"] == reader.manifest.candidates.patch_shape[-1]
    assert features["centre_columns"] == 1 and features["gradient_columns"] == 1


def test_replay_reproduces_the_weights_and_notices_a_change(recipe_session):
    report = verify_session(recipe_session, progress=False)  # raises ReplayDivergence on a difference
    assert report.steps == len(SessionReader(recipe_session).steps)
    step = next(s for s in SessionReader(recipe_session).steps if s.weights)
    other = {k: (v + 0.01 if k == "position" else v) for k, v in step.weights.items()}
    from dataclasses import replace

    diff = compare_steps(replace(step, weights=other), step)
    assert diff is not None and diff.field == "weights"
    assert compare_steps(replace(step, weights=None), step).field == "weights"
    assert compare_steps(step, step) is None


def test_report_has_a_weights_panel(recipe_session, tmp_path):
    page = write_report(recipe_session, tmp_path / "rep", map_steps=[])
    assert 'id="weights"' in page.read_text()
    assert (tmp_path / "rep" / "weights.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def dkl_member_session(tiny_session):
    """The recipe with a DKL member joining at 5 measured points (3 initial + 5 steps: it forecasts 3)."""
    return tiny_session(3, candidates={"patch_size": "auto"}, stopping={"max_steps": 5},
                        surrogate={"kind": "groups", "dkl_from": 5, "centre_pixels": 1,
                                   "centre_gradient": True})[0]


def test_the_dkl_member_is_recorded_replayed_and_drawn(dkl_member_session, tmp_path):
    steps = [s for s in SessionReader(dkl_member_session).steps if s.phase == "policy"]
    for s in steps:
        assert set(s.weights) == {"embedding", "survey", "position", "dkl"}
        assert math.isclose(sum(s.weights.values()), 1.0, rel_tol=1e-9)
    # told 3, 4 points: no DKL yet; 5: it joins with no record (weight 0); 6, 7: it has forecast 1, 2
    assert [s.weights["dkl"] == 0 for s in steps] == [True, True, True, False, False]
    assert all(0 < s.weights["dkl"] < 1 for s in steps[3:])
    verify_session(dkl_member_session, progress=False)  # raises ReplayDivergence on a difference
    write_report(dkl_member_session, tmp_path / "rep", map_steps=[])
    assert (tmp_path / "rep" / "weights.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_hdf5_export_holds_the_weights_per_step(dkl_member_session, tmp_path):
    import h5py

    from aexp.session.export import export_hdf5

    steps = SessionReader(dkl_member_session).steps
    with h5py.File(export_hdf5(dkl_member_session, tmp_path / "s.h5"), "r") as f:
        group = f["steps/weights"]
        assert json.loads(group.attrs["order"]) == ["embedding", "survey", "position", "dkl"]
        for name in ("embedding", "survey", "position", "dkl"):
            expected = [s.weights[name] if s.weights else np.nan for s in steps]
            np.testing.assert_array_equal(group[name][()], expected)  # NaN on the initial points
    assert sum(1 for s in steps if s.weights is None) == 3


def test_the_joint_member_is_recorded_replayed_and_exported(tiny_session, tmp_path):
    # weights.png draws whatever names the steps record (the dkl test above draws one beyond the groups)
    import h5py

    from aexp.session.export import export_hdf5

    session = tiny_session(3, candidates={"patch_size": "auto"}, stopping={"max_steps": 3},
                           surrogate={"kind": "groups", "joint": True, "centre_pixels": 1,
                                      "centre_gradient": True})[0]
    steps = SessionReader(session).steps
    for s in (s for s in steps if s.phase == "policy"):
        assert set(s.weights) == {"embedding", "survey", "position", "joint"}
        assert math.isclose(sum(s.weights.values()), 1.0, rel_tol=1e-9)
    verify_session(session, progress=False)  # raises ReplayDivergence on a difference
    with h5py.File(export_hdf5(session, tmp_path / "s.h5"), "r") as f:
        assert json.loads(f["steps/weights"].attrs["order"]) == ["embedding", "survey", "position", "joint"]
        np.testing.assert_array_equal(f["steps/weights/joint"][()],
                                      [s.weights["joint"] if s.weights else np.nan for s in steps])


def _survey(image: np.ndarray) -> Survey:
    return Survey(image[None], PixelTransform.square(1e-9), ("haadf",))


def test_correlation_length_of_a_gaussian_field_and_the_auto_patch_bounds():
    # white noise smoothed by a Gaussian of width s has ACF exp(-r^2 / (4 s^2)): 1/e at r = 2 s
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    for s in (1.5, 3.0):
        field = gaussian_filter(rng.standard_normal((256, 256)), s, mode="wrap")
        assert correlation_length(field[None]) == pytest.approx(2 * s, abs=1.0)
    smooth = gaussian_filter(rng.standard_normal((128, 128)), 3.0, mode="wrap")
    assert auto_patch_size(_survey(smooth)) == pytest.approx(12, abs=2)
    assert auto_patch_size(_survey(smooth), stride=16) == 16          # covers the survey between candidates
    assert auto_patch_size(_survey(rng.standard_normal((64, 64)))) == 4  # scatter: the smallest patch
    assert auto_patch_size(_survey(np.ones((20, 20)))) == 20           # constant: the largest that fits


def _atoms(period: float, size: int = 128, hexagonal: bool = False, seed: int = 0) -> np.ndarray:
    """Gaussian atoms (sigma 1.2 px) on a square or hexagonal lattice of nearest-neighbour distance
    ``period``, rotated 17 degrees, with 5 % noise."""
    n = np.arange(-2 * size // period, 3 * size // period)
    a1 = np.array([1.0, 0.0])
    a2 = np.array([0.5, np.sqrt(3) / 2]) if hexagonal else np.array([0.0, 1.0])
    i, j = np.meshgrid(n, n)
    sites = (i.reshape(-1, 1) * a1 + j.reshape(-1, 1) * a2) * period
    t = np.deg2rad(17)
    sites = sites @ np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    sites = sites[(sites.min(1) > -4) & (sites.max(1) < size + 4)]
    y, x = np.mgrid[:size, :size].astype(float)
    image = np.zeros((size, size))
    for sy, sx in sites:
        image += np.exp(-((y - sy) ** 2 + (x - sx) ** 2) / (2 * 1.2**2))
    return image + 0.05 * np.random.default_rng(seed).standard_normal(image.shape)


def test_a_periodic_survey_gets_patches_of_its_period():
    from aexp.patches import lattice_period

    for period, hexagonal in ((7.0, False), (10.0, True), (12.5, False)):
        image = _atoms(period, hexagonal=hexagonal)
        assert lattice_period(image[None]) == pytest.approx(period, rel=0.08)
        # the atom is 1.2 px wide: the 1/e lag says 4 px; two periods say what the lattice is
        assert auto_patch_size(_survey(image)) == pytest.approx(2 * period, abs=2)
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(1)
    for s in (1.5, 3.0, 6.0):  # not periodic: the correlation length decides, as before
        assert lattice_period(gaussian_filter(rng.standard_normal((128, 128)), s, mode="wrap")[None]) is None


def test_the_lattice_twins_survey_is_periodic_and_the_others_are_not():
    from aexp.config import load_config
    from aexp.instrument import load_instrument
    from aexp.patches import lattice_period

    choices = {}
    for name in ("lattice-dkl", "plasmonic-dkl"):
        cfg = load_config(f"configs/{name}.yaml")
        survey = load_instrument(cfg.instrument.driver, cfg.instrument.options, seed=0).survey()
        choices[name] = (lattice_period(survey.image), auto_patch_size(survey, cfg.candidates.stride))
    assert choices["lattice-dkl"][0] == pytest.approx(10.4, abs=0.5)  # atoms 10.4 px apart
    assert choices["lattice-dkl"][1] == 21                            # its config: 24
    assert choices["plasmonic-dkl"] == (None, 22)                     # unchanged (docs/recipe.md)


@pytest.mark.parametrize("name", ["plasmonic", "ferroelectric", "lattice", "sts", "eds"])
def test_the_recipe_benchmarks_change_only_what_describes_the_sample(name):
    import yaml

    def sample_free(path: str) -> dict:
        cfg = yaml.safe_load(open(path))
        for key in ("name", "instrument", "target"):
            cfg.pop(key)
        cfg["candidates"].pop("stride")
        cfg["stopping"].pop("max_steps")
        return cfg

    assert sample_free(f"benchmarks/recipe/recipe-{name}.yaml") == sample_free("configs/real-default.yaml")
