import numpy as np
import pytest

from aexp.models.metrics import circular_correlation, cluster_purity, kmeans, kmeans_purity


def test_circular_correlation_allows_offset_and_sign():
    rng = np.random.default_rng(0)
    angle = rng.uniform(-2, 2, 500)
    assert circular_correlation(angle + 1.3, angle) == pytest.approx(1.0)
    assert circular_correlation(-angle + 0.4, angle) == pytest.approx(-1.0)
    assert abs(circular_correlation(rng.uniform(-3, 3, 500), angle)) < 0.15
    with pytest.raises(ValueError, match="equal length"):
        circular_correlation(angle, angle[:3])


def test_kmeans_purity_finds_separated_groups_and_not_mixed_ones():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(4), 50)
    centres = np.array([[0, 0], [5, 0], [0, 5], [5, 5]])
    assert kmeans_purity(centres[labels] + rng.normal(0, 0.5, (200, 2)), labels) == 1.0
    assert kmeans_purity(rng.normal(size=(200, 2)), labels) < 0.5
    assert len(set(kmeans(centres[labels], 4))) == 4


def test_cluster_purity_counts_majorities_and_checks_shapes():
    assert cluster_purity(np.array([0, 0, 1, 1]), np.array([2, 2, 2, 3])) == 0.75
    with pytest.raises(ValueError, match="differ in shape"):
        cluster_purity(np.zeros(3, int), np.zeros(4, int))
