import numpy as np
import pytest

from aexp.models.metrics import (
    circular_correlation,
    cluster_purity,
    kmeans,
    kmeans_purity,
    symmetric_circular_correlation,
)


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


def test_symmetric_circular_correlation_equals_plain_one_for_asymmetric_angles():
    rng = np.random.default_rng(2)
    angle = rng.uniform(-2, 2, 400)
    assert symmetric_circular_correlation(angle + 0.7, angle) == pytest.approx(1.0, abs=1e-5)
    assert symmetric_circular_correlation(-angle + 0.2, angle) == pytest.approx(1.0, abs=1e-5)
    noisy = angle + 0.3 * rng.standard_normal(400)
    plain = abs(circular_correlation(noisy, angle))
    assert symmetric_circular_correlation(noisy, angle) == pytest.approx(plain, abs=0.01)
    assert symmetric_circular_correlation(rng.uniform(-3, 3, 400), angle) < 0.15


def test_symmetric_circular_correlation_forgives_half_turns_of_two_fold_samples_only():
    rng = np.random.default_rng(3)
    angle = rng.uniform(-2, 2, 800)
    two_fold = np.arange(800) >= 600  # the last quarter: a rhombus
    flipped = angle + 0.4 + np.where(two_fold, np.pi * rng.integers(0, 2, 800), 0.0)
    order = np.where(two_fold, 2, 1)
    assert abs(circular_correlation(flipped, angle)) < 0.8  # the plain figure suffers
    assert symmetric_circular_correlation(flipped, angle, order) == pytest.approx(1.0, abs=1e-5)
    # a half turn of an asymmetric sample is an error, and is counted as one
    wrong = flipped + np.where(~two_fold & (np.arange(800) % 2 == 0), np.pi, 0.0)
    assert symmetric_circular_correlation(wrong, angle, order) < 0.5
    # one offset for all: a class with its own offset lowers the score
    own_offset = angle + np.where(np.arange(800) < 300, 0.0, 1.2)
    assert symmetric_circular_correlation(own_offset, angle) < 0.9
    # random predictions score near zero even for symmetric samples (no credit from the folding)
    assert symmetric_circular_correlation(rng.uniform(-3, 3, 800), angle, 2) < 0.15


def test_symmetric_circular_correlation_checks_its_inputs():
    with pytest.raises(ValueError, match="equal length"):
        symmetric_circular_correlation(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="order must be integers >= 1"):
        symmetric_circular_correlation(np.zeros(3), np.zeros(3), order=np.array([1, 0, 2]))
    with pytest.raises(ValueError, match="order must be integers >= 1"):
        symmetric_circular_correlation(np.zeros(3), np.zeros(3), order=1.5)


def test_kmeans_refuses_no_restarts_and_non_finite_rows_instead_of_returning_none():
    x = np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    with pytest.raises(ValueError, match="restarts >= 1"):
        kmeans(x, 2, restarts=0)
    with pytest.raises(ValueError, match="finite x"):
        kmeans(np.array([[0.0, np.nan], [1.0, 1.0], [5.0, 5.0]]), 2)
