"""The decision-time benchmark runs with the shipped config's surrogate (benchmarks/decision_time.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from aexp.config import load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.filterwarnings("ignore::botorch.exceptions.warnings.InputDataWarning")
def test_times_both_decisions_with_the_surrogate_options_of_the_default_config(benchmark_script):
    cfg = load_config(ROOT / "configs" / "plasmonic-dkl.yaml")
    cfg = cfg.model_copy(update={"surrogate": cfg.surrogate.model_copy(
        update={"gp_until": 8, "iterations": 5, "warm_iterations": 2})})
    g = torch.Generator().manual_seed(0)
    X = torch.randn(300, 7, generator=g, dtype=torch.float64)
    y = np.sin(X[:, 0].numpy()) + X[:, 5].numpy()
    order = np.random.default_rng(0).permutation(300)
    ours, base = benchmark_script("decision_time").time_decisions(X, y, order, 20, 2, cfg)
    assert 0 < ours and 0 < base


@pytest.mark.filterwarnings("ignore::botorch.exceptions.warnings.InputDataWarning")
def test_a_variant_is_timed_beside_the_config_and_the_baseline_can_be_skipped(benchmark_script):
    cfg = load_config(ROOT / "configs" / "plasmonic-dkl.yaml")
    cfg = cfg.with_overrides(**{"surrogate.gp_until": 30, "surrogate.iterations": 5, "surrogate.warm_iterations": 2})
    variant = cfg.with_overrides(**{"surrogate.gp_warm_maxiter": 2})
    g = torch.Generator().manual_seed(0)
    X = torch.randn(300, 7, generator=g, dtype=torch.float64)
    y = np.sin(X[:, 0].numpy()) + X[:, 5].numpy()
    order = np.random.default_rng(0).permutation(300)
    ours, var, base = benchmark_script("decision_time").time_all(X, y, order, 20, 2, cfg, variant, baseline=False)
    assert ours > 0 and var > 0 and base is None
