"""The kNN feature probe (benchmarks/feature_probe.py): its folds and its score."""

from __future__ import annotations

import numpy as np


def test_block_folds_keep_each_square_of_the_field_in_one_fold(benchmark_script):
    probe = benchmark_script("feature_probe")
    rr, cc = np.meshgrid(np.arange(40), np.arange(40), indexing="ij")
    positions = np.stack([cc.ravel(), rr.ravel()], axis=1) * 1e-9
    fold = probe.block_folds(positions, blocks=4, seed=0)
    assert fold.shape == (1600,) and set(np.unique(fold)) <= set(range(5))
    squares = (rr.ravel() // 10) * 4 + cc.ravel() // 10
    for s in range(16):
        assert len(np.unique(fold[squares == s])) == 1


def test_knn_recall_finds_a_target_its_features_explain_and_not_one_they_do_not(benchmark_script):
    probe = benchmark_script("feature_probe")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 2))
    truth = x[:, 0]  # the top 1 % is where the first feature is largest
    assert probe.knn_recall(x, truth, budget=60) > 0.8
    assert probe.knn_recall(rng.normal(size=(2000, 2)), truth, budget=60) < 0.2
