"""The policy on the hidden physics (benchmarks/physics_loop.py): its features and one seed's run."""

from __future__ import annotations

import numpy as np
import pytest

from aexp.config import parse_config
from aexp.instrument import load_instrument
from aexp.patches import make_candidates


def test_outline_features_are_the_standardised_distance_with_the_position_columns(benchmark_script, tiny_config):
    loop = benchmark_script("physics_loop")
    cfg = parse_config(tiny_config())
    inst = load_instrument("plasmonic", cfg.instrument.options, seed=0)
    candidates = make_candidates(inst.survey(), cfg.candidates)
    hidden = inst.hidden_features(candidates.positions)
    feats = loop.physics_features(hidden, candidates, "outline_distance_m", position=True)
    assert feats.shape == (len(candidates), 3)
    np.testing.assert_allclose(feats.mean(axis=0), 0.0, atol=1e-9)
    d = hidden["outline_distance_m"]
    np.testing.assert_allclose(feats[:, 0], (d - d.mean()) / d.std())
    # "physics" is every hidden feature; a name the simulator lacks is an error that lists them
    assert loop.physics_features(hidden, candidates, "physics", position=False).shape[1] == len(hidden)
    with pytest.raises(SystemExit, match="outline_distance_m"):
        loop.check_runs(("embedding", "defect"), hidden)


@pytest.mark.filterwarnings("ignore::botorch.exceptions.warnings.InputDataWarning")
def test_one_seed_scores_every_run_as_a_discovery_fraction(benchmark_script, tiny_config):
    loop = benchmark_script("physics_loop")
    cfg = parse_config(tiny_config(embedder={"kind": "rvae", "epochs": 1, "hidden": 8}))
    runs = (*loop.RUNS, "outline_distance_m")
    row = loop.run_seed(cfg, 0, runs)
    assert row["budget"] == cfg.budget and row["n_candidates"] == 256
    # 256 candidates: the top 1 % is 3 of them, so each discovery is a multiple of 1/3
    for name in runs:
        assert 0.0 <= row[name] <= 1.0
        assert row[name] * 3 == pytest.approx(round(row[name] * 3))
