"""Scores for what an embedding has learned, against known ground truth.

Used by the benchmarks and tests: does the angle latent track the true angle, do the content
latents group the classes, does a latent follow a known continuous factor.
"""

from __future__ import annotations

import numpy as np

__all__ = ["circular_correlation", "symmetric_circular_correlation", "kmeans", "cluster_purity", "kmeans_purity"]


def circular_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Fisher-Lee circular correlation of two angle samples (radians), in [-1, 1].

    Invariant to a global offset of either sample; a global sign flip flips its sign, so
    ``abs()`` of it allows both.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be 1-d of equal length; got {a.shape} and {b.shape}")
    sa = np.sin(a - np.angle(np.exp(1j * a).mean()))
    sb = np.sin(b - np.angle(np.exp(1j * b).mean()))
    return float((sa * sb).sum() / np.sqrt((sa**2).sum() * (sb**2).sum()))


def symmetric_circular_correlation(
    predicted: np.ndarray, true: np.ndarray, order: np.ndarray | int = 1, offsets: int = 3600
) -> float:
    """|Circular correlation| of predicted and true angles with ONE global sign and offset, where
    the angle of sample ``i`` is only defined modulo ``2 pi / order[i]``.

    An object with an n-fold rotational symmetry (a rhombus: n = 2) looks the same at ``a`` and
    ``a + 2 pi / n``, so its angle is compared as ``n a`` (the doubled angle for a rhombus). For each
    sign ``s`` the offset ``c`` maximising ``sum_i cos(n_i (predicted_i - s true_i - c))`` is found
    on a grid of ``offsets`` values over [-pi, pi); with ``t`` the circular mean of ``true``,

        r_s = sum_i sin(n_i (p_i - s t - c)) sin(n_i (true_i - t)) / sqrt(sum_i sin^2(.) sum_i sin^2(.))

    and ``max(|r_+|, |r_-|)`` is returned. A prediction that is ``s true + c`` (modulo each
    sample's period) scores 1; unrelated predictions score near 0. With every order 1 this is the
    Fisher-Lee correlation with both samples centred by the one fitted offset: it equals
    ``abs(circular_correlation(predicted, true))`` when the predictions are an exact offset of the
    truth and is never higher than one could get with a per-sample offset.

    Args:
        predicted, true: angles in radians, ``N``.
        order: rotational symmetry order of each sample (``N`` integers >= 1) or one for all.
        offsets: grid size of the offset search.

    Example:
        >>> true = np.linspace(-2, 2, 9); flips = np.pi * (np.arange(9) % 2)
        >>> round(symmetric_circular_correlation(true + 0.3 + flips, true, order=2), 3)
        1.0
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if predicted.shape != true.shape or predicted.ndim != 1:
        raise ValueError(
            f"predicted and true must be 1-d of equal length; got {predicted.shape} and {true.shape}"
        )
    orders = np.broadcast_to(np.asarray(order), predicted.shape)
    if not np.issubdtype(orders.dtype, np.integer) or (orders < 1).any():
        raise ValueError(f"order must be integers >= 1 (one per sample or one for all); got {order!r}")
    grid = np.linspace(-np.pi, np.pi, offsets, endpoint=False)
    centre = np.angle(np.exp(1j * true).mean())
    st = np.sin(orders * (true - centre))
    best = 0.0
    for sign in (1.0, -1.0):
        residual = predicted - sign * true
        fit = np.cos(orders[:, None] * (residual[:, None] - grid[None, :])).sum(axis=0)
        offset = grid[int(np.argmax(fit))]
        sp = np.sin(orders * (predicted - sign * centre - offset))
        norm = np.sqrt((sp**2).sum() * (st**2).sum())
        best = max(best, abs(float((sp * st).sum() / norm)) if norm > 0 else 0.0)
    return best


def kmeans(x: np.ndarray, k: int, seed: int = 0, restarts: int = 10, iterations: int = 100) -> np.ndarray:
    """Cluster index of each row of ``x`` (``N x d``): the best of ``restarts`` k-means++ runs."""
    x = np.asarray(x, dtype=np.float64)
    rng = np.random.default_rng(seed)
    best, best_inertia = None, np.inf
    for _ in range(restarts):
        centres = x[rng.integers(len(x))][None]
        while len(centres) < k:  # k-means++: the next centre far from the chosen ones
            d2 = ((x[:, None] - centres[None]) ** 2).sum(-1).min(1)
            p = d2 / d2.sum() if d2.sum() > 0 else None
            centres = np.vstack([centres, x[rng.choice(len(x), p=p)]])
        for _ in range(iterations):
            labels = ((x[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
            new = np.array([x[labels == j].mean(0) if np.any(labels == j) else centres[j] for j in range(k)])
            if np.allclose(new, centres):
                break
            centres = new
        inertia = ((x - centres[labels]) ** 2).sum()
        if inertia < best_inertia:
            best, best_inertia = labels, inertia
    if best is None:  # no run at all, or none with a finite inertia
        raise ValueError(f"kmeans needs restarts >= 1 and finite x; got restarts={restarts!r}")
    return best


def cluster_purity(clusters: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose cluster's majority label is their own label."""
    clusters, labels = np.asarray(clusters), np.asarray(labels)
    if clusters.shape != labels.shape:
        raise ValueError(f"clusters and labels differ in shape: {clusters.shape} vs {labels.shape}")
    hits = sum(np.bincount(labels[clusters == c]).max() for c in np.unique(clusters))
    return float(hits / len(labels))


def kmeans_purity(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """Purity of k-means on standardised ``features`` with k = the number of distinct labels."""
    f = np.asarray(features, dtype=np.float64)
    f = (f - f.mean(0)) / np.where(f.std(0) > 1e-12, f.std(0), 1.0)
    return cluster_purity(kmeans(f, len(np.unique(labels)), seed=seed), labels)
