import json

import pytest
import yaml

from aexp.cli.main import main


@pytest.fixture
def small(tiny_config):
    return tiny_config(name="cli-small", stopping={"max_steps": 10})


@pytest.fixture
def config(tmp_path, small):
    p = tmp_path / "small.yaml"
    p.write_text(yaml.safe_dump(small))
    return p


def test_check_accepts_a_good_config(config, capsys):
    assert main(["check", str(config)]) == 0
    out = capsys.readouterr().out
    assert "ok" in out and "256 candidates" in out and "budget 13" in out


def test_check_rejects_a_bad_config_with_status_2(tmp_path, small, capsys):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump({**small, "target": {"name": "band_intensity", "window": [9, 10]}}))
    assert main(["check", str(p)]) == 2
    assert "window [9.0, 10.0]" in capsys.readouterr().err
    p.write_text(yaml.safe_dump({**small, "stopping": {"max_steps": 1000}}))
    assert main(["check", str(p)]) == 2
    assert "exceeds the 256 candidates" in capsys.readouterr().err


def test_run_steps_override_and_output(config, tmp_path, capsys):
    out = tmp_path / "session"
    assert main(["run", str(config), "--out", str(out), "--seed", "3", "--steps", "2", "--quiet"]) == 0
    lines = (out / "steps.jsonl").read_text().splitlines()
    assert len(lines) == 3 + 2  # initial ones + --steps
    assert f"session: {out}" in capsys.readouterr().out
    assert json.loads((out / "manifest.json").read_text())["seed"] == 3
    # running again into the same folder is refused and loses nothing
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert len((out / "steps.jsonl").read_text().splitlines()) == 5


def test_unknown_instrument_is_a_clear_error(tmp_path, small, capsys):
    p = tmp_path / "x.yaml"
    p.write_text(yaml.safe_dump({**small, "instrument": {"driver": "tem9000"}}))
    assert main(["check", str(p)]) == 2
    assert "no instrument driver named 'tem9000'" in capsys.readouterr().err


def test_bench_writes_the_documented_json(config, tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", str(config), "--seeds", "0", "--policies", "random,raster",
                 "--json", str(out), "--quiet"]) == 0
    res = json.loads(out.read_text())
    assert res["budget"] == 13 and res["n_candidates"] == 256 and res["top_fraction"] == 0.01
    for name in ("random", "raster"):
        d = res["policies"][name]
        assert len(d["discovery"]) == 1 and 0.0 <= d["discovery"][0] <= 1.0
        assert len(d["decision_s"]) == 1


def test_a_bug_prints_its_traceback_and_exits_1_while_a_user_error_is_one_line(config, monkeypatch, capsys):
    import aexp.cli.main as cli

    def broken(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli, "_cmd_check", broken)
    with pytest.raises(ZeroDivisionError):
        main(["check", str(config)])
    monkeypatch.undo()
    assert main(["check", str(config) + ".missing"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read" in err and "Traceback" not in err


def test_version_comes_from_the_package_metadata(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"aexp {version('aexp')}"


def test_help_lists_the_policy_kinds_and_shows_defaults(capsys):
    from aexp.policies import POLICY_KINDS

    for argv, default in ((["--help"], None), (["run", "--help"], None),
                          (["bench", "--help"], "(default: [0, 1, 2, 3, 4])"),
                          (["serve", "--help"], "(default: tcp://127.0.0.1:5555)")):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0
        out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines at the terminal width
        if argv[0] != "serve":
            assert f"policies (policy.kind in a config): {', '.join(POLICY_KINDS)}" in out
        if default is not None:
            assert default in out


def test_config_prints_the_json_schema_and_a_resolved_config(config, capsys):
    assert main(["config", "--schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"instrument", "policy", "target"} <= set(schema["properties"])
    # one schema per kind, switched on `kind`
    policy = schema["properties"]["policy"]
    assert policy["discriminator"]["propertyName"] == "kind"
    assert set(policy["discriminator"]["mapping"]) == {"dkl", "gp-xy", "random", "raster"}
    assert "orientation" not in schema["$defs"]["VAEEmbedderConfig"]["properties"]
    assert "orientation" in schema["$defs"]["RVAEEmbedderConfig"]["properties"]
    acquisition = schema["$defs"]["DKLPolicyConfig"]["properties"]["acquisition"]
    assert set(acquisition["discriminator"]["mapping"]) == {"ucb", "log_ei", "max_variance", "thompson"}
    assert main(["config", str(config)]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["name"] == "cli-small" and resolved["stopping"]["max_steps"] == 10
    assert resolved["policy"]["acquisition"]["beta"] is not None  # defaults filled in
