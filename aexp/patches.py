"""Candidate locations and the local patches around them.

Borders are reflect-padded, so every grid position keeps its patch and candidate ``i`` is always the
``i``-th position: nothing is dropped and indices never shift.

Two kinds of candidates: a regular grid over the survey (:func:`grid_candidates`) or one candidate
per atom found in the survey (:func:`atom_candidates`, after :func:`find_atoms`).
:func:`make_candidates` picks one from the ``candidates:`` section of the config, and adds each
candidate's wider view (:func:`context_views`) when the config asks for one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage
from scipy.spatial import cKDTree

from .config import CandidatesConfig
from .types import Candidates, InstrumentDescription, Survey

__all__ = [
    "grid_pixels",
    "extract_patches",
    "grid_candidates",
    "find_atoms",
    "atom_candidates",
    "context_views",
    "make_candidates",
    "correlation_length",
    "auto_patch_size",
    "ModeChoice",
    "probes_anywhere",
    "choose_mode",
    "resolve_candidates",
]

#: ``patch_size: auto`` chooses ``AUTO_PATCH_SCALE`` correlation lengths, at most ``AUTO_PATCH_MAX`` px.
AUTO_PATCH_SCALE = 2.0
AUTO_PATCH_MAX = 32
#: A survey is periodic when the first secondary peak of its autocorrelation (the first local
#: maximum ``PERIOD_RISE`` above the trough before it) stands ``PERIOD_PROMINENCE`` above the troughs
#: on both sides (the lattice twin's: 0.31; the non-periodic shipped surveys' bumps: 0.11 or less).
PERIOD_RISE = 0.1
PERIOD_PROMINENCE = 0.15
#: ``candidates.mode: auto`` on a periodic survey of period ``a`` (the ACF's first shell) takes the
#: closest column spacing as ``d = a / sqrt 3``: a honeycomb of two species (MX2, hBN) has its ACF
#: shell at the same-species distance ``a`` and columns ``a / sqrt 3`` apart; on a square or hexagonal
#: lattice (``d = a``) this is conservative. A column owns the half of the gap to its neighbour, so a
#: maximum must dominate a disk of radius ``d / 2`` (``AUTO_MIN_DISTANCE * a``: a larger disk reaches
#: the shoulder of a brighter neighbour and swallows a dim column). The Laplacian-of-Gaussian response
#: of a column of width ``s`` is positive out to ``sqrt(2 (sigma^2 + s^2))``; ``sigma = d / 4``
#: (``AUTO_SIGMA * a``) keeps that inside the column's half-gap for any column up to ``s = d / 4`` wide.
AUTO_MIN_DISTANCE = 1.0 / (2.0 * np.sqrt(3.0))
AUTO_SIGMA = 1.0 / (4.0 * np.sqrt(3.0))


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
    image = _select_channels(survey, channels)
    pixels, grid_shape = grid_pixels(survey.shape, stride)
    patches = extract_patches(image, pixels, patch_size)
    positions = survey.transform.to_instrument(pixels.astype(float))
    return Candidates(
        positions=positions, pixels=pixels.astype(float), patches=patches, grid_shape=grid_shape
    )


def _select_channels(survey: Survey, channels: Sequence[str] | None) -> np.ndarray:
    """The ``C' x H x W`` part of the survey image holding ``channels`` (all when None)."""
    if channels is None:
        return survey.image
    missing = [c for c in channels if c not in survey.channels]
    if missing:
        raise ValueError(f"channels {missing} not in survey channels {list(survey.channels)}")
    return survey.image[[survey.channels.index(c) for c in channels]]


# 3x3 neighbourhood offsets and the least-squares map from its 9 values to the coefficients of
# f(dr, dc) = a + b dr + c dc + d dr^2 + e dc^2 + g dr dc.
_OFFSETS = np.array([(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)], dtype=float)
_QUADRATIC_FIT = np.linalg.pinv(
    np.column_stack([np.ones(9), _OFFSETS[:, 0], _OFFSETS[:, 1], _OFFSETS[:, 0] ** 2,
                     _OFFSETS[:, 1] ** 2, _OFFSETS[:, 0] * _OFFSETS[:, 1]])
)


def _refine_subpixel(response: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    """Sub-pixel maxima: the vertex of a quadratic fitted to each peak's 3x3 neighbourhood.

    ``peaks`` is ``N x 2`` int (row, col) away from the border; returns ``N x 2`` float. A fit that
    is not a maximum (flat or saddle) or whose vertex leaves the 3x3 box keeps the integer peak.
    """
    rows = peaks[:, None, 0] + _OFFSETS[None, :, 0].astype(int)
    cols = peaks[:, None, 1] + _OFFSETS[None, :, 1].astype(int)
    a, b, c, d, e, g = (_QUADRATIC_FIT @ response[rows, cols].T)  # each N
    hess_det = 4 * d * e - g * g
    ok = (d < 0) & (e < 0) & (hess_det > 1e-12)
    safe = np.where(ok, hess_det, 1.0)
    # gradient zero: [2d g; g 2e] [dr dc]^T = -[b c]^T
    dr = (-2 * e * b + g * c) / safe
    dc = (-2 * d * c + g * b) / safe
    ok &= (np.abs(dr) <= 1.0) & (np.abs(dc) <= 1.0)
    shift = np.where(ok[:, None], np.stack([dr, dc], axis=1), 0.0)
    return peaks + shift


def find_atoms(
    image: np.ndarray, sigma_px: float = 1.5, min_distance_px: int = 3, threshold: float = 0.1
) -> np.ndarray:
    """Atom (column) centres in an ``H x W`` Z-contrast image, to sub-pixel precision.

    A Laplacian-of-Gaussian filter at scale ``sigma_px`` (``-sigma^2 LoG``: bright blobs of radius
    ~ ``sigma sqrt 2`` give positive peaks) is searched for local maxima at least
    ``min_distance_px`` apart whose response exceeds ``threshold`` x the 99.9th percentile of the
    response (a percentile, so that a few hot pixels do not set the scale). Each maximum is refined
    by a quadratic fit to its 3x3 neighbourhood. Maxima on the outermost pixel ring are discarded:
    their neighbourhood is incomplete.

    Returns:
        ``N x 2`` float (row, col), in row-major order of the integer peaks.

    Example:
        >>> atoms = find_atoms(survey.image[0], sigma_px=1.5, min_distance_px=4)
    """
    img = np.asarray(image, dtype=float)
    if img.ndim != 2:
        raise ValueError(f"image must be H x W, got shape {img.shape}")
    if not sigma_px > 0:
        raise ValueError(f"sigma_px must be > 0, got {sigma_px}")
    if min_distance_px < 1:
        raise ValueError(f"min_distance_px must be >= 1, got {min_distance_px}")
    response = -(sigma_px**2) * ndimage.gaussian_laplace(img, sigma_px, mode="reflect")
    scale = float(np.percentile(response, 99.9))
    if not scale > 0:
        return np.zeros((0, 2))
    # a disk, not a square: a square's corners reach sqrt 2 x further and swallow weak neighbours
    r = int(min_distance_px)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disk = yy**2 + xx**2 <= min_distance_px**2
    is_peak = response == ndimage.maximum_filter(response, footprint=disk, mode="reflect")
    is_peak &= response > threshold * scale
    is_peak[[0, -1], :] = False
    is_peak[:, [0, -1]] = False
    peaks = np.argwhere(is_peak)
    # plateaus (equal neighbours) give several maxima: keep the first of any pair too close
    peaks = _thin(peaks, min_distance_px)
    return _refine_subpixel(response, peaks)


def _thin(peaks: np.ndarray, min_distance_px: float) -> np.ndarray:
    """Drop peaks closer than ``min_distance_px`` to an earlier kept one (row-major order)."""
    if len(peaks) < 2:
        return peaks
    tree = cKDTree(peaks)
    keep = np.ones(len(peaks), dtype=bool)
    for i, j in sorted(tree.query_pairs(r=min_distance_px - 1e-9)):
        if keep[i] and keep[j]:
            keep[j] = False
    return peaks[keep]


def atom_candidates(
    survey: Survey,
    patch_size: int,
    channels: Sequence[str] | None = None,
    atom_channel: str | None = None,
    sigma_px: float = 1.5,
    min_distance_px: int = 3,
    threshold: float = 0.1,
) -> Candidates:
    """One candidate per atom found in ``atom_channel`` (the first channel when None).

    Each candidate keeps its own sub-pixel position; its patch is cut around the nearest pixel.
    ``grid_shape`` is None: the candidates do not form a grid.

    Raises:
        ValueError: no atom was found, or a channel is unknown.
    """
    name = atom_channel if atom_channel is not None else survey.channels[0]
    finder_image = _select_channels(survey, [name])[0]
    rc = find_atoms(finder_image, sigma_px=sigma_px, min_distance_px=min_distance_px, threshold=threshold)
    if len(rc) == 0:
        raise ValueError(
            f"candidates: no atoms found in survey channel {name!r} (atom_sigma_px={sigma_px}, "
            f"threshold={threshold}); lower the threshold or match atom_sigma_px to the atom size"
        )
    h, w = survey.shape
    rc = np.clip(rc, 0.0, [h - 1, w - 1])
    patches = extract_patches(_select_channels(survey, channels), rc, patch_size)
    positions = survey.transform.to_instrument(rc)
    return Candidates(positions=positions, pixels=rc, patches=patches, grid_shape=None)


def context_views(
    image: np.ndarray, pixels: np.ndarray, patch_size: int, factor: int, chunk: int = 4096
) -> np.ndarray:
    """A window ``factor x patch_size`` wide around each pixel, average-pooled back to ``p x p``.

    A 16 px patch shows the outline next to a candidate but not the whole object it belongs to;
    the pooled view shows ``factor`` times as much at ``1 / factor`` of the resolution (its centre
    sits at ``p // 2`` like the patch's when ``p`` is even). Borders are reflect-padded as for
    :func:`extract_patches`. ``chunk`` candidates are cut at a time, so memory stays at ``chunk``
    wide windows however many candidates there are.

    Returns:
        ``N x C x p x p`` float32.
    """
    if factor < 2:
        raise ValueError(f"a context view is at least 2 patches wide, got factor {factor}")
    p = int(patch_size)
    pixels = np.asarray(pixels)
    views = []
    for start in range(0, max(len(pixels), 1), chunk):  # the wide windows never all at once
        wide = extract_patches(image, pixels[start:start + chunk], factor * p)
        n, c = wide.shape[:2]
        views.append(wide.reshape(n, c, p, factor, p, factor).mean(axis=(3, 5), dtype=np.float64))
    return np.concatenate(views).astype(np.float32)


def repair_survey(survey: Survey) -> tuple[Survey, np.ndarray]:
    """The survey with every non-finite pixel replaced by its nearest finite pixel (per channel), and
    the ``H x W`` mask of pixels that were non-finite in any channel.

    Raises:
        ValueError: a channel has no finite pixel at all.
    """
    image = np.array(survey.image, dtype=np.float32)
    bad = ~np.isfinite(image)
    for c in range(image.shape[0]):
        if bad[c].all():
            raise ValueError(f"survey channel {survey.channels[c]!r} has no finite pixel")
        if bad[c].any():
            _, (rows, cols) = ndimage.distance_transform_edt(bad[c], return_indices=True)
            image[c] = image[c][rows, cols]
    return replace(survey, image=image), np.asarray(bad.any(axis=0))


def _radial_acf(channel: np.ndarray) -> np.ndarray | None:
    """Radially averaged autocorrelation of one ``H x W`` channel at lags ``0..min(H, W) // 2``
    (``None`` for a constant channel).

    ``ACF(r) = <(I(x) - Ibar)(I(x + r) - Ibar)> / var(I)``, computed with a zero-padded FFT (no
    wrap-around) and normalised by the overlap at each lag.
    """
    h, w = channel.shape
    x = channel - channel.mean()
    if not np.any(x):
        return None
    size = (2 * h, 2 * w)
    spectrum = np.fft.rfft2(x, size)
    acf = np.fft.irfft2(np.abs(spectrum) ** 2, size)
    overlap = np.fft.irfft2(np.abs(np.fft.rfft2(np.ones_like(x), size)) ** 2, size)
    acf = np.fft.fftshift(acf / np.maximum(overlap, 1.0))
    acf = acf / acf[h, w]
    rows, cols = np.indices(acf.shape)
    radius = np.rint(np.hypot(rows - h, cols - w)).astype(np.int64)
    inside = radius <= max(1, min(h, w) // 2)
    return np.bincount(radius[inside], acf[inside]) / np.bincount(radius[inside])


def correlation_length(image: np.ndarray) -> float:
    """The survey's structure scale: the lag (pixels) where its radially averaged autocorrelation
    first falls below ``1/e``, averaged over channels.

    ``image``: ``C x H x W`` finite. A channel that never falls below ``1/e`` within half the image
    counts as half the image's shorter side, and a constant channel is skipped (``inf`` when every
    channel is constant).
    """
    lengths = []
    for channel in np.asarray(image, dtype=np.float64):
        profile = _radial_acf(channel)
        if profile is None:
            continue
        below = np.flatnonzero(profile < 1 / np.e)
        lengths.append(float(below[0]) if len(below) else float(len(profile) - 1))
    return float(np.mean(lengths)) if lengths else float("inf")


def lattice_period(image: np.ndarray, prominence: float = PERIOD_PROMINENCE) -> float | None:
    """The period (pixels) of a periodic survey, or ``None`` for one that is not periodic.

    A lattice's autocorrelation falls within one atom and rises again at the next atom: the
    radially averaged ACF of a channel has a secondary peak at lag ``r_p`` (the first local maximum
    past its first fall below ``1/e`` that rises ``PERIOD_RISE`` above the trough before it) that
    stands ``prominence`` above the troughs on both sides, the one before it and the one within the
    next ``r_p`` (so a trend that rises to the edge of the range is no peak). ``r_p``
    is the nearest-neighbour distance, refined to a sub-pixel lag by a parabola through the peak
    and its two neighbours; the mean over the channels that have one. ``image``: ``C x H x W``.
    """
    periods = []
    for channel in np.asarray(image, dtype=np.float64):
        profile = _radial_acf(channel)
        if profile is None:
            continue
        below = np.flatnonzero(profile < 1 / np.e)
        if not len(below):
            continue
        last = len(profile) - 1
        trough = int(below[0])
        for r in range(int(below[0]) + 1, last):
            trough = r if profile[r] < profile[trough] else trough
            if not (profile[r] > profile[r - 1] and profile[r] >= profile[r + 1]
                    and profile[r] - profile[trough] >= PERIOD_RISE):
                continue  # a wiggle in the trough, not yet the next shell
            after = profile[r + 1:min(last, 2 * r) + 1].min()
            if r + 1 < min(last, 2 * r) and profile[r] - profile[trough] >= prominence \
                    and profile[r] - after >= prominence:
                a, b, c = profile[r - 1], profile[r], profile[r + 1]
                curvature = a - 2 * b + c
                periods.append(r + (0.5 * (a - c) / curvature if curvature < 0 else 0.0))
            break  # the first shell decides: a later, larger ring is no nearest neighbour
    return float(np.mean(periods)) if periods else None


def auto_patch_size(survey: Survey, stride: int = 1) -> int:
    """``candidates.patch_size: auto``: two structure scales of the survey, at least the candidates'
    ``stride`` (so the patches cover the survey between candidates) and 4 px, at most 32 px and the
    survey's shorter side. The structure scale is the lattice period on a periodic survey
    (:func:`lattice_period`: a patch spans an atom and its neighbours) and otherwise the
    correlation length (the ``1/e`` lag is about a structure's radius, so the patch spans one
    structure across the probe).

    Example:
        >>> auto_patch_size(survey, stride=2)    # correlation length 4.5 px -> 9 px patches
    """
    _, h, w = survey.image.shape
    repaired, _ = repair_survey(survey)
    period = lattice_period(repaired.image)
    length = correlation_length(repaired.image) if period is None else period
    wanted = AUTO_PATCH_SCALE * length if np.isfinite(length) else AUTO_PATCH_MAX
    upper = min(AUTO_PATCH_MAX, h, w)
    return int(min(upper, max(4, int(stride), int(round(wanted)))))


@dataclass(frozen=True)
class ModeChoice:
    """What ``candidates.mode: auto`` chose on a survey, and why (recorded in the session's manifest,
    ``features.candidates_mode``).

    Attributes:
        mode: ``"grid"`` or ``"atoms"``.
        reason: one line a microscopist can check against the survey.
        period_px: the lattice period found (:func:`lattice_period`), ``None`` when not periodic.
        atom_sigma_px: atoms: the Laplacian-of-Gaussian scale derived from the period.
        min_distance_px: atoms: the least distance between two columns derived from the period.
    """

    mode: str
    reason: str
    period_px: float | None = None
    atom_sigma_px: float | None = None
    min_distance_px: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.mode, "auto": True, "reason": self.reason, "period_px": self.period_px}
        if self.mode == "atoms":
            out.update(atom_sigma_px=self.atom_sigma_px, min_distance_px=self.min_distance_px)
        return out


def probes_anywhere(description: InstrumentDescription) -> bool:
    """Whether the instrument can measure at any position in its bounds: a twin or a live instrument
    can, a full-grid data set (the replay driver, whose ``describe().extra`` carries the
    ``grid_shape`` of its recorded spectra) holds spectra only on its grid."""
    return not (description.extra or {}).get("grid_shape")


def choose_mode(survey: Survey, anywhere: bool) -> ModeChoice:
    """``candidates.mode: auto``: one candidate per atom column when the survey is periodic
    (:func:`lattice_period` finds a period ``a``) and the probe can go anywhere, with the atom finder's
    scales from the closest column spacing ``d = a / sqrt 3``: ``sigma = d / 4`` and ``min distance =
    floor(d / 2)`` (see ``AUTO_SIGMA``); otherwise the grid.

    Example:
        >>> choose_mode(lattice_survey, anywhere=True).mode      # period 10.4 px
        'atoms'
    """
    repaired, _ = repair_survey(survey)
    period = lattice_period(repaired.image)
    if period is None:
        return ModeChoice("grid", "the survey is not periodic (no lattice period in its autocorrelation)")
    if not anywhere:
        return ModeChoice("grid", f"the survey is periodic (period {period:.1f} px) but the instrument "
                          "holds spectra only on its grid (a recorded data set)", period_px=period)
    sigma = round(float(AUTO_SIGMA * period), 3)
    distance = max(1, int(np.floor(AUTO_MIN_DISTANCE * period)))
    return ModeChoice("atoms", f"the survey is periodic (period {period:.1f} px): one candidate per atom column "
                      f"(atom_sigma_px {sigma:g}, min_distance_px {distance})", period, sigma, distance)


def resolve_candidates(
    survey: Survey, cfg: CandidatesConfig, description: InstrumentDescription | None = None
) -> tuple[CandidatesConfig, ModeChoice | None]:
    """The ``candidates:`` section with ``mode: auto`` replaced by the mode :func:`choose_mode` picks
    (and, for atoms, its scales), and that choice; any other mode comes back unchanged with ``None``.

    Raises:
        ValueError: ``mode: auto`` without the instrument's description (it says whether the probe
            can go anywhere).
    """
    if cfg.mode != "auto":
        return cfg, None
    if description is None:
        raise ValueError("candidates.mode: auto needs the instrument's description (can it probe anywhere?)")
    choice = choose_mode(survey, probes_anywhere(description))
    update: dict[str, Any] = {"mode": choice.mode}
    if choice.mode == "atoms":
        update.update(atom_sigma_px=choice.atom_sigma_px, min_distance_px=choice.min_distance_px)
    return cfg.model_copy(update=update), choice


def make_candidates(
    survey: Survey, cfg: CandidatesConfig, description: InstrumentDescription | None = None
) -> Candidates:
    """The candidates the ``candidates:`` section of a config asks for (``mode: grid | atoms | auto``),
    with their pooled wider views when ``context > 1``. ``patch_size: auto`` is resolved here from
    the survey (:func:`auto_patch_size`); the patches' shape records the size chosen. ``mode: auto``
    is resolved by :func:`resolve_candidates`, from the survey and the instrument's ``description``.

    NaN survey pixels never reach a patch: they are repaired from their nearest finite pixel, and
    with ``survey_nan: drop`` the candidates centred on one are left out (the rest are then no
    longer a full grid: ``grid_shape`` is ``None``).
    """
    cfg, _ = resolve_candidates(survey, cfg, description)
    size = auto_patch_size(survey, cfg.stride) if cfg.patch_size == "auto" else int(cfg.patch_size)
    survey, bad = repair_survey(survey)
    candidates = _candidates(survey, cfg, size)
    if bad.any() and cfg.survey_nan == "drop":
        rc = np.rint(candidates.pixels).astype(np.int64)
        keep = ~bad[rc[:, 0], rc[:, 1]]
        if not keep.any():
            raise ValueError("every candidate sits on a NaN survey pixel; nothing can be measured")
        candidates = Candidates(candidates.positions[keep], candidates.pixels[keep], candidates.patches[keep])
    if cfg.context > 1:
        image = _select_channels(survey, cfg.channels)
        candidates = replace(candidates, context=context_views(image, candidates.pixels, size, cfg.context))
    return candidates


def _candidates(survey: Survey, cfg: CandidatesConfig, size: int) -> Candidates:
    if cfg.mode == "atoms":
        return atom_candidates(
            survey,
            size,
            cfg.channels,
            atom_channel=cfg.atom_channel,
            sigma_px=cfg.atom_sigma_px,
            min_distance_px=cfg.min_distance_px,
            threshold=cfg.threshold,
        )
    return grid_candidates(survey, cfg.stride, size, cfg.channels)
