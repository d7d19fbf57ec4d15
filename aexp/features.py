"""From candidate patches to the feature vectors the surrogate sees.

``embedder: rvae`` (or any kind in :data:`aexp.models.EMBEDDERS`: vae, affine, jvae, jrvae)
trains that model on all candidate patches (no targets involved, so nothing is
learned from the answers) and uses its latent means; ``embedder: none`` uses the flattened patch.
Either way each feature column is standardised over the candidates. ``surrogate.centre_pixels``
appends the survey's pixels at each candidate (the signal where the probe lands),
``surrogate.centre_gradient`` the survey's gradient magnitude there, ``surrogate.neighbour_counts``
(atom candidates) the found atoms of a brightness class within a radius, and ``surrogate.position``
the candidate's (x, y).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.spatial import cKDTree

from .config import EmbedderConfig, ExperimentConfig, NeighbourCount, NoEmbedderConfig, SurrogateConfig
from .errors import AexpError
from .types import Candidates

__all__ = [
    "COLLAPSED_SPREAD",
    "resolve_device",
    "embed_candidates",
    "clip_channels",
    "standardise",
    "with_position",
    "centre_pixels",
    "centre_gradient",
    "brightness_classes",
    "count_brightness_classes",
    "neighbour_counts",
    "auto_neighbour_counts",
    "with_surrogate_columns",
    "surrogate_inputs",
]


# Below this spread of every content latent's mean over the candidates (the prior's spread is 1) an
# embedding is reported as collapsed: the lattice and ferroelectric twins' collapsed rVAEs gave
# 0.01-0.06, working embeddings 0.2-1.5.
COLLAPSED_SPREAD = 0.1

#: ``neighbour_counts: auto`` counts each brightness class within this many lattice periods ``a``:
#: past the period's shell (and a honeycomb's third shell, ``2 a / sqrt 3 = 1.15 a``) and short of
#: the next shell of a square (``1.41 a``), honeycomb (``1.53 a``) or hexagonal (``1.73 a``) lattice.
AUTO_NEIGHBOUR_RADIUS = 1.25
#: ``neighbour_counts: auto`` tries 1 to this many brightness classes (species and their defects).
AUTO_MAX_CLASSES = 4


class DeviceUnavailable(AexpError, RuntimeError):
    """The config asks for a device torch does not see."""


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without one is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable("device: cuda was asked for but torch sees no CUDA GPU; use auto or cpu")
    return device


def standardise(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per column (constant columns are centred only)."""
    x = np.asarray(x, dtype=np.float64)
    std = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(std > 1e-12, std, 1.0)


def clip_channels(patches: np.ndarray, percentile: float) -> np.ndarray:
    """Patches ``N x C x h x w`` with each channel clipped to its ``[p, 100 - p]`` percentiles over
    all patches (``p = 0``: returned as they are).

    The embedders scale each channel's full range to [0, 1]; on an atomic-resolution survey a few
    heavy dopant columns would then squeeze every other column into a sliver of that range, below
    the likelihood's width, and the model would learn nothing from them.
    """
    if percentile <= 0:
        return patches
    lo, hi = np.percentile(patches, [percentile, 100.0 - percentile], axis=(0, 2, 3))
    return np.clip(patches, lo[None, :, None, None], hi[None, :, None, None]).astype(patches.dtype)


def embed_candidates(
    candidates: Candidates,
    cfg: EmbedderConfig,
    seed: int,
    device: str = "cpu",
    progress: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Features ``N x D`` (standardised, float64) and a record of how they were made.

    For the rVAE, ``D = 3 + latent_dim`` with columns [angle, dx, dy, z...] (``features: all``) or
    ``latent_dim`` content columns (``features: content``). When the candidates carry a wider view
    (``candidates.context``), a second model of the same kind is trained on those views (seed
    ``seed + 1``) and its columns follow: ``D`` doubles, and the record's ``context`` entry
    describes that part.
    """
    feats, info = _embed(candidates.patches, cfg, seed, device, progress)
    if candidates.context is not None:
        wide, info["context"] = _embed(candidates.context, cfg, seed + 1, device, progress)
        feats = np.hstack([feats, wide])
        info["dim"] = int(feats.shape[1])
    return feats, info


def _embed(
    patches: np.ndarray, cfg: EmbedderConfig, seed: int, device: str, progress: bool
) -> tuple[np.ndarray, dict[str, Any]]:
    """One view's features: the embedder's latent means (or the flattened patch), standardised."""
    if isinstance(cfg, NoEmbedderConfig):
        flat = patches.reshape(len(patches), -1)
        return standardise(flat), {"kind": "none", "dim": int(flat.shape[1])}
    from .models import build_embedder  # the models pull in more of torch; import only when used

    patches = clip_channels(patches, cfg.clip_percentile)
    model = build_embedder(cfg, input_shape=tuple(patches.shape[1:]), seed=seed, device=device)
    train = patches
    if cfg.train_subsample is not None and cfg.train_subsample < len(patches):
        train = patches[training_subsample(len(patches), cfg.train_subsample, seed)]
    model.fit(train, progress=progress)  # epochs, batch size, lr and seed are the model's own
    z = model.encode(patches)
    # the latent means' spread before standardising: near 0 when the embedder has collapsed
    spread = np.std(z, axis=0)
    content_spread = spread[len(model.geometric_names) :]
    collapsed = bool(content_spread.size) and float(content_spread.max()) < COLLAPSED_SPREAD
    if collapsed:
        warnings.warn(
            f"embedder {cfg.kind}: the content latents barely vary over the candidates (spread "
            f"{', '.join(f'{v:.3f}' for v in content_spread)}; the prior's is 1): the model has "
            f"collapsed and its features say little; try embedder.clip_percentile (e.g. 1) or a "
            f"smaller embedder.noise_std",
            stacklevel=2,
        )
    if cfg.features == "content":
        z, spread = z[:, len(model.geometric_names) :], content_spread
    info = {
        "kind": cfg.kind,
        "dim": int(z.shape[1]),
        "latent_spread": [float(v) for v in spread],
        "collapsed": collapsed,
        "final_loss": {k: float(v[-1]) for k, v in getattr(model, "history_", {}).items() if len(v)},
    }
    if len(train) < len(patches):
        info["trained_on"] = int(len(train))
    return standardise(z), info


def training_subsample(n: int, size: int, seed: int) -> np.ndarray:
    """``size`` distinct candidate indices out of ``n``, sorted, a function of ``seed`` alone: the
    embedder's training set when ``embedder.train_subsample`` is set."""
    rng = np.random.default_rng([int(seed), n, size, 0x7375_6273])  # "subs": a stream of its own
    return np.sort(rng.choice(n, size=size, replace=False))


def with_position(features: np.ndarray, candidates: Candidates) -> np.ndarray:
    """``[features, x, y]`` with the positions standardised like the features: ``N x (D + 2)``.

    Lets the surrogate learn both what the structure implies and where on the sample it is (two
    edges alike in shape may belong to particles of different size).
    """
    return np.hstack([features, standardise(candidates.positions)])


def _centre_window(candidates: Candidates, k: int) -> np.ndarray:
    """The ``k x k`` square at the centre of every patch (centre ``p // 2``): ``N x C x k x k`` float64."""
    p = candidates.patches.shape[-1]
    lo = p // 2 - k // 2
    return candidates.patches[:, :, lo : lo + k, lo : lo + k].astype(np.float64)


def centre_pixels(candidates: Candidates, k: int) -> np.ndarray:
    """The ``k x k`` survey pixels at the centre of each candidate's patch, every channel,
    standardised per column: ``N x (C k^2)`` (``k`` odd; for an even patch the centre is ``p // 2``).

    The survey's own signal where the probe lands. An embedding describes the patch's shape up to a
    shift and a rotation; where exactly the probe sits on that shape (on an edge or half a pixel
    off it, on a dip or beside it) is what the local spectrum depends on most.
    """
    if k < 1 or k % 2 == 0:
        raise ValueError(f"centre_pixels: k must be a positive odd number, not {k}")
    p = candidates.patches.shape[-1]
    if k > p:
        raise ValueError(f"centre_pixels: k = {k} is larger than the patch ({p} px)")
    return standardise(_centre_window(candidates, k).reshape(len(candidates), -1))


# Sobel derivative across the columns of a 3 x 3 window (the rows' is its transpose), normalised so
# that a ramp rising by 1 per pixel has derivative 1.
_SOBEL = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0


def centre_gradient(candidates: Candidates) -> np.ndarray:
    """The survey's gradient magnitude at the centre of each candidate's patch (3 x 3 Sobel), every
    channel, standardised per column: ``N x C`` (for an even patch the centre is ``p // 2``).

    Rotation-invariant like the rVAE's content latents: it says how steeply the image changes where
    the probe lands (on an outline or a wall, or on flat ground), not in which direction. The 3 x 3
    square of raw pixels says the same in nine columns that the surrogate must learn to combine.
    """
    p = candidates.patches.shape[-1]
    if p < 3:
        raise ValueError(f"centre_gradient: needs a 3 x 3 window; the patch is {p} px")
    window = _centre_window(candidates, 3)
    d_col = np.einsum("ncij,ij->nc", window, _SOBEL)
    d_row = np.einsum("ncij,ji->nc", window, _SOBEL)
    return standardise(np.hypot(d_col, d_row))


def brightness_classes(values: np.ndarray, k: int, bins: int = 256) -> np.ndarray:
    """Split 1-D ``values`` into ``k`` classes of brightness, ``0`` the dimmest: the exact 1-D
    k-means (least within-class sum of squares) over a ``bins``-bin histogram, by dynamic
    programming, so the answer depends on the values only, not on a random start.

    Linear, not log, brightness: a rare very bright class (heavy dopants) then costs the most to
    merge with anything and keeps a class of its own.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or len(v) < k:
        raise ValueError(f"brightness_classes: need at least k = {k} values in a 1-D array")
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return np.zeros(len(v), dtype=int)
    which = np.minimum(((v - lo) / (hi - lo) * bins).astype(int), bins - 1)
    w = np.bincount(which, minlength=bins).astype(float)
    s1 = np.bincount(which, weights=v, minlength=bins)
    s2 = np.bincount(which, weights=v * v, minlength=bins)
    cw, c1, c2 = (np.concatenate([[0.0], np.cumsum(a)]) for a in (w, s1, s2))
    # cost[i, j]: within-class sum of squares of bins i..j-1 as one class (j > i)
    n = cw[None, :] - cw[:, None]
    cost = (c2[None, :] - c2[:, None]) - np.where(n > 0, (c1[None, :] - c1[:, None]) ** 2 / np.where(n > 0, n, 1), 0)
    cost[np.tril_indices(bins + 1)] = np.inf
    best = cost[0].copy()  # best[j]: bins 0..j-1 in one class
    cut = np.zeros((k, bins + 1), dtype=int)
    for c in range(1, k):
        total = best[:, None] + cost  # previous classes end at bin i, this one spans i..j-1
        cut[c] = np.argmin(total, axis=0)
        best = total[cut[c], np.arange(bins + 1)]
    edges, j = [], bins
    for c in range(k - 1, 0, -1):
        j = cut[c][j]
        edges.append(j)
    return np.searchsorted(np.array(edges[::-1]), which, side="right")


def count_brightness_classes(values: np.ndarray, max_k: int = AUTO_MAX_CLASSES, bins: int = 256) -> int:
    """How many brightness classes ``values`` (1-D) hold: the ``k`` in ``1..max_k`` whose split by
    :func:`brightness_classes` has the least Bayesian information criterion as a mixture of ``k``
    Gaussians (classification likelihood, ``3 k - 1`` parameters),

    ``BIC(k) = -2 sum_c sum_{i in c} log(pi_c N(v_i; mu_c, s_c^2)) + (3 k - 1) log n``,

    each class's ``s_c`` at least the histogram's bin width (the resolution of the split), so a class
    of a few equal values cannot claim an infinite likelihood.

    Example:
        >>> count_brightness_classes(np.r_[rng.normal(0.5, 0.03, 900), rng.normal(1.0, 0.03, 400)])
        2
    """
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    floor = max((float(v.max()) - float(v.min())) / bins, 1e-12) if n else 1e-12
    best_k, best_bic = 1, math.inf
    for k in range(1, min(max_k, n) + 1):
        classes = brightness_classes(v, k, bins)
        loglik = 0.0
        for c in np.unique(classes):
            x = v[classes == c]
            s = max(float(x.std()), floor)
            loglik += float(np.sum(np.log(len(x) / n) - 0.5 * np.log(2 * np.pi * s * s)
                                   - 0.5 * ((x - x.mean()) / s) ** 2))
        bic = -2 * loglik + (3 * k - 1) * math.log(n)
        if bic < best_bic:
            best_k, best_bic = k, bic
    return best_k


def auto_neighbour_counts(candidates: Candidates, period_px: float) -> tuple[list[NeighbourCount], int]:
    """``surrogate.neighbour_counts: auto`` on atom candidates of a lattice of period ``period_px``:
    one count per brightness class found (:func:`count_brightness_classes` on the columns' centre
    brightness, as :func:`neighbour_counts` reads it), each within ``AUTO_NEIGHBOUR_RADIUS`` periods.
    Returns the counts and the number of classes."""
    brightness = _centre_window(candidates, min(3, candidates.patches.shape[-1])).mean(axis=(1, 2, 3))
    k = count_brightness_classes(brightness)
    radius = round(float(AUTO_NEIGHBOUR_RADIUS * period_px), 3)
    return [NeighbourCount(brightness=c, radius_px=radius) for c in range(k)], k


def neighbour_counts(candidates: Candidates, counts: Sequence[NeighbourCount], n_classes: int) -> np.ndarray:
    """For atom candidates: per entry of ``counts`` (each with ``brightness`` and ``radius_px``),
    how many other candidates of that brightness class lie within ``radius_px`` of each one,
    standardised: ``N x len(counts)``.

    An atom's brightness is the mean of the 3 x 3 (or smaller) centre of its patch over every
    channel, split into ``n_classes`` by :func:`brightness_classes`. In a Z-contrast image the
    classes are the species (the dim columns, the host, heavy dopants), so a count says how many
    neighbours of a species a column has: a vacancy is one fewer, a dopant one more. Near the edge
    of the region the candidates cover a disc is partly outside it, so each count is divided by the
    fraction of its disc inside that region.
    """
    brightness = _centre_window(candidates, min(3, candidates.patches.shape[-1])).mean(axis=(1, 2, 3))
    classes = brightness_classes(brightness, n_classes)
    pix = np.asarray(candidates.pixels, dtype=np.float64)
    low, high = pix.min(axis=0), pix.max(axis=0)
    columns = []
    for count in counts:
        r = float(count.radius_px)
        members = classes == count.brightness
        found = np.zeros(len(pix))
        if members.any():
            tree = cKDTree(pix[members])
            found = np.array([len(n) for n in tree.query_ball_point(pix, r)], dtype=float) - members
        g = np.arange(-math.floor(r), math.floor(r) + 1, dtype=np.float64)
        dr, dc = (a.ravel() for a in np.meshgrid(g, g, indexing="ij"))
        disc = dr**2 + dc**2 <= r * r
        rows, cols = pix[:, :1] + dr[disc], pix[:, 1:] + dc[disc]
        inside = ((rows >= low[0]) & (rows <= high[0]) & (cols >= low[1]) & (cols <= high[1])).mean(axis=1)
        columns.append(found / np.maximum(inside, 1e-9))
    return standardise(np.stack(columns, axis=1))


def surrogate_inputs(
    candidates: Candidates,
    cfg: ExperimentConfig,
    seed: int,
    device: str = "cpu",
    progress: bool = True,
    embedder: EmbedderConfig | None = None,
    period_px: float | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """What the surrogate sees: the embedding (``embedder`` or the config's), then the centre pixels
    when ``surrogate.centre_pixels`` is set, the centre gradient when ``surrogate.centre_gradient``
    is, the neighbour counts when ``surrogate.neighbour_counts`` is, then the position columns when ``surrogate.position`` is set (last: the additive position
    kernel takes the last two columns).

    ``surrogate.neighbour_counts: auto`` counts the brightness classes found
    (:func:`auto_neighbour_counts`) when ``period_px`` is given (``candidates.mode: auto`` chose atoms
    on a lattice of that period) and adds no column otherwise (grid candidates); what it chose is
    in the record as ``neighbour_counts_auto``."""
    feats, info = embed_candidates(candidates, embedder or cfg.embedder, seed, device, progress)
    surrogate, auto = cfg.surrogate, None
    if surrogate.neighbour_counts == "auto":
        counts, k = auto_neighbour_counts(candidates, period_px) if period_px is not None else ([], 0)
        surrogate = surrogate.model_copy(update={"neighbour_counts": counts, "brightness_classes": max(k, 1)})
        auto = {"classes": k, "radius_px": counts[0].radius_px if counts else None}
    feats, extra = with_surrogate_columns(feats, candidates, surrogate)
    return feats, {**info, **extra, **({"neighbour_counts_auto": auto} if auto is not None else {})}


def with_surrogate_columns(
    features: np.ndarray, candidates: Candidates, cfg: SurrogateConfig
) -> tuple[np.ndarray, dict[str, int]]:
    """``features`` followed by the columns the ``surrogate`` section adds: the centre pixels
    (``centre_pixels``), the centre gradient (``centre_gradient``), the neighbour counts
    (``neighbour_counts``), then the position
    (``position``; last, where the additive position kernel looks for it). Returns the matrix and
    the count of each added kind, for the features record (``neighbour_counts: auto`` must have been
    resolved first, by :func:`surrogate_inputs`)."""
    if cfg.neighbour_counts == "auto":
        raise ValueError("surrogate.neighbour_counts: auto is resolved from the candidates by surrogate_inputs")
    added: dict[str, int] = {}
    local = {
        "centre_columns": centre_pixels(candidates, cfg.centre_pixels) if cfg.centre_pixels else None,
        "gradient_columns": centre_gradient(candidates) if cfg.centre_gradient else None,
        "neighbour_columns": (neighbour_counts(candidates, cfg.neighbour_counts, cfg.brightness_classes)
                              if cfg.neighbour_counts else None),
    }
    for name, columns in local.items():
        if columns is not None:
            features = np.hstack([features, columns])
            added[name] = int(columns.shape[1])
    if cfg.position:
        features = with_position(features, candidates)
        added["position_columns"] = 2
    return features, added
