"""The operator's channel: each command changes the next decision as documented and is recorded;
replay --verify and resume re-apply the recorded actions; bad commands are refused, nothing changed."""

import json
import threading
import time

import numpy as np
import pytest

from aexp.cli.main import main
from aexp.config import parse_config
from aexp.instrument import load_instrument
from aexp.live.channel import (
    ACTIONS,
    CONTROL,
    Command,
    ControlError,
    OperatorOptions,
    read_actions,
    read_state,
    send,
)
from aexp.loop import run_experiment
from aexp.session.replay import resume_session, verify_session
from aexp.session.store import SessionReader


def _run(tmp_path, tiny_config, on_step=None, options=None, seed=0, **changes):
    # the loop that measures, then decides, unless a test asks for pending points: a command sent
    # when step k is recorded then lands at decision k + 1 (with pending points, k + 2: the decision
    # k + 1 was taken while k was measured)
    changes["policy"] = {"pending": False, **changes.get("policy", {})}
    cfg = parse_config(tiny_config(**changes))
    inst = load_instrument("plasmonic", cfg.instrument.options, seed=seed)
    return run_experiment(cfg, inst, tmp_path / "s", seed=seed, progress=False, on_step=on_step, operator=options)


def _unmeasured(folder, far_from=()):
    measured = {s.index for s in SessionReader(folder).steps} | set(far_from)
    return next(i for i in range(200, 0, -1) if i not in measured)


def test_goto_exclude_and_set_change_the_next_decision_and_replay_reproduces_them(tmp_path, tiny_config):
    sent = {}

    def on_step(step, budget):
        if step.step == 3:  # the policy has taken over: steer it
            folder = tmp_path / "s"
            sent["goto"] = _unmeasured(folder)
            send(folder, Command("goto", index=sent["goto"]))
            send(folder, Command("exclude", box=(0.0, 0.0, 8e-9, 8e-9)))
            send(folder, Command("set", name="beta", value=0.25))

    folder, result = _run(tmp_path, tiny_config, on_step, stopping={"max_steps": 6})
    steps = SessionReader(folder).steps
    assert steps[4].phase == "operator" and steps[4].index == sent["goto"]
    assert steps[4].acquisition is None
    actions = {a.what: a for a in read_actions(folder) if a.who == "operator"}
    assert set(actions) == {"goto", "exclude", "set"}
    assert all(a.status == "applied" and a.step == 4 for a in actions.values())
    assert actions["set"].args == {"name": "beta", "value": 0.25}
    excluded = set(actions["exclude"].args["indices"])
    positions = np.load(folder / "candidates.npy")
    inside = {i for i, (x, y) in enumerate(positions) if x <= 8e-9 and y <= 8e-9}
    assert excluded == inside - {s.index for s in steps[:4]}
    assert not excluded & {s.index for s in steps[4:]}
    report = verify_session(folder)
    assert report.steps == len(steps)

    from aexp.session.report import write_report

    html = write_report(folder, tmp_path / "report", map_steps=[5]).read_text()
    assert "operator steps</th><td>1: steps 4 " in html  # numbered from 0, as everywhere
    assert "operator goto (applied)</th><td>before step 4" in html and "index " + str(sent["goto"]) in html


def test_set_beta_reaches_the_policy_from_the_next_decision(tiny_config):
    from aexp.campaign import Budget, Campaign, Directive
    from aexp.loop import build_policy, prepare
    from aexp.session.store import MemoryRecorder

    cfg = parse_config(tiny_config(stopping={"max_steps": 3}))
    inst = load_instrument("plasmonic", cfg.instrument.options, seed=0)
    prepared = prepare(cfg, inst, 0, progress=False)
    policy = build_policy(cfg, int(prepared.features.shape[1]), 0, "cpu")
    seen = []

    class Scripted:
        want_maps = False

        def before_decision(self, k, excluded, steps):
            seen.append(policy.beta)
            return Directive(settings={"beta": 9.0}) if k == 4 else Directive()

        def review(self, k, proposed, excluded):
            return Directive(stop=k == 5)

        def decided(self, k, decisions):
            pass

    result = Campaign(instrument=inst, candidates=prepared.candidates, features=prepared.features,
                      target=cfg.target.build(), policy=policy, n_initial=3,
                      budget=Budget(6), recorder=MemoryRecorder(), seed=0,
                      operator=Scripted()).run()
    assert seen == [4.0, 4.0, 4.0, 4.0, 4.0, 9.0]
    assert result.stop_reason == "operator" and len(result.steps) == 5


def test_live_maps_change_no_decision_and_both_runs_replay(tmp_path, tiny_config):
    from aexp.live.channel import MAPS

    runs = {}
    for live in (False, True):
        folder = tmp_path / str(live)
        cfg = parse_config(tiny_config(stopping={"max_steps": 8}))
        inst = load_instrument("plasmonic", cfg.instrument.options, seed=2)
        run_experiment(cfg, inst, folder, seed=2, progress=False, operator=OperatorOptions(live=live))
        runs[live] = SessionReader(folder).steps
        assert verify_session(folder).steps == len(runs[live]) == 11
    fields = ("index", "phase", "acquisition", "predicted_mean", "predicted_std")
    assert [[getattr(s, f) for f in fields] for s in runs[True]] == \
        [[getattr(s, f) for f in fields] for s in runs[False]]
    assert any(s.phase == "policy" for s in runs[True])
    with np.load(tmp_path / "True" / MAPS) as maps:  # the last decision's own posterior
        last = runs[True][-1]
        assert maps["mean"][last.index] == pytest.approx(last.predicted_mean, rel=1e-6)
        assert maps["std"][last.index] == pytest.approx(last.predicted_std, rel=1e-6)
        assert maps["acquisition"][last.index] == np.float32(last.acquisition)


def test_pause_holds_the_loop_until_resume_and_stop_ends_it(tmp_path, tiny_config):
    folder = tmp_path / "s"
    times = {}

    def resumer():
        deadline = time.monotonic() + 60
        while read_state(folder).get("state") != "paused":
            assert time.monotonic() < deadline, "the loop never paused"
            time.sleep(0.02)
        times["paused"] = time.monotonic()
        time.sleep(0.3)
        send(folder, Command("resume"))

    def on_step(step, budget):
        if step.step == 3:
            send(folder, Command("pause"))
            threading.Thread(target=resumer, daemon=True).start()
        if step.step == 5:
            send(folder, Command("stop"))

    _, result = _run(tmp_path, tiny_config, on_step, stopping={"max_steps": 9})
    assert result.stop_reason == "operator" and len(result.steps) == 6
    assert json.loads((folder / "summary.json").read_text())["stop_reason"] == "operator"
    whats = [(a.what, a.step) for a in read_actions(folder) if a.who == "operator"]
    assert whats == [("pause", 4), ("resume", 4), ("stop", 6)]
    assert verify_session(folder).steps == 6


def test_approve_mode_holds_each_proposal_and_a_goto_replaces_it(tmp_path, tiny_config):
    folder = tmp_path / "s"
    replaced = {}

    def operator_at_the_microscope():
        deadline = time.monotonic() + 60
        while not read_state(folder).get("awaiting"):
            assert time.monotonic() < deadline, "no proposal was held"
            time.sleep(0.02)
        proposal = read_state(folder)["awaiting"]
        send(folder, Command("approve"))
        while (read_state(folder).get("awaiting") or {}).get("step", proposal["step"]) == proposal["step"]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        second = read_state(folder)["awaiting"]
        replaced["index"] = _unmeasured(folder, far_from=[second["index"]])
        replaced["step"] = second["step"]
        send(folder, Command("goto", index=replaced["index"]))

    threading.Thread(target=operator_at_the_microscope, daemon=True).start()
    _, result = _run(tmp_path, tiny_config, options=OperatorOptions(approve=True, approve_timeout_s=20),
                     stopping={"max_steps": 2})
    steps = SessionReader(folder).steps
    assert [s.phase for s in steps] == ["initial"] * 3 + ["policy", "operator"]
    assert steps[4].index == replaced["index"] and replaced["step"] == 4
    review = [(a.what, a.step, a.at) for a in read_actions(folder) if a.who == "operator"]
    assert review == [("approve", 3, "review"), ("replace", 4, "review")]
    assert verify_session(folder).steps == 5


def test_approve_timeout_goes_on_alone_and_is_recorded(tmp_path, tiny_config):
    folder, result = _run(tmp_path, tiny_config, options=OperatorOptions(approve=True, approve_timeout_s=0.05),
                          stopping={"max_steps": 2})
    assert [a.what for a in read_actions(folder)] == ["approve-timeout", "approve-timeout"]
    assert all(a.who == "aexp" for a in read_actions(folder))
    assert [s.phase for s in result.steps][-2:] == ["policy", "policy"]


def test_resume_continues_with_the_recorded_actions(tmp_path, tiny_config):
    folder = tmp_path / "s"

    def on_step(step, budget):
        if step.step == 3:
            send(folder, Command("exclude", box=(0.0, 0.0, 2e-8, 1e-8)))
        if step.step == 5:
            raise KeyboardInterrupt  # the run dies; the exclusion is on record

    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, tiny_config, on_step, stopping={"max_steps": 8})
    excluded = set(next(a for a in read_actions(folder) if a.what == "exclude").args["indices"])
    assert excluded
    inst = load_instrument("plasmonic", parse_config(tiny_config()).instrument.options, seed=0)
    outcome = resume_session(folder, instrument=inst)
    assert outcome.replayed == 6 and outcome.new == 5
    assert not excluded & {s.index for s in SessionReader(folder).steps[4:]}
    assert verify_session(folder).steps == 11


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_config):
    cfg = parse_config(tiny_config(stopping={"max_steps": 2}))
    inst = load_instrument("plasmonic", cfg.instrument.options, seed=0)
    folder, _ = run_experiment(cfg, inst, tmp_path_factory.mktemp("done") / "s", seed=0, progress=False)
    return folder


@pytest.mark.parametrize("raw, message", [
    ({"what": "jump"}, "unknown command 'jump'"),
    ({"what": "goto"}, "goto takes either index N or xy"),
    ({"what": "goto", "index": 1, "xy": [0, 0]}, "goto takes either index N or xy"),
    ({"what": "goto", "index": True}, "index must be an integer"),
    ({"what": "goto", "xy": [0, float("nan")]}, "finite numbers"),
    ({"what": "exclude", "box": [0, 0, 1]}, "expected 4 numbers"),
    ({"what": "set", "name": "gamma", "value": 1}, "unknown setting 'gamma'"),
    ({"what": "set", "name": "beta", "value": -1}, "must be >= 0"),
    ({"what": "pause", "index": 3}, "takes no arguments"),
    ({"what": "stop", "rm": "-rf"}, "unknown fields"),
    ([1, 2], "a JSON object"),
])
def test_malformed_commands_are_refused(raw, message):
    with pytest.raises(ControlError, match=message.replace("(", r"\(")):
        Command.from_dict(raw)


def test_a_finished_or_foreign_session_refuses_every_command(tmp_path, finished, capsys):
    with pytest.raises(ControlError, match="it has ended \\(completed\\)"):
        send(finished, Command("pause"))
    with pytest.raises(ControlError, match="not a session folder"):
        send(tmp_path, Command("pause"))
    with pytest.raises(ControlError, match="not nobody"):
        send(finished, Command("pause", session_id="nobody"))
    assert main(["control", str(finished), "goto", "--index", "3"]) == 2
    assert "it has ended" in capsys.readouterr().err
    assert not (finished / CONTROL).exists() and not (finished / ACTIONS).exists()


def test_commands_that_cannot_apply_are_refused_while_running(tmp_path, tiny_config):
    errors = {}

    def on_step(step, budget):
        if step.step != 3:
            return
        folder = tmp_path / "s"
        measured = SessionReader(folder).steps[0].index
        tries = {
            "measured": Command("goto", index=measured),
            "missing": Command("goto", index=10_000),
            "outside": Command("goto", xy=(1.0, 1.0)),
            "empty box": Command("exclude", box=(1.0, 1.0, 2.0, 2.0)),
            "approve": Command("approve"),
        }
        for name, cmd in tries.items():
            with pytest.raises(ControlError) as info:
                send(folder, cmd)
            errors[name] = str(info.value)
        errors["control"] = (folder / CONTROL).exists()

    _, result = _run(tmp_path, tiny_config, on_step, stopping={"max_steps": 2})
    assert "already measured" in errors["measured"]
    assert "does not exist (the session has 256" in errors["missing"]
    assert "outside the instrument's bounds" in errors["outside"]
    assert "no candidate lies in the box" in errors["empty box"]
    assert "no proposal is waiting" in errors["approve"]
    assert errors["control"] is False
    assert all(s.phase != "operator" for s in result.steps)


def test_set_beta_is_refused_for_a_policy_without_it(tmp_path, tiny_config):
    err = {}

    def on_step(step, budget):
        if step.step == 3:
            with pytest.raises(ControlError) as info:
                send(tmp_path / "s", Command("set", name="beta", value=1.0))
            err["m"] = str(info.value)

    _run(tmp_path, tiny_config, on_step, policy={"kind": "random", "n_initial": 3}, stopping={"max_steps": 1})
    assert "policy random/ucb has no beta" in err["m"]


@pytest.mark.parametrize("argv, message", [
    (["--approve-timeout", "5"], "--approve-timeout needs --approve"),
    (["--token", "x"], "add --live"),
    (["--approve"], "--approve holds one proposal at a time"),
])
def test_run_refuses_live_options_that_do_not_fit(tmp_path, tiny_config, argv, message, capsys):
    import yaml

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(policy={"kind": "dkl", "n_initial": 3, "batch": 2})))
    assert main(["run", str(config), "--out", str(tmp_path / "out"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_with_pending_points_a_goto_lands_at_the_first_decision_not_yet_taken(tmp_path, tiny_config):
    sent = {}

    def on_step(step, budget):
        if step.step == 3:
            sent["goto"] = _unmeasured(tmp_path / "s")
            send(tmp_path / "s", Command("goto", index=sent["goto"]))

    folder, result = _run(tmp_path, tiny_config, on_step, policy={"pending": True}, stopping={"max_steps": 4})
    steps = SessionReader(folder).steps
    assert steps[4].phase == "policy" and steps[4].pending == [steps[3].index]  # decided while 3 was measured
    assert steps[5].phase == "operator" and steps[5].index == sent["goto"]
    assert verify_session(folder).steps == 7


def test_approve_mode_measures_then_decides_unless_the_config_asks_for_pending_points(tmp_path, tiny_config):
    import yaml

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config()))
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out), "--approve", "--approve-timeout", "0.05", "--quiet",
                 "--steps", "1"]) == 0
    assert SessionReader(out).manifest.experiment_config().policy.pending is False  # recorded as it ran
    assert len(SessionReader(out).steps) == 4  # 3 initial + --steps 1
    config.write_text(yaml.safe_dump(tiny_config(policy={"kind": "dkl", "n_initial": 3, "pending": True})))
    assert main(["run", str(config), "--out", str(tmp_path / "out2"), "--approve"]) == 2


def test_aexp_control_queues_a_checked_command_for_the_running_loop(tmp_path, tiny_config, capsys):
    statuses = {}

    def on_step(step, budget):
        if step.step == 3:
            folder = str(tmp_path / "s")
            statuses["goto"] = main(["control", folder, "goto", "--xy", "1.0e-8", "1.0e-8"])
            statuses["bad"] = main(["control", folder, "set", "beta", "lots"])

    _, result = _run(tmp_path, tiny_config, on_step, stopping={"max_steps": 2})
    assert statuses == {"goto": 0, "bad": 2}
    out = capsys.readouterr()
    assert "goto queued" in out.out and "set beta: expected a number, got 'lots'" in out.err
    positions = np.load(tmp_path / "s" / "candidates.npy")
    nearest = int(np.argmin(np.linalg.norm(positions - 1e-8, axis=1)))
    assert result.steps[4].phase == "operator" and result.steps[4].index == nearest
    line = json.loads((tmp_path / "s" / CONTROL).read_text())
    assert line["what"] == "goto" and line["xy"] == [1e-8, 1e-8] and line["session_id"]
