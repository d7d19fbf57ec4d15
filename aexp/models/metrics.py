"""Scores for what an embedding has learned, against known ground truth.

Used by the benchmarks and tests: does the angle latent track the true angle, do the content
latents group the classes, does a latent follow a known continuous factor.
"""

from __future__ import annotations

import numpy as np

__all__ = ["circular_correlation", "kmeans", "cluster_purity", "kmeans_purity"]


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
