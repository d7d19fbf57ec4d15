"""Hysteresis-loop maps (BEPS, switching-spectroscopy PFM) onto the unfolded bias axis.

A loop map records, at every grid point, the response at each step of a bias waveform: one or more
up-and-down cycles with any number of points (even or odd), any starting phase (0 V going up,
``+V_max`` going down, ...) and sometimes repeated points where the sweep turns. The loop targets
(:mod:`aexp.targets`) read a loop on one axis, the *unfolded bias* of ``docs/grid-dataset.md``:
``2 p + 1`` evenly spaced values ``u`` from ``V_min`` to ``2 V_max - V_min``, the applied bias being
``u`` on the way up (the first ``p + 1`` points) and ``2 V_max - u`` on the way back down.

:func:`unfold_loops` makes that axis from the applied waveform: cut the waveform into its cycles at
the turning points, start each cycle at ``V_min``, split it into the up and the down branch, and
resample both branches onto ``p + 1`` evenly spaced biases by linear interpolation along the
applied bias, ``R(V) = R_i + (V - V_i) (R_{i+1} - R_i) / (V_{i+1} - V_i)``. Several cycles are
averaged unless one is chosen.

Example:
    >>> bias = 5 * np.sin(2 * np.pi * np.arange(64) / 64)      # 0 V going up, 64 points, one cycle
    >>> loops = unfold_loops(np.zeros((2, 3, 64)), bias)        # responses: rows x cols x 64
    >>> loops.loops.shape, loops.axis.start, loops.axis.stop
    ((2, 3, 65), -5.0, 15.0)
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..types import SpectrumAxis
from .recordings import Axis, RecordingError, Signal, _axis_from_values

__all__ = ["LoopMap", "Waveform", "as_loop_map", "is_bias_waveform", "parse_waveform", "restore_usid_axes",
           "unfold_loops"]

MIN_BRANCH_BIASES = 3
"""Distinct biases a branch needs at least (fewer is not a sweep)."""

_EQUAL_RTOL = 1e-6  # steps below this fraction of the range are repeats of the same bias (float32 files)
_TURN_RTOL = 1e-3  # every cycle must turn within this fraction of the range of V_min and V_max
_VOLTS = {"v": 1.0, "volt": 1.0, "volts": 1.0, "mv": 1e-3}
_BIAS_NAME = re.compile(r"bias|dc|offset|volt", re.IGNORECASE)


@dataclass(frozen=True)
class Waveform:
    """A bias waveform cut into whole cycles.

    Attributes:
        bias: the applied bias in V, ``L``, in the order measured.
        v_min, v_max: where every cycle turns.
        up, down: per cycle, the indices into ``bias`` of its up branch (ascending bias) and its down
            branch (descending bias); a single point where the sweep turns belongs to both branches,
            a repeated one is shared out (the first half to the branch that ends there).
        minima, maxima: index of the first point of each turning run at ``V_min`` / ``V_max``.
    """

    bias: np.ndarray
    v_min: float
    v_max: float
    up: tuple[np.ndarray, ...]
    down: tuple[np.ndarray, ...]
    minima: tuple[int, ...]
    maxima: tuple[int, ...]

    @property
    def cycles(self) -> int:
        return len(self.up)

    @property
    def start(self) -> str:
        """The starting phase in words, e.g. ``0 V going up``."""
        b = self.bias
        tol = _EQUAL_RTOL * (self.v_max - self.v_min)
        step = next((float(s) for s in np.diff(b) if abs(s) > tol), 0.0)
        first = 0.0 if abs(b[0]) <= tol else float(b[0])
        return f"{first:.6g} V going {'up' if step > 0 else 'down'}"


@dataclass(frozen=True)
class LoopMap:
    """Loops on the unfolded bias axis.

    Attributes:
        loops: ``rows x cols x (2 p + 1)`` responses (float64; NaN where the recording had none).
        axis: the unfolded bias axis (``unfolded_bias``, V, ``V_min`` .. ``2 V_max - V_min``).
        metadata: JSON-ready account of the waveform and of what was resampled.
    """

    loops: np.ndarray
    axis: SpectrumAxis
    metadata: dict[str, Any]


def parse_waveform(bias: np.ndarray, where: str = "bias waveform") -> Waveform:
    """Cut a bias waveform into whole up-and-down cycles, or say why it is not one.

    The waveform is read as periodic (its last point is followed by its first), so a cycle that
    starts at 0 V is completed by the points before the first ``V_min``. ``bias``: ``L`` volts.

    Raises:
        RecordingError: not 1-D or not finite, constant, only rising or only falling, not whole
            cycles (a jump between its end and its start), cycles turning at different biases, or
            a branch with fewer than :data:`MIN_BRANCH_BIASES` biases.
    """
    b = np.asarray(bias, dtype=float)
    if b.ndim != 1 or len(b) < 2 * MIN_BRANCH_BIASES - 2:
        raise RecordingError(f"{where}: a bias waveform is a vector of at least {2 * MIN_BRANCH_BIASES - 2} "
                             f"values, got shape {b.shape}")
    if not np.isfinite(b).all():
        raise RecordingError(f"{where}: the bias waveform holds NaN or inf (at index "
                             f"{int(np.flatnonzero(~np.isfinite(b))[0])})")
    lo, hi = float(b.min()), float(b.max())
    span = hi - lo
    if not span > 0:
        raise RecordingError(f"{where}: the bias waveform is constant ({lo:g} V); a loop needs a sweep up and down")
    tol = _EQUAL_RTOL * span
    step = np.diff(b, append=b[0])  # cyclic: step[-1] goes from the last point back to the first
    direction = np.where(step > tol, 1, np.where(step < -tol, -1, 0))
    if (direction[:-1] >= 0).all() or (direction[:-1] <= 0).all():
        way = "rises" if (direction[:-1] >= 0).all() else "falls"
        raise RecordingError(f"{where}: the bias waveform only {way} ({b[0]:g} .. {b[-1]:g} V over {len(b)} "
                             f"points); a hysteresis loop needs a sweep up and back down")
    largest = float(np.abs(step[:-1]).max())
    if abs(step[-1]) > 1.5 * largest + tol:
        raise RecordingError(f"{where}: the bias waveform is not whole cycles: it ends at {b[-1]:g} V and starts "
                             f"at {b[0]:g} V, a jump of {abs(step[-1]):g} V where its steps are at most "
                             f"{largest:g} V; keep whole cycles of the recording")
    return _cycles(b, direction, lo, hi, where)


def _cycles(b: np.ndarray, direction: np.ndarray, lo: float, hi: float, where: str) -> Waveform:
    """The cycles of a waveform whose cyclic step directions (+1, -1, 0 for a repeat) are known."""
    n = len(b)
    # start at the first point of a run at the minimum (the step into it is a real step down)
    first = next(i for i in range(n) if b[i] - lo <= _EQUAL_RTOL * (hi - lo) and direction[i - 1] != 0)
    order = (np.arange(n) + first) % n
    d = direction[order]
    runs: list[tuple[int, int]] = []  # maximal runs of repeats, in rotated positions
    start = 0
    for j in range(n):
        if d[j] != 0 or j == n - 1:
            runs.append((start, j))
            start = j + 1
    turns = [(s, e) for s, e in runs if d[s - 1] != d[e]]  # entering and leaving directions differ
    lows, highs = turns[0::2], turns[1::2]
    at = [b[order[s]] for s, _ in turns]
    bad = [v for k, v in enumerate(at) if abs(v - (lo if k % 2 == 0 else hi)) > _TURN_RTOL * (hi - lo)]
    if bad or len(lows) != len(highs):
        listed = ", ".join(f"{v:g}" for v in at[:12]) + (f", ... ({len(at)} turns)" if len(at) > 12 else "")
        raise RecordingError(
            f"{where}: the bias waveform turns at {listed} V; every cycle must sweep the same range "
            f"{lo:g} .. {hi:g} V. Not supported: a waveform of growing amplitude, a noisy read-back of the "
            f"bias, a write/read (in-field/out-of-field) waveform that returns to 0 V between steps: give the "
            f"write bias of each step with --bias, one value per loop point")
    up, down = [], []
    for c, ((ls, le), (hs, he)) in enumerate(zip(lows, highs)):
        ns, ne = lows[(c + 1) % len(lows)]
        if c + 1 == len(lows):
            ns, ne = ns + n, ne + n  # the last cycle ends at the first minimum, one period on
        up_pos = np.arange(ls + (le - ls + 1) // 2, hs + (he - hs + 2) // 2)
        down_pos = np.arange(hs + (he - hs + 1) // 2, ns + (ne - ns + 2) // 2)
        up.append(order[up_pos % n])
        down.append(order[down_pos % n])
    for c, (u, dn) in enumerate(zip(up, down)):
        for name, idx in (("up", u), ("down", dn)):
            distinct = len(_groups(np.sort(b[idx]), _EQUAL_RTOL * (hi - lo)))
            if distinct < MIN_BRANCH_BIASES:
                raise RecordingError(f"{where}: cycle {c} of the bias waveform has {distinct} distinct biases on "
                                     f"the way {name}; a branch needs at least {MIN_BRANCH_BIASES}")
    return Waveform(b, lo, hi, tuple(up), tuple(down), tuple(int(order[s]) for s, _ in lows),
                    tuple(int(order[s]) for s, _ in highs))


def _groups(x: np.ndarray, tol: float) -> np.ndarray:
    """Start index of each run of equal values (within ``tol``) in ascending ``x``."""
    return np.flatnonzero(np.diff(x, prepend=x[0] - 2 * tol - 1) > tol)


def _resample_branch(responses: np.ndarray, bias: np.ndarray, grid: np.ndarray, tol: float) -> np.ndarray:
    """One branch onto ``grid`` (``K`` ascending V): ``R x Q x n`` responses at ``n`` biases -> ``R x Q x K``.

    Repeats of one bias are averaged first; a grid bias that falls on a recorded bias takes its
    value exactly, so a NaN point spoils only the grid biases next to it.
    """
    order = np.argsort(bias, kind="stable")
    x, y = bias[order], responses[..., order]
    starts = _groups(x, tol)
    counts = np.diff(np.append(starts, len(x)))
    xs = x[starts]
    ys = np.add.reduceat(y, starts, axis=-1) / counts
    j = np.clip(np.searchsorted(xs, grid, side="right") - 1, 0, len(xs) - 2)
    w = np.clip((grid - xs[j]) / (xs[j + 1] - xs[j]), 0.0, 1.0)
    w[np.abs(grid - xs[j]) <= tol] = 0.0
    w[np.abs(grid - xs[j + 1]) <= tol] = 1.0
    left, right = ys[..., j], ys[..., j + 1]
    mixed = left * (1 - w) + right * w
    return np.where(w == 0.0, left, np.where(w == 1.0, right, mixed))


def unfold_loops(responses: np.ndarray, bias: np.ndarray, *, cycle: int | None = None, points: int | None = None,
                 where: str = "loop map") -> LoopMap:
    """Loops recorded along a bias waveform, on the unfolded bias axis of ``docs/grid-dataset.md``.

    ``loop[k] = R_up(V_k)`` for ``k <= p`` and ``loop[k] = R_down(V_{2p-k})`` after, with
    ``V_k = V_min + k (V_max - V_min) / p``; each branch is linearly interpolated along the applied
    bias (repeats of one bias averaged), and the turning point ``k = p`` is the mean of both branches
    at ``V_max``.

    Args:
        responses: ``rows x cols x L``, the response at each step of the waveform.
        bias: ``L`` volts, the applied bias in the order measured.
        cycle: keep this cycle (0 = the first to start at ``V_min``); ``None`` averages all cycles
            (point by point, ignoring NaN; a point is NaN only where every cycle is), which lowers the
            noise by ``sqrt(cycles)`` and gives the loop targets one loop per grid point.
        points: ``p``, the unfolded axis then has ``2 p + 1`` values; default: the most distinct
            biases of any branch less one (the recording's own resolution), at least 4.

    Returns:
        The loops (``rows x cols x (2 p + 1)``), their axis and what was done.

    Raises:
        RecordingError: a waveform that is not whole up-and-down cycles (:func:`parse_waveform`),
            one whose length differs from the responses', an unknown cycle, ``points < 4``.
    """
    responses = np.asarray(responses, dtype=float)
    bias = np.asarray(bias, dtype=float)
    if responses.ndim != 3 or bias.ndim != 1 or responses.shape[-1] != bias.shape[0]:
        raise RecordingError(f"{where}: the bias waveform has shape {bias.shape} but each loop has "
                             f"{responses.shape[-1] if responses.ndim else 0} points (responses {responses.shape}); "
                             f"they must be the same length")
    wave = parse_waveform(bias, where)
    if cycle is not None and not 0 <= cycle < wave.cycles:
        raise RecordingError(f"{where}: cycle {cycle} asked for; the bias waveform holds {wave.cycles} cycle(s), "
                             f"0 .. {wave.cycles - 1}")
    tol = _EQUAL_RTOL * (wave.v_max - wave.v_min)
    branch_biases = [len(_groups(np.sort(bias[i]), tol)) for i in wave.up + wave.down]
    p = max(branch_biases) - 1 if points is None else int(points)
    if p < 4:
        raise RecordingError(f"{where}: points must be >= 4 (an unfolded axis of 9 or more values), got {p}")
    grid = np.linspace(wave.v_min, wave.v_max, p + 1)
    chosen = range(wave.cycles) if cycle is None else [cycle]
    unfolded = []
    for c in chosen:
        up = _resample_branch(responses[..., wave.up[c]], bias[wave.up[c]], grid, tol)
        down = _resample_branch(responses[..., wave.down[c]], bias[wave.down[c]], grid, tol)
        top = np.stack([up[..., -1], down[..., -1]])
        up[..., -1] = _nanmean(top)
        unfolded.append(np.concatenate([up, down[..., -2::-1]], axis=-1))
    loops = unfolded[0] if len(unfolded) == 1 else _nanmean(np.stack(unfolded))
    axis = SpectrumAxis("unfolded_bias", "V", wave.v_min, 2 * wave.v_max - wave.v_min, 2 * p + 1)
    meta = {
        "waveform": [round(float(v), 9) for v in bias],
        "waveform_points": len(bias),
        "v_min": wave.v_min,
        "v_max": wave.v_max,
        "start": wave.start,
        "cycles": wave.cycles,
        "cycle": "average" if cycle is None else cycle,
        "turning_points": {"v_min": list(wave.minima), "v_max": list(wave.maxima)},
        "branch_points": [[len(u), len(d)] for u, d in zip(wave.up, wave.down)],
        "unfolded_points": 2 * p + 1,
        "resampled": (f"each branch linearly interpolated along the applied bias from its "
                      f"{_span(branch_biases)} distinct biases onto {p + 1} evenly spaced "
                      f"biases {wave.v_min:g} .. {wave.v_max:g} V"
                      + ("" if cycle is not None or wave.cycles == 1 else f"; the {wave.cycles} cycles averaged")
                      + ("" if cycle is None else f"; cycle {cycle} of {wave.cycles} kept")),
    }
    return LoopMap(loops, axis, meta)


def _span(counts: list[int]) -> str:
    return str(counts[0]) if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"


def _nanmean(stack: np.ndarray) -> np.ndarray:
    """Mean over the first axis ignoring NaN; NaN (without a warning) where all are NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(stack, axis=0)


def _volts(axis: Axis) -> float | None:
    """Volts per unit of the axis, or ``None`` when its units are not a voltage."""
    units = axis.units.strip().lower()
    if units in _VOLTS:
        return _VOLTS[units]
    if not units and _BIAS_NAME.search(axis.name):
        return 1.0  # a bias axis written without units: readers of SPM files often drop them
    return None


def is_bias_waveform(axis: Axis) -> bool:
    """Whether a signal axis is a bias waveform: recorded values that go up and down, in volts."""
    if axis.values is None or _volts(axis) is None:
        return False
    steps = np.diff(np.asarray(axis.values, dtype=float))
    return bool((steps > 0).any() and (steps < 0).any())


def as_loop_map(sig: Signal, bias_file: str | Path | None, cycle: int | None, where: str) -> tuple[Signal, dict] | None:
    """A spectrum image whose signal axis is a bias waveform, on the unfolded bias axis.

    The waveform is ``bias_file`` (a ``.npy`` vector of volts) when given, else the signal axis's
    own values when :func:`is_bias_waveform` recognises them; ``None`` when neither (not a loop map).
    Returns the signal with ``rows x cols x (2 p + 1)`` data and the ``unfolded_bias`` axis, and the
    metadata of :func:`unfold_loops` with where the waveform came from.
    """
    rows, cols = sig.spatial
    (k,) = [i for i in range(3) if i not in (rows, cols)]
    ax = sig.axes[k]
    if bias_file is not None:
        bias = _load_bias(Path(bias_file))
        source = f"{Path(bias_file).name}, given with --bias / options.bias"
    elif is_bias_waveform(ax):
        assert ax.values is not None
        bias = np.asarray(ax.values, dtype=float) * (_volts(ax) or 1.0)
        source = f"the recording's {ax.name!r} axis in {ax.units or 'V (no units given)'}"
    elif cycle is not None:
        raise RecordingError(f"{where}: cycle {cycle} asked for, but the signal axis {ax.describe()} is not a bias "
                             f"waveform (give it with --bias FILE.npy / options.bias)")
    else:
        return None
    if len(bias) != ax.size:
        raise RecordingError(f"{where}: the bias waveform ({source}) has {len(bias)} values but the signal axis "
                             f"{ax.name!r} has {ax.size}; they must be the same length")
    if np.iscomplexobj(sig.data):
        raise RecordingError(f"{where}: the loops are complex numbers; import a real response (amplitude, "
                             f"phase or their mixed piezoresponse, e.g. a signal of the SHO fit) with --signal")
    cube = np.asarray(sig.data, dtype=float).transpose(rows, cols, k)
    loop = unfold_loops(cube, bias, cycle=cycle, where=where)
    a = loop.axis
    unfolded = Axis(a.name, a.n, a.start, (a.stop - a.start) / (a.n - 1), a.units, False)
    meta = {"waveform_source": source, "signal_axis": ax.name, **loop.metadata}
    return replace(sig, data=loop.loops, axes=(sig.axes[rows], sig.axes[cols], unfolded)), meta


def _load_bias(path: Path) -> np.ndarray:
    if not path.is_file():
        raise RecordingError(f"{path}: no such file (the bias waveform, --bias / options.bias)")
    try:
        bias = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise RecordingError(f"{path}: not a readable .npy array of biases ({exc})") from None
    if bias.ndim != 1 or not np.issubdtype(bias.dtype, np.number):
        raise RecordingError(f"{path}: the bias waveform must be a vector of volts, got shape {bias.shape} "
                             f"({bias.dtype})")
    return bias.astype(float)


def restore_usid_axes(path: Path, dataset_path: str, axes: tuple[Axis, ...]) -> tuple[Axis, ...]:
    """The USID spectroscopic axes with their recorded values.

    rosettasciio's USID reader replaces a non-uniform spectroscopic dimension (the DC offset of a
    BEPS waveform) by ``0, 1, 2, ...`` with a warning; the values are in the file's
    ``Spectroscopic_Values``, read here with pyUSID.
    """
    import h5py

    try:
        import pyUSID
    except ImportError as exc:  # rosettasciio's USID reader needs it too: not reached in practice
        raise RecordingError(f"{path}: reading USID spectroscopic values needs pyUSID ({exc}); install it with "
                             f"pip install 'aexp[io]'") from None
    try:
        with h5py.File(path, "r") as f:
            main = pyUSID.USIDataset(f[dataset_path])
            values = {str(name): np.asarray(main.get_spec_values(name), dtype=float).copy()
                      for name in main.spec_dim_labels}
    except Exception as exc:  # a reader's failure on a file rosettasciio did read: name it, never guess
        raise RecordingError(f"{path}: could not read the spectroscopic values of {dataset_path} "
                             f"({type(exc).__name__}: {exc})") from None
    out = []
    for ax in axes:
        vals = values.get(ax.name)
        if vals is not None and len(vals) == ax.size and not ax.spatial:
            ax = _axis_from_values(ax.name, ax.units, vals, False)
        out.append(ax)
    return tuple(out)
