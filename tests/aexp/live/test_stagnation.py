"""Stagnation: nothing better in the last K steps and the uncertainty over the unmeasured collapsed."""

import numpy as np

from aexp.live.stagnation import StagnationRule, find_stagnation
from aexp.types import Step


def _steps(targets):
    return [Step(step=k, index=k, position=(0.0, 0.0), pixel=(0.0, 0.0), target=t, status="ok", phase="policy")
            for k, t in enumerate(targets)]


RULE = StagnationRule(window=3, std_ratio=0.1)
UNMEASURED = np.array([True, True, False])


def test_stagnant_when_nothing_improved_and_the_std_collapsed():
    steps = _steps([0.0, 2.0, 1.0, 1.5, 0.5])  # best 2.0 at step 1; the last 3 found nothing better
    spread = np.std([0.0, 2.0, 1.0, 1.5, 0.5])
    found = find_stagnation(steps, {"std": np.array([0.05, 0.09 * spread, 99.0])}, UNMEASURED, RULE)
    assert found is not None and found.since_step == 2
    assert np.isclose(found.max_std, 0.09 * spread) and np.isclose(found.target_std, spread)
    assert "set beta" in found.message


def test_not_stagnant_while_it_improves_or_is_still_uncertain_or_has_no_model():
    steps = _steps([0.0, 2.0, 1.0, 1.5, 0.5])
    spread = np.std([0.0, 2.0, 1.0, 1.5, 0.5])
    assert find_stagnation(_steps([0.0, 2.0, 1.0, 1.5, 2.5]), {"std": np.zeros(3)}, UNMEASURED, RULE) is None
    assert find_stagnation(steps, {"std": np.array([0.11 * spread, 0, 0])}, UNMEASURED, RULE) is None
    assert find_stagnation(steps, None, UNMEASURED, RULE) is None
    assert find_stagnation(steps[:3], {"std": np.zeros(3)}, UNMEASURED, RULE) is None


def test_stagnation_stop_ends_the_run_and_replays(tmp_path, tiny_config):
    from aexp.config import parse_config
    from aexp.instrument import load_instrument
    from aexp.live.channel import read_actions
    from aexp.loop import run_experiment
    from aexp.session.replay import verify_session

    # a huge std_ratio: "collapsed" as soon as 2 steps found nothing better
    cfg = parse_config(tiny_config(stopping={"max_steps": 12, "stagnation": {"window": 2, "std_ratio": 1e6,
                                                                             "stop": True}}))
    inst = load_instrument("plasmonic", cfg.instrument.options, seed=0)
    folder, result = run_experiment(cfg, inst, tmp_path / "s", seed=0, progress=False)
    assert result.stop_reason == "stagnation" and len(result.steps) < cfg.budget
    stop = [a for a in read_actions(folder) if a.what == "stop"]
    assert stop and stop[0].who == "aexp" and stop[0].args == {"reason": "stagnation"}
    assert verify_session(folder).steps == len(result.steps)
