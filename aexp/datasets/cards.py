"""The cards data set: the four suit glyphs under known rotation, shear, scale and shift.

Each glyph is an analytic shape (unions of discs, triangles and a rhombus) evaluated at
transformed pixel coordinates, 2 x 2 supersampled for smooth edges; nothing is downloaded or
interpolated. The coordinates follow :func:`aexp.models.decoders.coordinate_grid`: ``x`` runs down
the rows from -1 to 1 and ``y`` across the columns from 1 to -1. Image ``i`` is

    image_i(p) = glyph_{label_i}( R(angle_i) Sh(shear_i) p / scale_i + shift_i )

with ``R(a) = [[cos a, -sin a], [sin a, cos a]]`` and ``Sh(g) = [[1, tan g], [0, 1]]``: the same
transform, in the same order, as the decoders of the invariant VAEs apply to their grid, so their
geometric latents are directly comparable with the true values. ``scale > 1`` enlarges the glyph.

Ranges are symmetric: ``rotation_deg=120`` draws angles uniformly from [-120, 120] degrees.

Example:
    >>> cards = make_cards(10, rotation_deg=120, shear_deg=1)
    >>> cards.images.shape, cards.label[:5]
    ((40, 48, 48), array([0, 0, 0, 0, 0]))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np

__all__ = ["SUITS", "SUIT_SYMMETRY", "REGIMES", "Cards", "SemiSupervisedSplit", "make_cards", "cards_regime", "semi_supervised_split"]

SUITS = ("clubs", "spades", "diamonds", "hearts")
"""Suit names, in the order of the labels 0..3."""

SUIT_SYMMETRY = (1, 1, 2, 1)
"""Rotational symmetry order of each suit's glyph: the rhombus (diamonds) looks the same after a
half turn, so its angle is only defined modulo pi; the other glyphs have no rotational symmetry."""

REGIMES = {
    (12, 1): "low rotation, low shear",
    (12, 20): "low rotation, high shear",
    (120, 1): "high rotation, low shear",
    (120, 20): "high rotation, high shear",
}
"""The seed's four regimes: (rotation_deg, shear_deg) -> description."""

_SUPERSAMPLE = 2


@dataclass(frozen=True)
class Cards:
    """Card glyph images and the true factors that made each one.

    Attributes:
        images: ``n x size x size`` float32 in [0, 1] (1 inside the glyph).
        label: ``n`` int64, index into :data:`SUITS`.
        angle: ``n`` rotation in radians (counter-clockwise as displayed).
        shear: ``n`` shear angle in radians (``Sh = [[1, tan(shear)], [0, 1]]``).
        scale: ``n`` magnification of the glyph.
        shift: ``n x 2`` shift of the sampling grid in units of the patch half-width
            (rows, columns), i.e. fractions of the patch size times 2.
    """

    images: np.ndarray
    label: np.ndarray
    angle: np.ndarray
    shear: np.ndarray
    scale: np.ndarray
    shift: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: Any) -> Cards:
        """The cards at ``index`` (an index array, boolean mask or slice)."""
        return Cards(
            self.images[index], self.label[index], self.angle[index], self.shear[index],
            self.scale[index], self.shift[index],
        )


# ----------------------------------------------------------------------------- glyphs
# Shapes in display coordinates: u to the right, v up, the glyph inside radius ~0.6.


def _disc(u: np.ndarray, v: np.ndarray, cu: float, cv: float, r: float) -> np.ndarray:
    return (u - cu) ** 2 + (v - cv) ** 2 <= r**2


def _wedge(u: np.ndarray, v: np.ndarray, base_v: float, apex_v: float, half_width: float) -> np.ndarray:
    """Isosceles triangle with a horizontal base at ``base_v`` and its apex on the axis."""
    t = (v - apex_v) / (base_v - apex_v)  # 0 at the apex, 1 at the base
    return (t >= 0) & (t <= 1) & (np.abs(u) <= half_width * t)


def _stem(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _wedge(u, v, base_v=-0.58, apex_v=-0.05, half_width=0.2)


def _clubs(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    leaves = _disc(u, v, 0.0, 0.3, 0.21) | _disc(u, v, -0.23, -0.06, 0.21) | _disc(u, v, 0.23, -0.06, 0.21)
    return leaves | _disc(u, v, 0.0, 0.06, 0.12) | _stem(u, v)


def _spades(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    lobes = _disc(u, v, -0.2, -0.08, 0.21) | _disc(u, v, 0.2, -0.08, 0.21)
    return lobes | _wedge(u, v, base_v=-0.05, apex_v=0.58, half_width=0.4) | _stem(u, v)


def _diamonds(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.abs(u) / 0.4 + np.abs(v) / 0.6 <= 1.0


def _hearts(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    lobes = _disc(u, v, -0.2, 0.22, 0.22) | _disc(u, v, 0.2, 0.22, 0.22)
    return lobes | _wedge(u, v, base_v=0.2, apex_v=-0.55, half_width=0.41)


_GLYPHS: tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], ...] = (_clubs, _spades, _diamonds, _hearts)


def _sample_points(size: int) -> np.ndarray:
    """Supersampled pixel coordinates ``(size*size) x S x 2`` in the (x down, y left) frame."""
    step = 2.0 / (size - 1)
    offsets = (np.arange(_SUPERSAMPLE) + 0.5) / _SUPERSAMPLE - 0.5
    centres = np.linspace(-1.0, 1.0, size)
    x = (centres[:, None] + step * offsets[None, :]).reshape(-1)  # rows, supersampled
    y = (-centres[:, None] - step * offsets[None, :]).reshape(-1)  # columns run from +1 to -1
    gx, gy = np.meshgrid(x, y, indexing="ij")  # (size*S) x (size*S)
    s = _SUPERSAMPLE
    pts = np.stack([gx, gy], axis=-1).reshape(size, s, size, s, 2).transpose(0, 2, 1, 3, 4)
    return pts.reshape(size * size, s * s, 2)


def render(label: int, angle: float, shear: float, scale: float, shift: tuple[float, float], size: int) -> np.ndarray:
    """One card ``size x size`` float32; see the module docstring for the transform."""
    p = _sample_points(size).reshape(-1, 2)
    c, s = math.cos(angle), math.sin(angle)
    matrix = np.array([[c, -s], [s, c]]) @ np.array([[1.0, math.tan(shear)], [0.0, 1.0]]) / scale
    q = p @ matrix.T + np.asarray(shift)
    inside = _GLYPHS[label](-q[:, 1], -q[:, 0])  # display frame: u = -y, v = -x
    return inside.reshape(size * size, -1).mean(axis=1).reshape(size, size).astype(np.float32)


# ----------------------------------------------------------------------------- data sets


def _check_range(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not (low <= float(value) <= high):
        raise ValueError(f"{name} must be a number in [{low}, {high}]; got {value!r}")
    return float(value)


def make_cards(
    n_per_suit: int,
    rotation_deg: float,
    shear_deg: float,
    scale: tuple[float, float] = (1.0, 1.0),
    shift: float = 0.0,
    size: int = 48,
    seed: int = 0,
) -> Cards:
    """``4 * n_per_suit`` cards, suit by suit, with factors drawn uniformly and independently.

    Args:
        n_per_suit: images of each suit.
        rotation_deg: angles are drawn from ``[-rotation_deg, rotation_deg]`` degrees.
        shear_deg: shear angles are drawn from ``[-shear_deg, shear_deg]`` degrees (< 60).
        scale: ``(low, high)`` range of the glyph's magnification.
        shift: each of the two shift components is drawn from ``[-shift, shift]`` times the patch
            size (0.1 moves the glyph up to 10 % of the patch in each direction).
        size: side of the square images in pixels.
        seed: seed of the random factors; the same arguments give the same cards.

    Returns:
        :class:`Cards` with ``images`` ``(4 n_per_suit) x size x size``.
    """
    if isinstance(n_per_suit, bool) or not isinstance(n_per_suit, Integral) or n_per_suit < 1:
        raise ValueError(f"n_per_suit must be an integer >= 1; got {n_per_suit!r}")
    if isinstance(size, bool) or not isinstance(size, Integral) or size < 8:
        raise ValueError(f"size must be an integer >= 8; got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0; got {seed!r}")
    rotation = math.radians(_check_range("rotation_deg", rotation_deg, 0.0, 180.0))
    max_shear = math.radians(_check_range("shear_deg", shear_deg, 0.0, 59.0))
    shift_max = _check_range("shift", shift, 0.0, 0.25)
    try:
        low, high = (float(s) for s in scale)
    except (TypeError, ValueError):
        raise ValueError(f"scale must be a pair (low, high); got {scale!r}") from None
    if not (0.2 <= low <= high <= 5.0):
        raise ValueError(f"scale must be (low, high) with 0.2 <= low <= high <= 5; got {scale!r}")

    n = 4 * int(n_per_suit)
    rng = np.random.default_rng(seed)
    label = np.repeat(np.arange(4), n_per_suit)
    angle = rng.uniform(-rotation, rotation, n)
    shear = rng.uniform(-max_shear, max_shear, n)
    magnification = rng.uniform(low, high, n)
    shifts = rng.uniform(-shift_max, shift_max, (n, 2)) * 2.0  # grid units: the patch spans 2
    images = np.stack(
        [render(label[i], angle[i], shear[i], magnification[i], shifts[i], int(size)) for i in range(n)]
    )
    return Cards(images, label.astype(np.int64), angle, shear, magnification, shifts)


def cards_regime(rotation: str, shear: str, n_per_suit: int = 1000, size: int = 48, seed: int = 0) -> Cards:
    """One of the seed's four regimes: ``rotation`` and ``shear`` each ``"low"`` or ``"high"``.

    Rotation: low 12 deg, high 120 deg; shear: low 1 deg, high 20 deg (ranges +-value).
    """
    rotations, shears = {"low": 12.0, "high": 120.0}, {"low": 1.0, "high": 20.0}
    if rotation not in rotations:
        raise ValueError(f"rotation must be 'low' or 'high'; got {rotation!r}")
    if shear not in shears:
        raise ValueError(f"shear must be 'low' or 'high'; got {shear!r}")
    return make_cards(n_per_suit, rotations[rotation], shears[shear], size=size, seed=seed)


@dataclass(frozen=True)
class SemiSupervisedSplit:
    """The public semi-supervised cards recipe: few labelled, many unlabelled, a validation set."""

    labelled: Cards
    unlabelled: Cards
    validation: Cards


def semi_supervised_split(
    n_labelled: int = 200, n_unlabelled: int = 3000, n_validation: int = 1000, size: int = 48, seed: int = 0
) -> SemiSupervisedSplit:
    """Labelled: +-4 deg, shear +-15 deg, scale 1-1.3 (``n_labelled`` per suit); unlabelled and
    validation: +-60 deg, shift 0.1 (``n_unlabelled`` and ``n_validation`` per suit).

    The three sets use different seeds (``seed``, ``seed + 1``, ``seed + 2``), so no validation
    card is a copy of a training card. Labels of the unlabelled set are kept for scoring only.
    """
    return SemiSupervisedSplit(
        labelled=make_cards(n_labelled, 4.0, 15.0, scale=(1.0, 1.3), size=size, seed=seed),
        unlabelled=make_cards(n_unlabelled, 60.0, 0.0, shift=0.1, size=size, seed=seed + 1),
        validation=make_cards(n_validation, 60.0, 0.0, shift=0.1, size=size, seed=seed + 2),
    )
