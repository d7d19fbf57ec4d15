"""Scalarisers: the named functions that turn a spectrum into the scalar the experiment optimises.

Every target works on a batch: ``spectra`` is ``n x L`` on the axis values ``L`` and the result is
``n`` floats, so the same code scores one measurement in the loop and a whole noiseless map for the
benchmark. Targets are chosen by name in the config (``target: {name: band_intensity, ...}``).

The functions in :data:`TARGETS` take an ascending axis; :class:`Target` puts any strictly
monotonic axis (and its spectra) in ascending order first, so a detector whose energy axis runs
backwards scores the same as one that runs forwards. NaN means a failed measurement (no edge, a loop
that does not switch): the loop records the step as failed and the model does not learn from it.
The reference of every target, with its math and its NaN cases, is ``docs/targets.md``.

Example:
    >>> t = make_target("band_intensity", window=(2.0, 2.6))
    >>> t.check_axis(axis)            # raises TargetError if the window misses the axis
    >>> t(spectra, axis.values())     # -> n floats
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from . import diffraction
from .errors import AexpError
from .types import SpectrumAxis

__all__ = ["Target", "TargetError", "make_target", "TARGETS", "ENTRY_POINT_GROUP", "target_function", "target_names"]


class TargetError(AexpError, ValueError):
    """A target's parameters do not fit the spectrum it is given."""


def _window_mask(axis: np.ndarray, window: tuple[float, float], what: str) -> np.ndarray:
    lo, hi = window
    mask = (axis >= lo) & (axis <= hi)
    if mask.sum() < 2:
        raise TargetError(
            f"{what} window [{lo}, {hi}] holds {int(mask.sum())} points of the spectrum axis "
            f"[{axis.min():.4g}, {axis.max():.4g}] ({len(axis)} points); it needs at least 2"
        )
    return mask


def band_intensity(spectra: np.ndarray, axis: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Integrated intensity in ``window``: ``sum_{e in window} S(e) * de`` (trapezoid rule)."""
    m = _window_mask(axis, window, "band_intensity")
    return np.trapezoid(spectra[:, m], axis[m], axis=1)


def peak_position(spectra: np.ndarray, axis: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Axis value of the maximum in ``window``, refined by a parabola through the top 3 points."""
    m = _window_mask(axis, window, "peak_position")
    x, s = axis[m], spectra[:, m]
    i = np.clip(np.argmax(s, axis=1), 1, len(x) - 2)
    rows = np.arange(len(s))
    y0, y1, y2 = s[rows, i - 1], s[rows, i], s[rows, i + 1]
    denom = y0 - 2 * y1 + y2
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(np.abs(denom) > 1e-12, 0.5 * (y0 - y2) / denom, 0.0)
    return x[i] + np.clip(shift, -1, 1) * (x[1] - x[0])


def peak_ratio(
    spectra: np.ndarray,
    axis: np.ndarray,
    window: tuple[float, float],
    reference: tuple[float, float],
) -> np.ndarray:
    """Ratio of integrated intensity in ``window`` to that in ``reference`` (guarded against 0)."""
    num = band_intensity(spectra, axis, window)
    den = band_intensity(spectra, axis, reference)
    return num / np.where(np.abs(den) > 1e-12, den, np.copysign(1e-12, den + 0.0))


def _power_law_background(x: np.ndarray, s: np.ndarray, fit: np.ndarray) -> np.ndarray:
    """``n x L`` power law ``A x^-r`` fitted (log-log least squares) to the points ``fit`` of ``s``."""
    lx = np.log(x)
    ly = np.log(np.maximum(s[:, fit], 1e-12))
    design = np.column_stack([np.ones(fit.sum()), lx[fit]])
    coef, *_ = np.linalg.lstsq(design, ly.T, rcond=None)  # 2 x n
    return np.exp(coef[0][:, None] + coef[1][:, None] * lx[None, :])


def _first_rise(x: np.ndarray, y: np.ndarray, level: float | np.ndarray) -> np.ndarray:
    """Where each row of ``y`` (``n x K``, rising) first reaches ``level``, linearly interpolated.

    "Reaches" asks two points in a row at or above ``level``, so that one noisy point does not
    count. A row that never reaches it gives NaN.
    """
    level = np.broadcast_to(np.asarray(level, dtype=float).reshape(-1, 1), (len(y), 1))
    above = y >= level
    sustained = above[:, :-1] & above[:, 1:]
    hit = sustained.any(axis=1)
    k = np.argmax(sustained, axis=1)
    rows = np.arange(len(y))
    k0 = np.maximum(k - 1, 0)
    y0, y1 = y[rows, k0], y[rows, k]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where((k > 0) & (y1 != y0), (level[:, 0] - y0) / (y1 - y0), 0.0)
    out = x[k0] + np.clip(t, 0.0, 1.0) * (x[k] - x[k0])
    return np.where(hit, out, np.nan)


def edge_onset(
    spectra: np.ndarray, axis: np.ndarray, window: tuple[float, float], fraction: float = 0.5
) -> np.ndarray:
    """Energy where a core-loss edge in ``window`` reaches ``fraction`` of its step height.

    The first quarter of the window is the pre-edge: a power law ``A E^-r`` fitted there is
    extrapolated and subtracted; the step height is the mean net signal over the last quarter.
    NaN where there is no rising step (height <= 0) or the net signal never reaches ``fraction``
    of it.
    """
    if not 0 < fraction < 1:
        raise TargetError(f"edge_onset: fraction must lie in (0, 1), got {fraction}")
    m = _window_mask(axis, window, "edge_onset")
    if m.sum() < 8 or axis[m].min() <= 0:
        raise TargetError(
            f"edge_onset window [{window[0]}, {window[1]}] holds {int(m.sum())} points of the axis; "
            f"it needs at least 8, all above 0"
        )
    x, s = axis[m], spectra[:, m]
    q = max(2, len(x) // 4)
    pre = np.zeros(len(x), dtype=bool)
    pre[:q] = True
    net = s - _power_law_background(x, s, pre)
    height = net[:, -q:].mean(axis=1)
    onset = _first_rise(x, net, fraction * height)
    return np.where(height > 0, onset, np.nan)  # no rise above the background: no edge


def edge_intensity(
    spectra: np.ndarray,
    axis: np.ndarray,
    pre_edge: tuple[float, float],
    window: tuple[float, float],
) -> np.ndarray:
    """Integrated core-loss edge over ``window`` above a power-law background fitted in ``pre_edge``.

    ``I = int_window (S(E) - A E^-r) dE`` (trapezoid on the axis values), with ``log A - r log E``
    fitted to ``log S`` over ``pre_edge`` by least squares: the standard EELS elemental map. Both
    windows lie above 0 eV and the pre-edge window ends where the integration window starts, or
    before. NaN where a count in the pre-edge window is 0 or negative (or not finite): no power law
    fits there (too little dose, or a dark-subtracted spectrum); widen the pre-edge window or
    measure longer rather than trust a fit that skips those channels.

    Example:
        >>> t = make_target("edge_intensity", pre_edge=(250.0, 280.0), window=(285.0, 335.0))
        >>> t(spectra, energy_loss)      # n spectra -> n edge intensities (counts x eV)
    """
    if pre_edge[1] > window[0]:
        raise TargetError(
            f"edge_intensity: the pre-edge window [{pre_edge[0]}, {pre_edge[1]}] must end where the "
            f"integration window [{window[0]}, {window[1]}] starts, or before"
        )
    fit = _window_mask(axis, pre_edge, "edge_intensity pre_edge")
    m = _window_mask(axis, window, "edge_intensity")
    if axis[fit].min() <= 0:
        raise TargetError(
            f"edge_intensity pre_edge window [{pre_edge[0]}, {pre_edge[1]}] reaches "
            f"{axis[fit].min():.4g}; a power law needs axis values above 0"
        )
    usable = np.all(np.isfinite(spectra[:, fit]) & (spectra[:, fit] > 0), axis=1)
    both = fit | m
    x = axis[both]
    counts = np.where(usable[:, None], spectra[:, both], 1.0)  # a failed row must not upset lstsq
    net = counts - _power_law_background(x, counts, fit[both])
    inside = m[both]
    intensity = np.trapezoid(net[:, inside], x[inside], axis=1)
    return np.where(usable, intensity, np.nan)


def _fold_loop(spectra: np.ndarray, axis: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split a loop over the unfolded bias into its branches on one ascending bias grid.

    The axis holds ``2 p + 1`` values ``u``; the applied bias is ``u`` for the first ``p + 1``
    points (up) and ``2 u_p - u`` after (back down). Returns ``(bias, up, down)``: bias ``p + 1``
    ascending, each branch ``n x (p + 1)`` in the order of ``bias``.
    """
    n = len(axis)
    if n % 2 == 0 or n < 9:
        raise TargetError(
            f"a hysteresis loop needs an odd number (>= 9) of points on its unfolded bias axis "
            f"(a sweep up and back that turns at the middle point), got {n}"
        )
    p = n // 2
    bias = axis[: p + 1]
    return bias, spectra[:, : p + 1], spectra[:, p:][:, ::-1]


SPIKE_SIGMAS = 8.0
"""A loop point further than this many noise sigmas from its 5-point running median is a spike."""

SWITCH_SIGMAS = 4.0
"""A loop whose switching amplitude is not this many noise sigmas above 0 did not switch (NaN)."""


def _fill_missing(bias: np.ndarray, branches: np.ndarray) -> np.ndarray:
    """Interpolate the NaN points of each branch (a fit that returned nothing) from their neighbours.

    A branch with fewer than half its points finite is left as it is: its loop is then NaN.
    """
    missing = ~np.isfinite(branches)
    if not missing.any():
        return branches
    out = branches.copy()
    for i, j in zip(*np.nonzero(missing.any(axis=2))):
        bad = missing[i, j]
        if bad.sum() <= len(bias) // 2:
            out[i, j, bad] = np.interp(bias[bad], bias[~bad], branches[i, j, ~bad])
    return out


def _despike(bias: np.ndarray, branches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Replace isolated spikes (runs of 1 or 2 points) and NaN points of each branch by interpolation.

    ``bias``: ``K`` ascending; ``branches``: ``n x 2 x K`` (up, down). A spike is a point more than
    ``max(SPIKE_SIGMAS sigma, 0.1 spread)`` from the 5-point running median of its branch, where
    ``sigma = median|x_{i+1} - x_i| / (0.6745 sqrt 2)`` is the loop's robust noise (the few steep
    steps of the switching do not move the median) and ``spread`` its 5-95 % range: a failed SHO fit
    at one bias step, not noise. A monotonic branch equals its running median, so a clean loop is
    returned unchanged, bit for bit. Returns ``(branches, sigma)``, ``sigma`` of shape ``n``.
    """
    branches = _fill_missing(bias, branches)
    med = ndimage.median_filter(branches, size=(1, 1, 5), mode="nearest")
    steps = np.abs(np.diff(branches, axis=2)).reshape(len(branches), -1)
    sigma = np.median(steps, axis=1) / (0.6745 * np.sqrt(2.0))
    flat = med.reshape(len(branches), -1)
    spread = np.percentile(flat, 95, axis=1) - np.percentile(flat, 5, axis=1)
    limit = np.maximum(SPIKE_SIGMAS * sigma, 0.1 * spread)
    spike = np.abs(branches - med) > limit[:, None, None]
    out = branches.copy()
    for i, j in zip(*np.nonzero(spike.any(axis=2))):  # rare: only branches that have a spike
        bad = spike[i, j]
        if bad.sum() <= len(bias) // 2:  # more spikes than points is no longer a spike
            out[i, j, bad] = np.interp(bias[bad], bias[~bad], branches[i, j, ~bad])
    return out, sigma


@dataclass(frozen=True)
class _Loop:
    """A folded, despiked loop: bias ``K``; up, down ``n x K``; low, high saturation and ``switched`` ``n``."""

    bias: np.ndarray
    up: np.ndarray
    down: np.ndarray
    low: np.ndarray
    high: np.ndarray
    switched: np.ndarray


def _loop(spectra: np.ndarray, axis: np.ndarray, k: int = 3) -> _Loop:
    """Fold, despike and saturate a loop; ``switched`` is False for a flat or inverted loop.

    Low and high saturation are the mean of both branches over the ``k`` extreme biases. A loop
    switches when ``high - low > SWITCH_SIGMAS sigma`` (and ``> 0`` when noiseless): a flat loop
    (no ferroelectric response, a lost tip contact) or an inverted one (response falling with bias:
    a phase offset gone wrong) is a failed measurement, not a loop of zero size.
    """
    bias, up, down = _fold_loop(spectra, axis)
    clean, sigma = _despike(bias, np.stack([up, down], axis=1))
    up, down = clean[:, 0], clean[:, 1]
    low = np.concatenate([up[:, :k], down[:, :k]], axis=1).mean(axis=1)
    high = np.concatenate([up[:, -k:], down[:, -k:]], axis=1).mean(axis=1)
    amplitude = high - low
    switched = (amplitude > SWITCH_SIGMAS * sigma) & (amplitude > 0)
    return _Loop(bias, up, down, low, high, switched)


def _switching_biases(loop: _Loop) -> tuple[np.ndarray, np.ndarray]:
    """Bias where each branch crosses the loop's midline: ``(V_up, V_down)``, each ``n``."""
    mid = (loop.low + loop.high) / 2
    return _first_rise(loop.bias, loop.up, mid), _first_rise(loop.bias, loop.down, mid)


def loop_area(spectra: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Area enclosed by a hysteresis loop, ``int (R_down - R_up) dV`` (response x V); NaN if flat."""
    loop = _loop(spectra, axis)
    area = np.trapezoid(loop.down - loop.up, loop.bias, axis=1)
    return np.where(loop.switched, area, np.nan)


def coercive_bias(spectra: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Half the loop's opening, ``(V_up - V_down) / 2``, at the midline crossings of the branches."""
    loop = _loop(spectra, axis)
    v_up, v_down = _switching_biases(loop)
    return np.where(loop.switched, (v_up - v_down) / 2, np.nan)


def imprint(spectra: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Horizontal offset of the loop, ``(V_up + V_down) / 2``."""
    loop = _loop(spectra, axis)
    v_up, v_down = _switching_biases(loop)
    return np.where(loop.switched, (v_up + v_down) / 2, np.nan)


def nucleation_bias(spectra: np.ndarray, axis: np.ndarray, level: float = 0.1) -> np.ndarray:
    """Bias at which the up branch has switched ``level`` of the way from low to high saturation."""
    if not 0 < level < 1:
        raise TargetError(f"nucleation_bias: level must lie in (0, 1), got {level}")
    loop = _loop(spectra, axis)
    v = _first_rise(loop.bias, loop.up, loop.low + level * (loop.high - loop.low))
    return np.where(loop.switched, v, np.nan)


def _ascending(spectra: np.ndarray, axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(spectra, axis)`` with the axis ascending; a descending axis is reversed with its spectra."""
    if axis.ndim != 1 or axis.shape[0] != spectra.shape[-1]:
        raise TargetError(f"spectra of length {spectra.shape[-1]} on an axis of shape {axis.shape}")
    step = np.diff(axis)
    if not np.all(np.isfinite(axis)) or not (np.all(step > 0) or np.all(step < 0)):
        raise TargetError(
            f"the spectrum axis must run strictly up or strictly down, without NaN; got "
            f"[{axis[0]:.4g}, ..., {axis[-1]:.4g}] ({len(axis)} points)"
        )
    if len(step) and step[0] < 0:
        return spectra[..., ::-1], axis[::-1]
    return spectra, axis


# --- targets on diffraction patterns (4D-STEM) -------------------------------------------------------
#
# A pattern target is ``f(spectra, axis, **params)`` with ``spectra`` the patterns ``N x ky x kx``
# and ``axis`` the pair ``(ky values, kx values)`` in mrad, ascending; it carries
# ``f.signal_ndim = 2``. The calibration comes from the axes: the pixel size is their spacing and
# the undeflected beam is where both are 0 (:func:`calibration_from_axes`).


def calibration_from_axes(axes: tuple[np.ndarray, np.ndarray]) -> diffraction.DetectorCalibration:
    """The :class:`~aexp.diffraction.DetectorCalibration` of a detector whose rows lie at ``ky``
    and columns at ``kx`` (mrad, ascending, evenly spaced, the same spacing on both)."""
    ky, kx = (np.asarray(a, dtype=float) for a in axes)
    steps = []
    for name, a in (("ky", ky), ("kx", kx)):
        d = np.diff(a)
        if a.ndim != 1 or len(a) < 2 or not np.all(np.isfinite(a)) or not np.all(d > 0) \
                or not np.allclose(d, d[0], rtol=1e-6, atol=0.0):
            raise TargetError(f"the detector axis {name} must be at least 2 evenly spaced ascending values (mrad)")
        steps.append(float(d[0]))
    if not math.isclose(steps[0], steps[1], rel_tol=1e-6):
        raise TargetError(f"the detector pixels must be square: {steps[0]:.6g} mrad along ky, {steps[1]:.6g} along kx")
    return diffraction.DetectorCalibration(steps[1], (-ky[0] / steps[0], -kx[0] / steps[1]))


def _pattern_target(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    fn.signal_ndim = 2  # type: ignore[attr-defined]
    return fn


@_pattern_target
def com_magnitude(spectra: np.ndarray, axis: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``|<k>|`` (mrad), the magnitude of the pattern's centre of mass: the DPC field strength."""
    return np.atleast_1d(diffraction.com_magnitude(spectra, calibration_from_axes(axis)))


@_pattern_target
def com_direction(spectra: np.ndarray, axis: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``atan2(<ky>, <kx>)`` (rad) of the pattern's centre of mass: the DPC field direction."""
    return np.atleast_1d(diffraction.com_direction(spectra, calibration_from_axes(axis)))


@_pattern_target
def annular_intensity(
    spectra: np.ndarray, axis: tuple[np.ndarray, np.ndarray], inner_mrad: float, outer_mrad: float
) -> np.ndarray:
    """Counts on a virtual annular detector, ``inner_mrad <= |k| < outer_mrad`` (a virtual ADF)."""
    return np.atleast_1d(diffraction.annular_intensity(spectra, calibration_from_axes(axis), inner_mrad, outer_mrad))


@_pattern_target
def disk_spacing_strain(
    spectra: np.ndarray, axis: tuple[np.ndarray, np.ndarray], direction_rad: float, reference_mrad: float,
    window_mrad: float,
) -> np.ndarray:
    """Strain ``g0 / g - 1`` along ``direction_rad`` from the spacing of the ``+-g`` Bragg disks."""
    cal = calibration_from_axes(axis)
    return np.atleast_1d(diffraction.disk_spacing_strain(spectra, cal, direction_rad, reference_mrad, window_mrad))


@_pattern_target
def bragg_ratio(
    spectra: np.ndarray, axis: tuple[np.ndarray, np.ndarray], g1_mrad: tuple[float, float],
    g2_mrad: tuple[float, float], radius_mrad: float,
) -> np.ndarray:
    """Counts in the disk at ``beam + g1`` over those at ``beam + g2`` (``(kx, ky)`` mrad)."""
    cal = calibration_from_axes(axis)
    return np.atleast_1d(diffraction.bragg_ratio(spectra, cal, g1_mrad, g2_mrad, radius_mrad))


@dataclass(frozen=True)
class Target:
    """A named scalariser bound to its parameters.

    ``ndim`` is the number of axes of the measurement it scores: 1 for a spectrum (``spectra``
    ``n x L`` on ``axis`` ``L``), 2 for a diffraction pattern (``spectra`` ``n x ky x kx`` on
    ``axis`` = ``(ky values, kx values)``, mrad).
    """

    name: str
    params: dict[str, Any]
    fn: Callable[..., np.ndarray]

    @property
    def ndim(self) -> int:
        return int(getattr(self.fn, "signal_ndim", 1))

    def __call__(self, spectra: np.ndarray, axis: Any) -> np.ndarray | float:
        """``spectra``: ``n x L`` (or ``L``) on ``axis`` (``L``) -> ``n`` floats (or one float);
        for a pattern target ``n x ky x kx`` (or ``ky x kx``) on ``(ky, kx)``."""
        if self.ndim != 1:
            return self._patterns(spectra, axis)
        s = np.asarray(spectra, dtype=float)
        one = s.ndim == 1
        s, x = _ascending(np.atleast_2d(s), np.asarray(axis, dtype=float))
        out = self.fn(s, x, **self.params)
        return float(out[0]) if one else out

    def _patterns(self, spectra: np.ndarray, axis: Any) -> np.ndarray | float:
        p = np.asarray(spectra, dtype=float)
        one = p.ndim == self.ndim
        p = p[None] if one else p
        axes = tuple(np.asarray(a, dtype=float) for a in axis) if isinstance(axis, (tuple, list)) else ()
        if len(axes) != self.ndim or p.ndim != self.ndim + 1 or p.shape[1:] != tuple(len(a) for a in axes):
            raise TargetError(f"target {self.name!r} scores measurements of {self.ndim} axes; got values of shape "
                              f"{np.shape(spectra)} on axes of lengths {[len(a) for a in axes] or np.shape(axis)}")
        finite = np.isfinite(p).all(axis=tuple(range(1, p.ndim)))
        out = np.full(len(p), np.nan)
        if finite.any():
            try:
                out[finite] = self.fn(p[finite], axes, **self.params)
            except diffraction.DiffractionError as exc:
                raise TargetError(f"target {self.name!r}: {exc}") from None
        return float(out[0]) if one else out

    def check_axis(self, axis: SpectrumAxis | tuple[SpectrumAxis, ...]) -> None:
        """Raise :class:`TargetError` if this target cannot be computed on ``axis`` (the axes of an
        N-D measurement: a tuple)."""
        axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
        if len(axes) != self.ndim:
            kind = {1: "spectra"}.get(self.ndim, f"measurements of {self.ndim} axes")
            raise TargetError(f"target {self.name!r} scores {kind}; the instrument measures "
                              f"{' x '.join(f'{a.name} ({a.n})' for a in axes)}")
        if self.ndim == 1:
            self(np.zeros((1, axes[0].n)), axes[0].values())
        else:
            self(np.ones((1, *(a.n for a in axes))), tuple(a.values() for a in axes))


TARGETS: dict[str, Callable[..., np.ndarray]] = {
    "band_intensity": band_intensity,
    "peak_position": peak_position,
    "peak_ratio": peak_ratio,
    "edge_onset": edge_onset,
    "edge_intensity": edge_intensity,
    "loop_area": loop_area,
    "coercive_bias": coercive_bias,
    "imprint": imprint,
    "nucleation_bias": nucleation_bias,
    "com_magnitude": com_magnitude,
    "com_direction": com_direction,
    "annular_intensity": annular_intensity,
    "disk_spacing_strain": disk_spacing_strain,
    "bragg_ratio": bragg_ratio,
}


#: Targets of other packages: an entry point ``name = "package.module:function"`` in this group names a
#: function ``f(spectra, axis, **params) -> values`` (``spectra``: ``N x L`` or ``L``; ``axis``: ``L``
#: ascending; ``values``: ``N`` or a float; NaN marks a measurement the target cannot score). A
#: function with the attribute ``signal_ndim = 2`` scores diffraction patterns instead: ``spectra``
#: ``N x ky x kx``, ``axis`` the pair ``(ky, kx)`` in mrad (:func:`calibration_from_axes`). A name
#: of the built-in :data:`TARGETS` cannot be taken.
ENTRY_POINT_GROUP = "aexp.targets"


def _plugins() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in TARGETS}


def target_names() -> list[str]:
    """Every target a config may name: the built-in ones and those of installed plugins."""
    return sorted({*TARGETS, *_plugins()})


def target_function(name: str) -> Callable[..., np.ndarray]:
    """The function of the target called ``name`` (:class:`TargetError` if there is none)."""
    if name in TARGETS:
        return TARGETS[name]
    plugin = _plugins().get(name)
    if plugin is None:
        raise TargetError(f"unknown target {name!r}; known: {', '.join(target_names())}")
    fn = plugin.load()
    if not callable(fn):
        raise TargetError(f"target plugin {name!r} ({plugin.value}) is not a function")
    return fn


def make_target(name: str, **params: Any) -> Target:
    """Bind the target called ``name`` (built in, or a plugin's: :data:`ENTRY_POINT_GROUP`) to ``params``
    (windows are ``(lo, hi)`` in axis units)."""
    fn = target_function(name)
    clean: dict[str, Any] = {}
    for k, v in params.items():
        if isinstance(v, (list, tuple)) and getattr(fn, "signal_ndim", 1) != 1:
            if len(v) != 2 or not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in v):
                raise TargetError(f"target {name!r}: {k} must be two numbers (kx, ky) in mrad, got {v}")
            v = (float(v[0]), float(v[1]))
        elif isinstance(v, (list, tuple)):
            if len(v) != 2 or not v[0] < v[1]:
                raise TargetError(f"target {name!r}: {k} must be [low, high] with low < high, got {v}")
            v = (float(v[0]), float(v[1]))
        clean[k] = v
    return Target(name=name, params=clean, fn=fn)
