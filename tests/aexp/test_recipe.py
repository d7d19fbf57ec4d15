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
    """The recipe with a DKL member joining at 5 measured points (3 initial + 5 steps: it forecasts 3),
    in the loop that measures, then decides, so decision k is fitted on every point before it."""
    return tiny_session(3, candidates={"patch_size": "auto"}, stopping={"max_steps": 5},
                        policy={"kind": "dkl", "n_initial": 3, "pending": False},
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


# --- candidates.mode: auto ----------------------------------------------------------------------

def _honeycomb(a: float, size: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An MX2-like honeycomb (lattice constant ``a``): bright metal columns on one sublattice, dim
    ones (0.55 of the metal) on the other, ``a / sqrt 3`` apart, Gaussian columns of sigma 1.2 px, 5 %
    noise. Returns the image and the ``N x 2`` (row, col) of the columns at least 3 px inside it."""
    a1, a2 = np.array([a, 0.0]), np.array([a / 2, a * np.sqrt(3) / 2])
    n = np.arange(-int(2 * size / a), int(2 * size / a))
    i, j = (v.reshape(-1, 1) for v in np.meshgrid(n, n))
    metal = i * a1 + j * a2
    dim = metal + (a1 + a2) / 3
    y, x = np.mgrid[:size, :size].astype(float)
    image = np.zeros((size, size))
    sites = []
    for pts, height in ((metal, 1.0), (dim, 0.55)):
        pts = pts[(pts.min(1) > -4) & (pts.max(1) < size + 4)]
        for sy, sx in pts:
            image += height * np.exp(-((y - sy) ** 2 + (x - sx) ** 2) / (2 * 1.2**2))
        sites.append(pts)
    sites = np.concatenate(sites)
    inside = sites[(sites.min(1) >= 3) & (sites.max(1) <= size - 4)]
    return image + 0.05 * np.random.default_rng(seed).standard_normal(image.shape), inside


def _found_every(found: np.ndarray, sites: np.ndarray, tol: float = 1.0) -> bool:
    from scipy.spatial import cKDTree

    distance, _ = cKDTree(found).query(sites)
    return bool((distance <= tol).all())


def test_auto_mode_puts_a_candidate_on_every_column_of_a_periodic_survey():
    from aexp.patches import choose_mode, find_atoms

    # a honeycomb of two species: the autocorrelation's shell is the same-species distance a, the
    # columns are a / sqrt 3 apart, and the dim ones must not be swallowed by their bright neighbours
    for a in (8.0, 10.5):  # (a two-species shell at a / sqrt 3 standing apart, from ~11 px, is not found)
        image, sites = _honeycomb(a)
        choice = choose_mode(_survey(image), anywhere=True)
        assert choice.mode == "atoms"
        assert choice.period_px == pytest.approx(a, rel=0.08)
        assert choice.atom_sigma_px == pytest.approx(choice.period_px / (4 * math.sqrt(3)), abs=1e-3)
        assert choice.min_distance_px == math.floor(choice.period_px / (2 * math.sqrt(3)))
        found = find_atoms(image, choice.atom_sigma_px, choice.min_distance_px, threshold=0.1)
        assert _found_every(found, sites)
        assert len(found) <= 1.1 * len(sites)  # no spurious maxima between the columns
    # square and hexagonal lattices of one species (the shell is the nearest-neighbour distance)
    for period, hexagonal in ((8.0, False), (10.0, True)):
        image = _atoms(period, hexagonal=hexagonal)
        choice = choose_mode(_survey(image), anywhere=True)
        found = find_atoms(image, choice.atom_sigma_px, choice.min_distance_px, threshold=0.1)
        assert choice.mode == "atoms"
        assert len(found) == pytest.approx((128 / period) ** 2 * (2 / np.sqrt(3) if hexagonal else 1), rel=0.15)


def test_auto_mode_keeps_the_grid_off_a_lattice_and_on_a_recorded_grid():
    from scipy.ndimage import gaussian_filter

    from aexp.patches import choose_mode

    smooth = gaussian_filter(np.random.default_rng(2).standard_normal((96, 96)), 3.0, mode="wrap")
    assert choose_mode(_survey(smooth), anywhere=True).mode == "grid"
    image, _ = _honeycomb(10.5)
    recorded = choose_mode(_survey(image), anywhere=False)  # spectra exist only on the recorded grid
    assert (recorded.mode, "only on its grid" in recorded.reason) == ("grid", True)
    assert recorded.period_px == pytest.approx(10.5, rel=0.08)


@pytest.mark.parametrize("driver, options, mode", [
    ("lattice", {"survey_pixels": 96}, "atoms"),
    ("plasmonic", {}, "grid"),
    ("ferroelectric", {"survey_pixels": 40}, "grid"),
    ("fourdstem", {"survey_pixels": 24}, "grid"),
])
def test_auto_mode_on_the_twins(driver, options, mode):
    from aexp.instrument import load_instrument
    from aexp.patches import choose_mode, probes_anywhere

    inst = load_instrument(driver, options, seed=0)
    assert probes_anywhere(inst.describe())
    assert choose_mode(inst.survey(), anywhere=True).mode == mode


@pytest.mark.parametrize("name", ["real-default", "real/eds-si",
                                  pytest.param("real/sts-empty-states", marks=pytest.mark.slow)])
def test_auto_mode_keeps_the_grid_on_the_shipped_recordings(name):
    from aexp.config import load_config
    from aexp.instrument import load_instrument
    from aexp.patches import resolve_candidates

    pytest.importorskip("rsciio")
    cfg = load_config(f"configs/{name}.yaml")
    inst = load_instrument(cfg.instrument.driver, cfg.instrument.options, seed=0)
    resolved, choice = resolve_candidates(inst.survey(), cfg.candidates.model_copy(update={"mode": "auto"}),
                                          inst.describe())
    assert (resolved.mode, choice.mode) == ("grid", "grid")


def test_a_replayed_lattice_grid_keeps_the_grid(tmp_path):
    from aexp.griddata import GridDataset, save_grid
    from aexp.instrument import load_instrument
    from aexp.patches import choose_mode, probes_anywhere

    twin = load_instrument("lattice", {"survey_pixels": 64}, seed=0)
    survey = twin.survey()
    rc = np.stack(np.meshgrid(np.arange(0, 64, 16), np.arange(0, 64, 16), indexing="ij"), -1).reshape(-1, 2)
    spectra = np.stack([twin.measure(tuple(xy)).spectrum for xy in survey.transform.to_instrument(rc)])
    path = save_grid(tmp_path / "lattice.npz", GridDataset(survey.image, spectra.reshape(4, 4, -1),
                                                            survey.transform, survey.channels,
                                                            twin.describe().spectrum_axis, stride=16))
    replay = load_instrument("replay", {"path": str(path)}, seed=0)
    assert choose_mode(survey, anywhere=True).mode == "atoms"  # the twin itself would get atoms
    assert not probes_anywhere(replay.describe())
    assert choose_mode(replay.survey(), probes_anywhere(replay.describe())).mode == "grid"


def test_auto_mode_is_recorded_printed_and_replayed(tmp_path):
    from aexp.cli.main import main
    from aexp.session.replay import verify_session

    cfg = {
        "name": "auto-lattice", "seed": 3, "device": "cpu",
        "instrument": {"driver": "lattice", "options": {"survey_pixels": 48}},
        "candidates": {"mode": "auto", "stride": 6, "patch_size": "auto"},
        "embedder": "none",
        "policy": {"kind": "random", "n_initial": 3},
        "target": {"name": "edge_onset", "window": [155.0, 175.0]},
        "stopping": {"max_steps": 2},
        "recording": {"figure": False},
    }
    import yaml

    path = tmp_path / "auto.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "s"
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    reader = SessionReader(out)
    mode = reader.manifest.features["candidates_mode"]
    assert mode["mode"] == "atoms" and mode["auto"] is True and mode["min_distance_px"] >= 1
    assert reader.manifest.candidates.grid_shape is None  # one candidate per column, not the 8 x 8 grid
    assert reader.manifest.candidates.count != 64
    assert printed.getvalue().count("candidates: atoms (mode auto: the survey is periodic") == 1
    report = verify_session(out)  # raises ReplayDivergence on a difference
    assert report.steps == 5 and not report.warnings


def test_the_number_of_brightness_classes_follows_the_distribution():
    from aexp.features import count_brightness_classes

    rng = np.random.default_rng(4)
    one = rng.normal(1.0, 0.05, 600)
    two = np.r_[rng.normal(0.55, 0.04, 600), rng.normal(1.0, 0.04, 600)]
    three = np.r_[two, rng.normal(1.6, 0.05, 30)]  # a rare heavy species keeps its class
    assert [count_brightness_classes(v) for v in (one, two, three)] == [1, 2, 3]


def test_auto_neighbour_counts_on_a_lattice_and_none_on_a_grid():
    from aexp.config import parse_config
    from aexp.features import surrogate_inputs
    from aexp.instrument import load_instrument
    from aexp.loop import survey_candidates

    def inputs(driver: str, options: dict, target: dict):
        cfg = parse_config({
            "instrument": {"driver": driver, "options": options},
            "candidates": {"mode": "auto", "stride": 4, "patch_size": "auto"}, "embedder": "none",
            "surrogate": {"kind": "groups", "neighbour_counts": "auto", "position": False}, "target": target})
        surveyed = survey_candidates(cfg, load_instrument(driver, options, seed=1))
        period = surveyed.mode.period_px if surveyed.mode.mode == "atoms" else None
        feats, info = surrogate_inputs(surveyed.candidates, cfg, seed=0, progress=False, period_px=period)
        plain = cfg.model_copy(update={"surrogate": cfg.surrogate.model_copy(update={"neighbour_counts": []})})
        return feats, info, surrogate_inputs(surveyed.candidates, plain, seed=0, progress=False)[0], surveyed

    feats, info, plain, surveyed = inputs("lattice", {"survey_pixels": 96},
                                          {"name": "edge_onset", "window": [155.0, 175.0]})
    k = info["neighbour_counts_auto"]["classes"]
    assert k == 3  # chalcogen pairs, host metal, dopants
    assert info["neighbour_counts_auto"]["radius_px"] == pytest.approx(1.25 * surveyed.mode.period_px, abs=1e-3)
    assert info["neighbour_columns"] == k and feats.shape[1] == plain.shape[1] + k
    np.testing.assert_array_equal(feats[:, :plain.shape[1]], plain)
    # on a grid (not periodic) auto adds nothing: the features are the ones without it
    feats, info, plain, _ = inputs("plasmonic", {"survey_pixels": 32, "n_particles": 2,
                                                 "size_range_m": [6e-9, 10e-9]},
                                   {"name": "band_intensity", "window": [1.0, 3.0]})
    assert info["neighbour_counts_auto"] == {"classes": 0, "radius_px": None}
    np.testing.assert_array_equal(feats, plain)


def test_auto_neighbour_counts_need_the_auto_mode():
    from aexp.config import ConfigError, parse_config

    base = {"instrument": {"driver": "lattice"}, "target": {"name": "edge_onset", "window": [155.0, 175.0]},
            "surrogate": {"kind": "groups", "neighbour_counts": "auto"}}
    with pytest.raises(ConfigError, match="neighbour_counts: auto takes the lattice period"):
        parse_config({**base, "candidates": {"mode": "atoms"}})
    assert parse_config({**base, "candidates": {"mode": "auto"}}).surrogate.neighbour_counts == "auto"
