"""The survey of an imported spectrum image: a paired image placed and resampled onto the grid, or an
image made from the spectra themselves over a band.

The data set's survey is always sampled on the grid: survey pixel ``(i, j)`` lies at grid position
``(i / S, j / S)`` for the stride ``S``, so every grid point is a survey pixel. A paired image of
another pixel size, or one that covers more than the spectrum image (a Gatan survey with the SI
rectangle inside it), is placed on the grid by a 2-D affine map (from the files' calibrations, or
the SI rectangle Gatan records) and resampled there with scikit-image (``transform.warp``, bilinear,
Gaussian anti-aliasing when it shrinks); never cropped by hand. The placement can be refined by
phase correlation (``registration.phase_cross_correlation``) against the spectra's own intensity.
Survey pixels the image does not cover are NaN (the candidates there are masked).

Mapping convention: ``M`` is a ``3 x 3`` homogeneous affine map from image pixel ``(row, col, 1)``
to grid position ``(r, q, 1)``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..types import PixelTransform, SpectrumAxis

if TYPE_CHECKING:
    from .recordings import ImportOptions, Signal

__all__ = ["band_image", "make_survey", "place_image", "resample_onto_grid"]

MAX_STRIDE = 8
# phase_cross_correlation's error is 1 - (normalised peak)^2: near 1, the two images do not correlate
_MAX_REGISTRATION_ERROR = 0.9
# a shared-units placement is trusted when the two extents agree this well
_EXTENT_RTOL = 0.05


def band_image(spectra: np.ndarray, axis: SpectrumAxis, band: tuple[float, float] | None,
               where: str) -> tuple[np.ndarray, tuple[float, float]]:
    """Integrated intensity ``sum_{e in band} S(e) de`` of every spectrum: ``R x Q x L`` -> ``R x Q``.

    ``band`` defaults to the whole axis. NaN spectra give NaN pixels.
    """
    from .recordings import RecordingError

    values = axis.values()
    lo, hi = band if band is not None else (float(values[0]), float(values[-1]))
    m = (values >= lo) & (values <= hi)
    if m.sum() < 2:
        raise RecordingError(f"{where}: survey band [{lo:g}, {hi:g}] {axis.units} holds {int(m.sum())} points "
                             f"of the signal axis [{values[0]:.6g}, {values[-1]:.6g}] {axis.units}; it needs 2")
    return np.trapezoid(spectra[..., m], values[m], axis=-1).astype(np.float32), (float(lo), float(hi))


def resample_onto_grid(image: np.ndarray, mapping: np.ndarray, grid_shape: tuple[int, int],
                       stride: int) -> np.ndarray:
    """The image ``h x w`` sampled at grid positions ``(i / stride, j / stride)``.

    Args:
        image: ``h x w``.
        mapping: ``3 x 3`` image pixel -> grid position (module docstring).
        grid_shape: ``(R, Q)``.
        stride: survey pixels per grid step.

    Returns:
        ``((R-1) stride + 1) x ((Q-1) stride + 1)`` float32; NaN where the image does not reach.
    """
    from skimage.filters import gaussian
    from skimage.transform import AffineTransform, warp

    out_to_grid = np.diag([1.0 / stride, 1.0 / stride, 1.0])
    out_to_image = np.linalg.inv(mapping) @ out_to_grid  # (row, col) homogeneous
    swap = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=float)  # skimage works in (col, row)
    inverse = AffineTransform(matrix=swap @ out_to_image @ swap)
    image = np.asarray(image, dtype=np.float64)
    shrink = math.sqrt(abs(np.linalg.det(out_to_image[:2, :2])))  # image pixels per output pixel
    if shrink > 1.0:  # anti-alias before a reduction (what skimage.transform.rescale does)
        filled = np.where(np.isfinite(image), image, np.nanmean(image))
        image = gaussian(filled, sigma=(shrink - 1) / 2, preserve_range=True)
    shape = ((grid_shape[0] - 1) * stride + 1, (grid_shape[1] - 1) * stride + 1)
    return warp(image, inverse, output_shape=shape, order=1, cval=np.nan, preserve_range=True).astype(np.float32)


def place_image(img: Signal, grid_sig: Signal, grid_t: PixelTransform, calibrated_grid: bool,
                where: str) -> tuple[np.ndarray, str]:
    """The ``3 x 3`` map image pixel -> grid position, and how it was found.

    In order: the same grid (a topography recorded at the grid points); both in length units (the
    files' calibrations); the same non-length units and extents (e.g. a HAADF recorded with the
    spectrum image in spectrum-image pixel units); Gatan's ``Spectrum Image Rect`` of the survey.
    """
    from .recordings import LENGTH_UNITS

    iy, ix = (img.axes[i] for i in img.spatial)
    gy, gx = (grid_sig.axes[i] for i in grid_sig.spatial)
    iys, ixs, gys, gxs = iy.scale, ix.scale, gy.scale, gx.scale
    if iys is None or ixs is None or gys is None or gxs is None:
        # a non-uniform spatial axis has no calibration to place by: only a recorded rectangle can
        return _place_by_rect(img, grid_sig, where)
    if (iy.size, ix.size) == (gy.size, gx.size) and (
            (float(iy.offset), float(iys)), (float(ix.offset), float(ixs)), iy.units) == (
            (float(gy.offset), float(gys)), (float(gx.offset), float(gxs)), gy.units):
        return np.eye(3), "recorded on the same grid"
    if calibrated_grid and iy.units in LENGTH_UNITS and ix.units in LENGTH_UNITS:
        fy, fx = LENGTH_UNITS[iy.units], LENGTH_UNITS[ix.units]
        to_xy = np.array([[0.0, ixs * fx, ix.offset * fx], [iys * fy, 0.0, iy.offset * fy], [0, 0, 1]])
        inv = np.linalg.inv(np.asarray(grid_t.matrix))
        to_grid = np.eye(3)
        to_grid[:2, :2], to_grid[:2, 2] = inv, -inv @ np.asarray(grid_t.origin)
        return to_grid @ to_xy, "placed by the files' length calibrations"
    if iy.units == gy.units and ix.units == gx.units:
        ext_i = np.array([iy.size * iys, ix.size * ixs])
        ext_g = np.array([gy.size * gys, gx.size * gxs])
        if np.allclose(np.abs(ext_i), np.abs(ext_g), rtol=_EXTENT_RTOL):
            return (np.array([[iys / gys, 0.0, (iy.offset - gy.offset) / gys],
                              [0.0, ixs / gxs, (ix.offset - gx.offset) / gxs], [0, 0, 1]]),
                    f"placed by the files' calibrations in shared units ({gy.units or 'spectrum-image pixels'})")
    return _place_by_rect(img, grid_sig, where)


def _place_by_rect(img: Signal, grid_sig: Signal, where: str) -> tuple[np.ndarray, str]:
    """:func:`place_image` by the SI rectangle the acquisition recorded, or RecordingError."""
    from .recordings import RecordingError

    iy, ix = (img.axes[i] for i in img.spatial)
    gy, gx = (grid_sig.axes[i] for i in grid_sig.spatial)
    rect = _si_rect(grid_sig)
    if rect is not None:
        top, left, bottom, right = rect
        if not (0 <= top < bottom <= iy.size and 0 <= left < right <= ix.size):
            raise RecordingError(f"{where}: the SI rectangle {rect} recorded with the spectrum image does not lie "
                                 f"inside the {iy.size} x {ix.size} survey {img.name!r}")
        sr, sc = gy.size / (bottom - top), gx.size / (right - left)  # grid steps per image pixel
        # pixel edges: image row `top` is the top edge of grid row 0, whose centre is r = 0
        return (np.array([[sr, 0.0, (0.5 - top) * sr - 0.5], [0.0, sc, (0.5 - left) * sc - 0.5], [0, 0, 1]]),
                f"placed by the SI rectangle {list(rect)} (top, left, bottom, right) recorded by the acquisition")
    raise RecordingError(
        f"{where}: cannot place the survey {img.name!r} ({iy.size} x {ix.size}: {iy.describe()}; {ix.describe()}) "
        f"on the {gy.size} x {gx.size} grid: its size does not match the spectrum image's and neither file "
        f"says where one lies in the other (calibrate both in length units)"
    )


def _si_rect(sig: Signal) -> tuple[int, int, int, int] | None:
    from .recordings import _dig

    rect = _dig(sig.original, "ImageList", "TagGroup0", "ImageTags", "SI", "Acquisition", "Survey Image",
                "Spectrum Image Rect")
    if rect is None or len(rect) != 4:
        return None
    top, left, bottom, right = (int(v) for v in rect)
    return top, left, bottom, right


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two images over the pixels finite in both."""
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or a[ok].std() == 0 or b[ok].std() == 0:
        return 0.0
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def _register(survey_grid: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Shift ``(dr, dq)`` (grid steps) that moves the survey onto the spectra's own image."""
    from skimage.registration import phase_cross_correlation

    def prep(a: np.ndarray) -> np.ndarray:
        a = np.where(np.isfinite(a), a, np.nanmean(a))
        return (a - a.mean()) / (a.std() or 1.0)

    shift, _, _ = phase_cross_correlation(prep(reference), prep(survey_grid), upsample_factor=20)
    return np.asarray(shift, dtype=float)


def _channel_name(title: str) -> str:
    low = title.lower()
    for known in ("haadf", "adf", "topography", "survey"):
        if known in low:
            return known
    return re.sub(r"[^0-9a-z]+", "_", low).strip("_") or "image"


def make_survey(path: Path, sig: Signal, spectra: np.ndarray, axis: SpectrumAxis, grid_t: PixelTransform,
                signals: list[Signal], opts: ImportOptions) -> tuple[np.ndarray, tuple[str, ...], int, dict[str, Any]]:
    """The data set's survey ``1 x H x W``, its channel names, its stride and what it is (for the record)."""
    from .recordings import RecordingError, read_recording, select_signal, sha256

    where = f"{path}, signal {sig.name!r}"
    grid_shape = spectra.shape[:2]
    if opts.survey is None:
        band, (lo, hi) = band_image(spectra, axis, opts.survey_band, where)
        stride = int(opts.stride or 1)
        survey = resample_onto_grid(band, np.eye(3), grid_shape, stride) if stride > 1 else band
        summary = f"band [{lo:g}, {hi:g}] {axis.units} of the spectra (not an independent image)"
        info: dict[str, Any] = {"kind": "band", "band": [lo, hi], "units": axis.units, "independent": False,
                                "summary": summary}
        return survey[None].astype(np.float32), ("band",), stride, info

    survey_path = Path(opts.survey)
    same = survey_path.resolve() == path.resolve()
    survey_signals = signals if same else read_recording(survey_path)
    img = select_signal(survey_signals, opts.survey_signal, survey_path, kind="image")
    where_img = f"{survey_path}, image {img.name!r}"
    calibrated = "calibration" in _calibration_kind(sig)
    mapping, how = place_image(img, sig, grid_t, calibrated and opts.pixel_size is None, where_img)
    per_step = 1.0 / math.sqrt(abs(np.linalg.det(mapping[:2, :2])))  # image pixels per grid step
    stride = int(opts.stride or min(MAX_STRIDE, max(1, round(per_step))))
    data = np.asarray(img.data, dtype=np.float64)
    info = {"kind": "image", "independent": True, "file": survey_path.name,
            "sha256": sha256(survey_path), "signal": img.name, "shape": list(data.shape),
            "placement": how, "image_pixels_per_grid_step": per_step}
    if opts.register and min(grid_shape) >= 4 and not how.startswith("recorded"):
        reference, _ = band_image(spectra, axis, opts.survey_band, where)
        before = resample_onto_grid(data, mapping, grid_shape, 1)
        shift = _register(before, reference)
        move = np.eye(3)
        move[:2, 2] = shift  # the image content sits `shift` further along the grid
        r0 = _correlation(reference, before)
        r1 = _correlation(reference, resample_onto_grid(data, move @ mapping, grid_shape, 1))
        # a jump of more than a grid step between two views of one scan is a mismatch, not drift;
        # a shift that does not raise the correlation with the spectra is noise
        applied = bool(np.all(np.abs(shift) <= 1.0) and r1 > r0)
        info["registration"] = {"shift_grid_steps": shift.round(3).tolist(), "correlation_before": r0,
                                "correlation_after": r1, "applied": applied}
        if applied:
            mapping = move @ mapping
    survey = resample_onto_grid(data, mapping, grid_shape, stride)
    nan = int((~np.isfinite(survey)).sum())
    if nan == survey.size:
        raise RecordingError(f"{where_img}: the survey does not overlap the spectrum image at all ({how})")
    info["nan_pixels"] = nan
    resampled = "" if abs(per_step - stride) < 1e-6 and how.startswith("recorded") else \
        f", resampled from {data.shape[0]} x {data.shape[1]} px ({per_step:.3g} px per spectrum) to {stride}"
    moved = ""
    reg = info.get("registration")
    if reg is not None:
        moved = (f", {'registered' if reg['applied'] else 'not moved'} by phase correlation (shift "
                 f"{reg['shift_grid_steps']} grid steps; correlation with the spectra {reg['correlation_before']:.2f}"
                 f" -> {reg['correlation_after']:.2f})")
    info["summary"] = f"image {survey_path.name} [{img.name}] {how}{resampled}{moved}"
    return survey[None], (_channel_name(img.name),), stride, info


def _calibration_kind(sig: Signal) -> str:
    """``"calibration"`` when the grid's metres come from the file's own length units or positions."""
    from .recordings import LENGTH_UNITS

    sp = [sig.axes[i] for i in sig.spatial]
    if sig.positions is not None or all(a.units in LENGTH_UNITS for a in sp):
        return "calibration"
    return "none"
