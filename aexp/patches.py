"""Candidate locations and the local patches around them.

Borders are reflect-padded, so every grid position keeps its patch and candidate ``i`` is always the
``i``-th position: nothing is dropped and indices never shift.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .types import Candidates, Survey

__all__ = ["grid_pixels", "extract_patches", "grid_candidates"]


def grid_pixels(shape: tuple[int, int], stride: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Row-major grid of pixel centres every ``stride`` pixels, starting at (0, 0).

    Returns ``(pixels, (rows, cols))`` with ``pixels`` of shape ``rows*cols x 2`` (row, col) int.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    r = np.arange(0, shape[0], stride)
    c = np.arange(0, shape[1], stride)
    rr, cc = np.meshgrid(r, c, indexing="ij")
    return np.stack([rr.ravel(), cc.ravel()], axis=1), (len(r), len(c))


def extract_patches(image: np.ndarray, pixels: np.ndarray, patch_size: int) -> np.ndarray:
    """Cut a ``p x p`` patch centred on each pixel (row, col) of a ``C x H x W`` image.

    For even ``p`` the centre pixel sits at index ``p // 2`` of the patch. Out-of-image parts are
    mirror-reflected (numpy ``reflect`` mode).

    Returns:
        ``N x C x p x p`` float32.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ValueError(f"image must be C x H x W, got shape {image.shape}")
    p = int(patch_size)
    _, h, w = image.shape
    if p < 1 or p > min(h, w):
        raise ValueError(f"patch size {p} does not fit a survey of {h} x {w} pixels")
    pixels = np.asarray(pixels)
    if pixels.ndim != 2 or pixels.shape[1] != 2:
        raise ValueError(f"pixels must be N x 2 (row, col), got shape {pixels.shape}")
    rc = np.rint(pixels).astype(np.int64)
    if rc.size and ((rc < 0).any() or (rc[:, 0] >= h).any() or (rc[:, 1] >= w).any()):
        raise ValueError("patch centres must lie inside the survey image")
    half = p // 2
    padded = np.pad(image, ((0, 0), (half, p - 1 - half), (half, p - 1 - half)), mode="reflect")
    windows = sliding_window_view(padded, (p, p), axis=(1, 2))  # C x H x W x p x p, a view
    # window (i, j) of the padded image starts at original pixel (i - half, j - half)
    out = windows[:, rc[:, 0], rc[:, 1]]  # C x N x p x p, copied by fancy indexing
    return np.ascontiguousarray(out.transpose(1, 0, 2, 3))


def grid_candidates(
    survey: Survey, stride: int, patch_size: int, channels: Sequence[str] | None = None
) -> Candidates:
    """Every ``stride``-th survey pixel as a candidate, with its ``patch_size`` patch.

    Example:
        >>> cands = grid_candidates(survey, stride=2, patch_size=16)   # 128x128 survey
        >>> cands.grid_shape, cands.patches.shape
        ((64, 64), (4096, 1, 16, 16))
    """
    image = survey.image
    if channels is not None:
        missing = [c for c in channels if c not in survey.channels]
        if missing:
            raise ValueError(f"channels {missing} not in survey channels {list(survey.channels)}")
        image = image[[survey.channels.index(c) for c in channels]]
    pixels, grid_shape = grid_pixels(survey.shape, stride)
    patches = extract_patches(image, pixels, patch_size)
    positions = survey.transform.to_instrument(pixels.astype(float))
    return Candidates(
        positions=positions, pixels=pixels.astype(float), patches=patches, grid_shape=grid_shape
    )
