"""Scalarisers: the named functions that turn a spectrum into the scalar the experiment optimises.

Every target works on a batch: ``spectra`` is ``n x L`` on the axis values ``L`` and the result is
``n`` floats, so the same code scores one measurement in the loop and a whole noiseless map for the
benchmark. Targets are chosen by name in the config (``target: {name: band_intensity, ...}``).

Example:
    >>> t = make_target("band_intensity", window=(2.0, 2.6))
    >>> t.check_axis(axis)            # raises TargetError if the window misses the axis
    >>> t(spectra, axis.values())     # -> n floats
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import AexpError
from .types import SpectrumAxis

__all__ = ["Target", "TargetError", "make_target", "TARGETS"]


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


def _saturation(up: np.ndarray, down: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Low and high saturation of a loop: mean of both branches over the ``k`` extreme biases."""
    low = np.concatenate([up[:, :k], down[:, :k]], axis=1).mean(axis=1)
    high = np.concatenate([up[:, -k:], down[:, -k:]], axis=1).mean(axis=1)
    return low, high


def _switching_biases(spectra: np.ndarray, axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bias where each branch crosses the loop's midline: ``(V_up, V_down)``, each ``n``."""
    bias, up, down = _fold_loop(spectra, axis)
    low, high = _saturation(up, down)
    mid = (low + high) / 2
    return _first_rise(bias, up, mid), _first_rise(bias, down, mid)


def loop_area(spectra: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Area enclosed by a hysteresis loop, ``int (R_down - R_up) dV`` (response x V)."""
    bias, up, down = _fold_loop(spectra, axis)
    return np.trapezoid(down - up, bias, axis=1)


def coercive_bias(spectra: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Half the loop's opening, ``(V_up - V_down) / 2``, at the midline crossings of the branches."""
    v_up, v_down = _switching_biases(spectra, axis)
    return (v_up - v_down) / 2


def imprint(spectra: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Horizontal offset of the loop, ``(V_up + V_down) / 2``."""
    v_up, v_down = _switching_biases(spectra, axis)
    return (v_up + v_down) / 2


def nucleation_bias(spectra: np.ndarray, axis: np.ndarray, level: float = 0.1) -> np.ndarray:
    """Bias at which the up branch has switched ``level`` of the way from low to high saturation."""
    if not 0 < level < 1:
        raise TargetError(f"nucleation_bias: level must lie in (0, 1), got {level}")
    bias, up, down = _fold_loop(spectra, axis)
    low, high = _saturation(up, down)
    return _first_rise(bias, up, low + level * (high - low))


@dataclass(frozen=True)
class Target:
    """A named scalariser bound to its parameters."""

    name: str
    params: dict[str, Any]
    fn: Callable[..., np.ndarray]

    def __call__(self, spectra: np.ndarray, axis: np.ndarray) -> np.ndarray:
        """``spectra``: ``n x L`` (or ``L``) on ``axis`` (``L``) -> ``n`` floats (or one float)."""
        s = np.asarray(spectra, dtype=float)
        one = s.ndim == 1
        out = self.fn(np.atleast_2d(s), np.asarray(axis, dtype=float), **self.params)
        return float(out[0]) if one else out

    def check_axis(self, axis: SpectrumAxis) -> None:
        """Raise :class:`TargetError` if this target cannot be computed on ``axis``."""
        probe = np.zeros((1, axis.n))
        self.fn(probe, axis.values(), **self.params)


TARGETS: dict[str, Callable[..., np.ndarray]] = {
    "band_intensity": band_intensity,
    "peak_position": peak_position,
    "peak_ratio": peak_ratio,
    "edge_onset": edge_onset,
    "loop_area": loop_area,
    "coercive_bias": coercive_bias,
    "imprint": imprint,
    "nucleation_bias": nucleation_bias,
}


def make_target(name: str, **params: Any) -> Target:
    """Bind the target called ``name`` to ``params`` (windows are ``(lo, hi)`` in axis units)."""
    if name not in TARGETS:
        raise TargetError(f"unknown target {name!r}; known: {', '.join(sorted(TARGETS))}")
    clean: dict[str, Any] = {}
    for k, v in params.items():
        if isinstance(v, (list, tuple)):
            if len(v) != 2 or not v[0] < v[1]:
                raise TargetError(f"target {name!r}: {k} must be [low, high] with low < high, got {v}")
            v = (float(v[0]), float(v[1]))
        clean[k] = v
    return Target(name=name, params=clean, fn=TARGETS[name])
