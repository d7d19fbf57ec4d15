from pathlib import Path

import pytest
import yaml

from aexp.config import (
    KINDS,
    ConfigError,
    DKLPolicyConfig,
    SurrogateInputs,
    UCBConfig,
    VAEEmbedderConfig,
    check_against,
    load_config,
    parse_config,
    parse_section,
    with_kind,
)
from aexp.types import Bounds, InstrumentDescription, SpectrumAxis

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))

MINIMAL = {
    "instrument": {"driver": "plasmonic"},
    "target": {"name": "band_intensity", "window": [2.0, 2.5]},
}


def _desc(h=64, w=64, axis=(0.0, 5.0)):
    return InstrumentDescription(
        name="sim", bounds=Bounds(0, 1, 0, 1), survey_shape=(1, h, w), channels=("haadf",),
        spectrum_axis=SpectrumAxis("energy_loss", "eV", axis[0], axis[1], 128),
    )


def _write(tmp_path, text):
    p = tmp_path / "exp.yaml"
    p.write_text(text) if isinstance(text, str) else p.write_bytes(text)
    return p


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads_and_fits_its_instrument(path, tmp_path):
    from aexp.instrument import load_instrument

    cfg = load_config(path)
    if cfg.instrument.driver == "zmq":
        pytest.skip("a served instrument: tests/drivers/test_zmq.py checks it against a live server")
    options = dict(cfg.instrument.options)
    if cfg.instrument.driver == "replay" and not Path(options["path"]).exists():
        # the data set the config names is made by its README recipe
        from simulators.grid_dataset import make_grid_dataset

        options["path"] = make_grid_dataset(tmp_path / "grid.npz", stride=2, survey_pixels=64, n_particles=4)
    inst = load_instrument(cfg.instrument.driver, options, seed=cfg.seed)
    check_against(cfg, inst.describe(), source=str(path))


def test_there_is_a_shipped_config():
    assert any(p.name == "plasmonic-dkl.yaml" for p in CONFIGS)


def test_defaults_and_budget():
    cfg = parse_config(MINIMAL)
    assert cfg.policy.kind == "dkl" and cfg.embedder.kind == "rvae"
    assert cfg.budget == cfg.policy.n_initial + cfg.stopping.max_steps
    assert cfg.target.params == {"window": [2.0, 2.5]}


def test_embedder_none_spelled_as_in_yaml():
    cfg = parse_config({**MINIMAL, "embedder": "none"})
    assert cfg.embedder.kind == "none"


def test_embedder_scaling_options_are_bounded():
    cfg = parse_config({**MINIMAL, "embedder": {"clip_percentile": 0.5, "noise_std": 0.05}})
    assert (cfg.embedder.clip_percentile, cfg.embedder.noise_std) == (0.5, 0.05)
    with pytest.raises(ConfigError, match=r"embedder.clip_percentile: .*less than 50"):
        parse_config({**MINIMAL, "embedder": {"clip_percentile": 50}})
    with pytest.raises(ConfigError, match=r"embedder.noise_std: .*greater than 0"):
        parse_config({**MINIMAL, "embedder": {"noise_std": 0}})


def test_centre_pixels_is_an_odd_square_inside_the_patch():
    cfg = parse_config({**MINIMAL, "candidates": {"patch_size": 8}, "surrogate": {"centre_pixels": 3}})
    assert cfg.surrogate.centre_pixels == 3
    assert "centre_pixels" in SurrogateInputs.model_fields  # a feature choice of every surrogate kind
    with pytest.raises(ConfigError, match=r"surrogate.centre_pixels: .*must be odd.*not 2"):
        parse_config({**MINIMAL, "surrogate": {"centre_pixels": 2}})
    with pytest.raises(ConfigError, match=r"centre_pixels \(9\) is larger than candidates.patch_size \(8\)"):
        parse_config({**MINIMAL, "candidates": {"patch_size": 8}, "surrogate": {"centre_pixels": 9}})


def test_centre_gradient_needs_a_three_pixel_patch():
    cfg = parse_config({**MINIMAL, "candidates": {"patch_size": 3}, "surrogate": {"centre_gradient": True}})
    assert cfg.surrogate.centre_gradient and "centre_gradient" in SurrogateInputs.model_fields
    with pytest.raises(ConfigError, match=r"centre_gradient takes the 3 x 3 .*patch_size is 2"):
        parse_config({**MINIMAL, "candidates": {"patch_size": 2}, "surrogate": {"centre_gradient": True}})


def test_instrument_options_may_stand_beside_the_driver():
    flat = parse_config({**MINIMAL, "instrument": {"driver": "zmq", "address": "tcp://127.0.0.1:5555"}})
    nested = parse_config({**MINIMAL, "instrument": {"driver": "zmq", "options": {"address": "tcp://127.0.0.1:5555"}}})
    assert flat.instrument == nested.instrument
    assert flat.instrument.options == {"address": "tcp://127.0.0.1:5555"}
    with pytest.raises(ConfigError, match=r"instrument: .*'address'.* both"):
        parse_config({**MINIMAL, "instrument": {"driver": "zmq", "address": "a", "options": {"address": "b"}}})


def test_a_misspelt_flat_instrument_option_is_named_when_the_instrument_is_built():
    from aexp.instrument import load_instrument

    cfg = parse_config({**MINIMAL, "instrument": {"driver": "plasmonic", "survey_pixel": 64}})
    with pytest.raises(ValueError, match="survey_pixel"):
        load_instrument(cfg.instrument.driver, cfg.instrument.options, seed=0)


def test_unknown_key_is_named_with_file_and_section(tmp_path):
    p = _write(tmp_path, yaml.safe_dump({**MINIMAL, "policy": {"kind": "dkl", "betta": 2}}))
    with pytest.raises(ConfigError, match=r"exp.yaml: policy.betta: unknown key"):
        load_config(p)


def test_wrong_type_names_key_and_value(tmp_path):
    p = _write(tmp_path, yaml.safe_dump({**MINIMAL, "stopping": {"max_steps": "many"}}))
    with pytest.raises(ConfigError, match=r"stopping.max_steps: .*integer.*'many'"):
        load_config(p)


def test_malformed_yaml_names_the_line(tmp_path):
    p = _write(tmp_path, "instrument:\n  driver: plasmonic\ntarget: [unclosed\n")
    with pytest.raises(ConfigError, match=r"exp.yaml: line \d+.*malformed YAML"):
        load_config(p)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(_write(tmp_path, "- a\n- b\n"))


def test_target_parameters_are_checked():
    with pytest.raises(ConfigError, match="unknown target"):
        parse_config({**MINIMAL, "target": {"name": "magic"}})
    with pytest.raises(ConfigError, match=r"not \['widow'\]"):
        parse_config({**MINIMAL, "target": {"name": "band_intensity", "widow": [1, 2]}})
    with pytest.raises(ConfigError, match=r"needs \['window'\]"):
        parse_config({**MINIMAL, "target": {"name": "band_intensity"}})


def test_checks_against_the_instrument():
    check_against(parse_config(MINIMAL), _desc())
    with pytest.raises(ConfigError, match="target: .*window"):
        check_against(parse_config({**MINIMAL, "target": {"name": "band_intensity", "window": [6, 7]}}), _desc())
    with pytest.raises(ConfigError, match="patch_size: 80 px is larger"):
        check_against(parse_config({**MINIMAL, "candidates": {"patch_size": 80}}), _desc())
    with pytest.raises(ConfigError, match="candidates.context: 5 x patch_size 16 = 80 px is larger"):
        check_against(parse_config({**MINIMAL, "candidates": {"patch_size": 16, "context": 5}}), _desc())
    with pytest.raises(ConfigError, match="context"):
        parse_config({**MINIMAL, "candidates": {"context": 0}})
    with pytest.raises(ConfigError, match="exceeds the 16 candidates"):
        cfg = parse_config({**MINIMAL, "candidates": {"stride": 16, "patch_size": 8}})
        check_against(cfg, _desc())
    with pytest.raises(ConfigError, match="channels"):
        check_against(parse_config({**MINIMAL, "candidates": {"channels": ["bf"]}}), _desc())


def test_overrides_are_validated():
    cfg = parse_config(MINIMAL).with_overrides(**{"stopping.max_steps": 7})
    assert cfg.stopping.max_steps == 7
    with pytest.raises(ConfigError):
        parse_config(MINIMAL).with_overrides(**{"stopping.max_steps": -1})


def test_neighbour_counts_need_atom_candidates_and_a_known_class():
    counts = [{"brightness": 0, "radius_px": 13}]
    cfg = parse_config({**MINIMAL, "candidates": {"mode": "atoms"}, "surrogate": {"neighbour_counts": counts}})
    assert cfg.surrogate.neighbour_counts[0].radius_px == 13
    assert {"neighbour_counts", "brightness_classes"} <= set(SurrogateInputs.model_fields)
    with pytest.raises(ConfigError, match="neighbour_counts counts found atoms; it needs candidates.mode: atoms"):
        parse_config({**MINIMAL, "surrogate": {"neighbour_counts": counts}})
    with pytest.raises(ConfigError, match=r"neighbour_counts\[0\].brightness is 3; the classes are 0..2"):
        parse_config({**MINIMAL, "candidates": {"mode": "atoms"},
                      "surrogate": {"neighbour_counts": [{"brightness": 3, "radius_px": 5}]}})
    with pytest.raises(ConfigError, match="radius_px"):
        parse_config({**MINIMAL, "candidates": {"mode": "atoms"},
                      "surrogate": {"neighbour_counts": [{"brightness": 0, "radius_px": -1}]}})


def test_a_yaml_bomb_is_refused_quickly_with_a_short_message(tmp_path):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    path = _write(tmp_path, "\n".join(lines) + "\nseed: *a9\n")
    assert path.stat().st_size < 1000  # a few hundred bytes standing for 9**10 values
    with pytest.raises(ConfigError, match=r"exp.yaml: the YAML expands to more than 100,000 values") as err:
        load_config(path)
    assert len(str(err.value)) < 300


def test_a_duplicate_key_is_named_with_both_lines(tmp_path):
    path = _write(tmp_path, "seed: 1\npolicy:\n  beta: 2\n  beta: 3\n")
    with pytest.raises(ConfigError, match=r"exp.yaml: line 4: duplicate key 'beta' \(first at line 3\)"):
        load_config(path)


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_non_finite_numbers_are_refused_naming_the_key(tmp_path, value):
    path = _write(tmp_path, yaml.safe_dump(MINIMAL) + f"surrogate:\n  lr: {value}\n")
    with pytest.raises(ConfigError, match=r"exp.yaml: surrogate.lr: .*finite"):
        load_config(path)


def test_a_file_that_is_not_utf8_is_named(tmp_path):
    path = _write(tmp_path, b"seed: 1\nname: \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"exp.yaml: not UTF-8 text \(byte \d+"):
        load_config(path)


@pytest.mark.parametrize("seed", [-1, 2**63, 10**40])
def test_a_seed_out_of_range_is_named(seed):
    with pytest.raises(ConfigError, match=r"<config>: seed: "):
        parse_config({**MINIMAL, "seed": seed})


def test_a_long_value_is_shortened_in_the_error():
    with pytest.raises(ConfigError) as err:
        parse_config({**MINIMAL, "name": ["x" * 10_000] * 1000})
    assert "name" in str(err.value) and len(str(err.value)) < 400


def test_cuda_without_a_gpu_is_a_check_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    desc = InstrumentDescription("twin", Bounds(0, 1e-7, 0, 1e-7), (1, 64, 64), ("haadf",),
                                 SpectrumAxis("energy_loss", "eV", 0.0, 5.0, 64))
    with pytest.raises(ConfigError, match="device: cuda was asked for but torch sees no CUDA GPU"):
        check_against(parse_config({**MINIMAL, "device": "cuda"}), desc)


# --- one class per kind ---

def test_a_key_given_to_a_kind_that_does_not_take_it_is_an_error_naming_both():
    with pytest.raises(ConfigError, match=r"embedder: 'orientation' \(an option of rvae, affine, skiprvae\) is not "
                                          r"an option of embedder kind 'vae'"):
        parse_config({**MINIMAL, "embedder": {"kind": "vae", "orientation": True}})
    with pytest.raises(ConfigError, match=r"policy: 'acquisition' .* not an option of policy kind 'random'"):
        parse_config({**MINIMAL, "policy": {"kind": "random", "acquisition": "log_ei"}})
    with pytest.raises(ConfigError, match=r"policy.acquisition: 'beta' .* not an option of acquisition kind 'log_ei'"):
        parse_config({**MINIMAL, "policy": {"acquisition": "log_ei", "beta": 1.0}})
    with pytest.raises(ConfigError, match=r"surrogate: 'gp_until' \(an option of dkl\) is not an option of surrogate "
                                          r"kind 'groups'"):
        parse_config({**MINIMAL, "surrogate": {"kind": "groups", "gp_until": 30}})
    with pytest.raises(ConfigError, match=r"embedder.orientatoin: unknown key of embedder kind 'rvae', which takes"):
        parse_config({**MINIMAL, "embedder": {"orientatoin": True}})
    with pytest.raises(ConfigError, match=r"policy.acquisition.bta: unknown key of acquisition kind 'ucb'"):
        parse_config({**MINIMAL, "policy": {"acquisition": {"kind": "ucb", "bta": 1}}})
    with pytest.raises(ConfigError, match=r"embedder: embedder kind 'pca' is not one of rvae, vae"):
        parse_config({**MINIMAL, "embedder": {"kind": "pca"}})
    with pytest.raises(ConfigError, match=r"^<config>: policy.batch: Input should be greater"):  # no kind in the path
        parse_config({**MINIMAL, "policy": {"batch": 0}})


def test_a_foreign_key_at_its_default_is_dropped_and_a_recorded_config_drops_every_one():
    cfg = parse_config({**MINIMAL, "embedder": {"kind": "vae", "orientation": False, "n_classes": 4},
                        "policy": {"kind": "random", "acquisition": "ucb", "beta": 4.0}})
    assert cfg.embedder == VAEEmbedderConfig() and cfg.policy.kind == "random"
    assert "acquisition" not in cfg.to_dict()["policy"] and "orientation" not in cfg.to_dict()["embedder"]
    # what the recording run ignored is dropped from a session's config, whatever its value
    recorded = {**MINIMAL, "embedder": {"kind": "vae", "orientation": True},
                "policy": {"kind": "dkl", "acquisition": "log_ei", "beta": 2.0}}
    cfg = parse_config(recorded, recorded=True)
    assert cfg.embedder == VAEEmbedderConfig() and cfg.policy.acquisition_kind == "log_ei"
    with pytest.raises(ConfigError, match="orientation"):
        parse_config(recorded)


def test_the_flat_acquisition_form_is_the_acquisition_section():
    flat = parse_config({**MINIMAL, "policy": {"acquisition": "ucb", "beta": 2.5}})
    nested = parse_config({**MINIMAL, "policy": {"acquisition": {"kind": "ucb", "beta": 2.5}}})
    assert flat == nested and isinstance(flat.policy, DKLPolicyConfig) and flat.policy.acquisition == UCBConfig(beta=2.5)
    assert flat.to_dict()["policy"]["acquisition"] == {"kind": "ucb", "beta": 2.5}
    assert parse_config({**MINIMAL, "policy": {"beta": 1.0}}).policy.acquisition == UCBConfig(beta=1.0)
    assert parse_config(flat.to_dict()) == flat  # a dumped config reads back the same
    with pytest.raises(ConfigError, match="beta is given both on the policy and under acquisition"):
        parse_config({**MINIMAL, "policy": {"acquisition": {"kind": "ucb", "beta": 1}, "beta": 2}})
    assert flat.policy.label == "dkl/ucb" and parse_config({**MINIMAL, "policy": {"kind": "raster"}}).policy.label == "raster"


def test_switching_a_kind_keeps_the_options_the_new_kind_takes():
    cfg = parse_config({**MINIMAL, "embedder": {"kind": "rvae", "epochs": 3, "orientation": True},
                        "policy": {"acquisition": {"kind": "ucb", "beta": 1.0}, "n_initial": 7}})
    vae = with_kind(cfg.embedder, "vae")
    assert vae == VAEEmbedderConfig(epochs=3)
    assert with_kind(cfg.policy, "random").n_initial == 7 and with_kind(cfg.policy, "gp-xy").acquisition.beta == 1.0
    switched = cfg.with_overrides(**{"embedder.kind": "none", "policy.kind": "raster", "policy.n_initial": 2})
    assert switched.embedder.kind == "none" and switched.policy.kind == "raster" and switched.policy.n_initial == 2
    with pytest.raises(ConfigError, match="embedder kind 'pca' is not one of"):
        with_kind(cfg.embedder, "pca")
    assert parse_section("acquisition", "thompson").kind == "thompson"
    assert {name: list(f.members)[0] == f.default for name, f in KINDS.items()} == dict.fromkeys(KINDS, True)


def test_every_shipped_and_recorded_config_loads_as_the_same_experiment():
    root = Path(__file__).parents[2]
    paths = [*root.glob("configs/**/*.yaml"), *root.glob("benchmarks/recipe/*.yaml")]
    assert len(paths) >= 10
    for path in paths:
        cfg = load_config(path)
        assert parse_config(cfg.to_dict(), source=str(path)) == cfg
    import json

    for manifest in root.glob("tests/data/sessions/*/manifest.json"):
        data = json.loads(manifest.read_text())["config"]
        cfg = parse_config(data, recorded=True)
        assert cfg.embedder.kind == data["embedder"]["kind"] and cfg.policy.acquisition_kind == data["policy"]["acquisition"]
        assert cfg.policy.acquisition.beta == data["policy"]["beta"]


def test_joint_member_belongs_to_the_group_average(tiny_config):
    assert parse_config(tiny_config(surrogate={"kind": "groups", "joint": True})).surrogate.joint is True
    assert parse_config(tiny_config(surrogate={"kind": "groups"})).surrogate.joint is False  # as before
    with pytest.raises(ConfigError, match="'joint' .* not an option of surrogate kind 'dkl'"):
        parse_config(tiny_config(surrogate={"kind": "dkl", "joint": True}))


def test_dkl_from_belongs_to_the_group_average(tiny_config):
    cfg = parse_config(tiny_config(surrogate={"kind": "groups", "dkl_from": 20}))
    assert cfg.surrogate.dkl_from == 20 and cfg.surrogate.iterations == 20  # the member's DKL settings
    assert parse_config(tiny_config(surrogate={"kind": "groups"})).surrogate.dkl_from is None  # as before
    with pytest.raises(ConfigError, match="'dkl_from' .* not an option of surrogate kind 'dkl'"):
        parse_config(tiny_config(surrogate={"kind": "dkl", "dkl_from": 20}))
    with pytest.raises(ConfigError, match="base_kernel"):
        parse_config(tiny_config(surrogate={"kind": "groups", "dkl_from": 20, "base_kernel": False}))


def test_the_travel_measurements_configs_differ_only_by_the_travel_cost():
    # docs/realtime.md "Travel cost" pairs these by seed: nothing but policy.travel (and the name) may differ
    folder = Path(__file__).parents[2] / "benchmarks" / "travel"
    for base, travel in (("plasmonic-async-sim", "plasmonic-travel-sim"),
                         ("ferroelectric-stage-sim", "ferroelectric-travel-sim")):
        a, b = (load_config(folder / f"{n}.yaml").to_dict() for n in (base, travel))
        assert (a.pop("name"), b.pop("name")) == (base, travel)
        assert a["policy"].pop("travel") is None
        assert b["policy"].pop("travel")["units"] == "spread"
        assert a == b and a["instrument"]["options"]["clock"] == "sim"
