"""Scalars of a convergent-beam diffraction pattern: the quantities a 4D-STEM experiment maps.

A pattern is an array ``... x ky x kx`` of detector counts: rows run along ``ky``, columns along
``kx`` (the same orientation as a survey image, whose rows run along ``y``). A
:class:`DetectorCalibration` turns detector pixels into scattering angles in milliradians:
``(kx, ky) = pixel_mrad * (col - centre_col, row - centre_row)``, with ``centre_px`` where the
undeflected beam falls. Every function here takes one pattern (``ky x kx``, returns a float) or a
batch (``N x ky x kx``, returns ``N`` floats), so the same code scores one measurement and a whole
noiseless map.

- :func:`com_magnitude`, :func:`com_direction`: the centre of mass of the pattern, the DPC signal
  (for a thin sample it follows the projected in-plane field: ``<k> ~ -E t``).
- :func:`annular_intensity`: counts in a virtual annular detector (bright field, ADF).
- :func:`disk_spacing_strain`: lattice strain along a direction from the spacing of the ``+-g``
  Bragg disks (real-space spacing goes as ``1 / |g|``).
- :func:`bragg_ratio`: intensity of one Bragg disk over another (polarity, tilt, thickness).

Example:
    >>> cal = DetectorCalibration(pixel_mrad=0.35, centre_px=(31.5, 31.5))
    >>> com_magnitude(pattern, cal)                                   # mrad
    >>> annular_intensity(pattern, cal, inner_mrad=2.0, outer_mrad=9.0)
    >>> disk_spacing_strain(pattern, cal, direction_rad=0.0, reference_mrad=4.56, window_mrad=1.5)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import AexpError

__all__ = [
    "DetectorCalibration",
    "DiffractionError",
    "centre_of_mass",
    "com_magnitude",
    "com_direction",
    "annular_intensity",
    "disk_centre",
    "disk_spacing_strain",
    "bragg_ratio",
]

# Re-centring a window on its centroid converges geometrically for a disk inside the window;
# five passes take a disk that starts a window-radius / 2 off to well under 1e-3 px.
_CENTROID_PASSES = 5


class DiffractionError(AexpError, ValueError):
    """A pattern or a diffraction target's parameters do not fit together."""


@dataclass(frozen=True)
class DetectorCalibration:
    """Angles on the diffraction detector.

    Attributes:
        pixel_mrad: scattering angle per detector pixel (mrad), the same along ``kx`` and ``ky``.
        centre_px: ``(row, col)`` where the undeflected beam falls (fractional pixels).

    Example:
        >>> cal = DetectorCalibration(0.35, (31.5, 31.5))
        >>> kx, ky = cal.k_grid((64, 64))      # 64 x 64 each, mrad
    """

    pixel_mrad: float
    centre_px: tuple[float, float]

    def __post_init__(self) -> None:
        if not (math.isfinite(self.pixel_mrad) and self.pixel_mrad > 0):
            raise DiffractionError(f"DetectorCalibration.pixel_mrad must be a finite number > 0, got {self.pixel_mrad}")
        if len(self.centre_px) != 2 or not all(math.isfinite(float(c)) for c in self.centre_px):
            raise DiffractionError(f"DetectorCalibration.centre_px must be a finite (row, col), got {self.centre_px}")

    def k_grid(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """``(kx, ky)`` in mrad of every pixel of a ``ky x kx`` detector of ``shape``."""
        rows, cols = np.arange(shape[0], dtype=float), np.arange(shape[1], dtype=float)
        kx = (cols[None, :] - self.centre_px[1]) * self.pixel_mrad
        ky = (rows[:, None] - self.centre_px[0]) * self.pixel_mrad
        return np.broadcast_to(kx, shape), np.broadcast_to(ky, shape)

    def to_dict(self) -> dict[str, object]:
        return {"pixel_mrad": self.pixel_mrad, "centre_px": [float(c) for c in self.centre_px]}


def _batch(pattern: np.ndarray) -> tuple[np.ndarray, bool]:
    """``pattern`` as float ``N x ky x kx`` and whether it was one pattern."""
    p = np.asarray(pattern, dtype=float)
    if p.ndim not in (2, 3) or min(p.shape[-2:]) < 2:
        raise DiffractionError(f"a diffraction pattern must be ky x kx or N x ky x kx, got shape {p.shape}")
    if not np.isfinite(p).all():
        raise DiffractionError("the diffraction pattern holds NaN or infinite values")
    return (p[None], True) if p.ndim == 2 else (p, False)


def _out(values: np.ndarray, single: bool) -> float | np.ndarray:
    return float(values[0]) if single else values


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise DiffractionError(f"{name} must be a finite number > 0 (mrad), got {value}")
    return value


def centre_of_mass(pattern: np.ndarray, calibration: DetectorCalibration) -> np.ndarray:
    """Centre of mass ``<k> = sum_k I(k) k / sum_k I(k)`` in mrad: ``2`` (kx, ky) for one pattern,
    ``N x 2`` for a batch. An empty pattern (no counts) has its centre of mass at 0."""
    p, single = _batch(pattern)
    kx, ky = calibration.k_grid(p.shape[-2:])
    total = p.sum(axis=(1, 2))
    safe = np.where(total > 0, total, 1.0)
    com = np.stack([(p * kx).sum(axis=(1, 2)) / safe, (p * ky).sum(axis=(1, 2)) / safe], axis=1)
    com[total <= 0] = 0.0
    return com[0] if single else com


def com_magnitude(pattern: np.ndarray, calibration: DetectorCalibration) -> float | np.ndarray:
    """``|<k>|`` (mrad): the magnitude of the DPC signal."""
    com = np.atleast_2d(centre_of_mass(pattern, calibration))
    return _out(np.hypot(com[:, 0], com[:, 1]), np.ndim(pattern) == 2)


def com_direction(pattern: np.ndarray, calibration: DetectorCalibration) -> float | np.ndarray:
    """``atan2(<ky>, <kx>)`` in radians, in ``(-pi, pi]``: the direction of the DPC signal."""
    com = np.atleast_2d(centre_of_mass(pattern, calibration))
    return _out(np.arctan2(com[:, 1], com[:, 0]), np.ndim(pattern) == 2)


def annular_intensity(
    pattern: np.ndarray, calibration: DetectorCalibration, inner_mrad: float, outer_mrad: float
) -> float | np.ndarray:
    """Counts on a virtual annular detector: ``sum of I(k) over inner <= |k| < outer`` (pixel
    centres, ``k`` from the calibration's centre). ``inner_mrad = 0`` gives a bright-field disk."""
    p, single = _batch(pattern)
    inner = float(inner_mrad)
    outer = _positive("annular_intensity outer_mrad", outer_mrad)
    if not (math.isfinite(inner) and 0 <= inner < outer):
        raise DiffractionError(f"annular_intensity needs 0 <= inner_mrad < outer_mrad, got [{inner}, {outer}]")
    kx, ky = calibration.k_grid(p.shape[-2:])
    k = np.hypot(kx, ky)
    mask = (k >= inner) & (k < outer)
    if not mask.any():
        raise DiffractionError(
            f"annular_intensity: no detector pixel lies in [{inner}, {outer}) mrad "
            f"({p.shape[-2]} x {p.shape[-1]} px of {calibration.pixel_mrad} mrad)"
        )
    return _out((p * mask).sum(axis=(1, 2)), single)


def disk_centre(
    pattern: np.ndarray, calibration: DetectorCalibration, guess_mrad: np.ndarray, window_mrad: float
) -> np.ndarray:
    """Centre (kx, ky) in mrad of the disk near ``guess_mrad``: the centroid of the counts above
    the background, in a circular window of radius ``window_mrad`` re-centred on the centroid a
    few times, so a disk wholly inside the window is found to a fraction of a pixel. The
    background is a plane fitted to the window's outer two pixels, so the window should be a
    little (two pixels or more) wider than the disk.

    Args:
        pattern: ``ky x kx`` or ``N x ky x kx``.
        guess_mrad: ``2`` or ``N x 2`` (kx, ky) where to start.
        window_mrad: radius of the window; the disk plus its blur should fit inside.

    Returns:
        ``2`` or ``N x 2`` (kx, ky) in mrad.
    """
    p, single = _batch(pattern)
    window = _positive("window_mrad", window_mrad)
    kx, ky = calibration.k_grid(p.shape[-2:])
    centre = np.broadcast_to(np.asarray(guess_mrad, dtype=float), (len(p), 2)).copy()
    for _ in range(_CENTROID_PASSES):
        inside = (kx[None] - centre[:, :1, None]) ** 2 + (ky[None] - centre[:, 1:, None]) ** 2 <= window**2
        if not inside.any(axis=(1, 2)).all():
            raise DiffractionError(
                f"disk_centre: a window of {window} mrad around {centre[0].round(3).tolist()} mrad lies off the detector"
            )
        # the background under the disk, a plane fitted to the window's rim (its outer two
        # pixels): a plain centroid would be pulled towards the beam by the sloping diffuse halo
        d2 = (kx[None] - centre[:, :1, None]) ** 2 + (ky[None] - centre[:, 1:, None]) ** 2
        rim = inside & (d2 >= (window - 2 * calibration.pixel_mrad) ** 2)
        w = np.where(inside, np.maximum(p - _rim_plane(p, rim, kx, ky), 0.0), 0.0)
        total = w.sum(axis=(1, 2))
        found = total > 0
        safe = np.where(found, total, 1.0)
        new = np.stack([(w * kx).sum(axis=(1, 2)) / safe, (w * ky).sum(axis=(1, 2)) / safe], axis=1)
        centre = np.where(found[:, None], new, centre)  # a flat window keeps its guess
    return centre[0] if single else centre


def _rim_plane(p: np.ndarray, rim: np.ndarray, kx: np.ndarray, ky: np.ndarray) -> np.ndarray:
    """``N x ky x kx``: the plane ``c0 + c1 kx + c2 ky`` least-squares fitted to each pattern's
    ``rim`` pixels (a flat level where the rim cannot fix a plane)."""
    basis = np.stack([np.ones_like(kx), kx, ky])  # 3 x H x W
    m = np.einsum("iyx,jyx,nyx->nij", basis, basis, rim.astype(float))
    rhs = np.einsum("iyx,nyx->ni", basis, np.where(rim, p, 0.0))
    flat = np.linalg.matrix_rank(m) < 3
    coef = np.zeros((len(p), 3))
    if (~flat).any():
        coef[~flat] = np.linalg.solve(m[~flat], rhs[~flat][..., None])[..., 0]
    counts = m[:, 0, 0]
    coef[flat, 0] = rhs[flat, 0] / np.maximum(counts[flat], 1.0)
    return np.einsum("ni,iyx->nyx", coef, basis)


def _unit(direction_rad: float) -> np.ndarray:
    return np.array([math.cos(float(direction_rad)), math.sin(float(direction_rad))])


def disk_spacing_strain(
    pattern: np.ndarray,
    calibration: DetectorCalibration,
    direction_rad: float,
    reference_mrad: float,
    window_mrad: float,
) -> float | np.ndarray:
    """Lattice strain along ``direction_rad`` from the ``+-g`` disks: ``eps = g_0 / g - 1`` with
    ``g = |c(+g) - c(-g)| / 2`` the measured half-distance between the two disks and ``g_0 =
    reference_mrad`` the unstrained spacing (real-space spacing ``d ~ 1 / g``, so a stretched
    lattice, ``eps > 0``, brings the disks in). Using both disks cancels a shift of the whole
    pattern (the DPC signal). The disks are looked for at ``+-g_0`` along the direction (angle of
    ``(kx, ky)``) around the central disk, within ``window_mrad``.
    """
    p, single = _batch(pattern)
    g0 = _positive("disk_spacing_strain reference_mrad", reference_mrad)
    window = _positive("disk_spacing_strain window_mrad", window_mrad)
    if window >= g0:
        raise DiffractionError(
            f"disk_spacing_strain: window_mrad {window} must be smaller than reference_mrad {g0}, "
            "or the windows of the central and Bragg disks overlap"
        )
    beam = disk_centre(p, calibration, np.zeros(2), window)
    g = g0 * _unit(direction_rad)
    plus = disk_centre(p, calibration, beam + g, window)
    minus = disk_centre(p, calibration, beam - g, window)
    spacing = np.hypot(*(plus - minus).T) / 2.0
    return _out(g0 / np.maximum(spacing, 1e-12) - 1.0, single)


def bragg_ratio(
    pattern: np.ndarray,
    calibration: DetectorCalibration,
    g1_mrad: tuple[float, float],
    g2_mrad: tuple[float, float],
    radius_mrad: float,
) -> float | np.ndarray:
    """``I(g1) / I(g2)``: counts within ``radius_mrad`` of ``beam + g1`` over those near
    ``beam + g2``, with ``beam`` the centre of the central disk (found with :func:`disk_centre`
    in a window two pixels wider than ``radius_mrad``), so the ratio does not move when the whole pattern does. ``g1``, ``g2``
    are (kx, ky) in mrad; with ``g2 = -g1`` it measures the Friedel-pair asymmetry (polarity)."""
    p, single = _batch(pattern)
    radius = _positive("bragg_ratio radius_mrad", radius_mrad)
    beam = disk_centre(p, calibration, np.zeros(2), radius + 2 * calibration.pixel_mrad)
    kx, ky = calibration.k_grid(p.shape[-2:])

    def counts(g: tuple[float, float]) -> np.ndarray:
        c = beam + np.asarray(g, dtype=float)
        inside = (kx[None] - c[:, :1, None]) ** 2 + (ky[None] - c[:, 1:, None]) ** 2 <= radius**2
        if not inside.any(axis=(1, 2)).all():
            raise DiffractionError(f"bragg_ratio: the disk at g = {tuple(g)} mrad lies off the detector")
        return (p * inside).sum(axis=(1, 2))

    num, den = counts(g1_mrad), counts(g2_mrad)
    return _out(num / np.where(den > 0, den, np.nan), single)
