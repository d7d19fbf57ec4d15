"""Figures of a fitted embedder: what its content latents draw, and where patches land in them.

* :func:`latent_traversal` decodes a grid of content-latent values with every geometric latent at
  its neutral value (no rotation, shift, shear; scale 1), so the mosaic shows what the content
  latents alone encode — for an rVAE, the objects upright and centred.
* :func:`latent_scatter` encodes patches and plots two content latents against each other
  (coloured by label), and the angle latent against a known angle when one is given.

Both return the numbers they draw and write a PNG only when given a ``path``. They draw on a bare
``matplotlib.figure.Figure`` (Agg canvas), so they neither need nor change pyplot's global state.

Example:
    >>> mosaic = latent_traversal(model, dims=(0, 1), n=8, span=2.0, path="traversal.png")
    >>> points = latent_scatter(model, cards.images, labels=cards.label, true_angle=cards.angle)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np

from ._conditional import PairedVAE
from .base import BaseVAE, check_int, check_per_patch
from .jvae import JVAE

__all__ = ["latent_traversal", "latent_scatter", "LatentScatter"]


@dataclass(frozen=True)
class LatentScatter:
    """The points of :func:`latent_scatter`.

    Attributes:
        content: ``N x 2`` content latents plotted (``N x 1`` for a model with one content latent,
            plotted against the patch index).
        angle: ``N`` encoded angles (radians), or None when no true angle was given.
    """

    content: np.ndarray
    angle: np.ndarray | None


def _check_model(model: Any) -> BaseVAE:
    """A fitted image embedder whose ``decode`` takes latents alone, or a clear error."""
    if not isinstance(model, BaseVAE) or isinstance(model, PairedVAE):
        raise TypeError(
            "the latent figures take an embedder (VAE, RVAE, AffineVAE, JVAE, JRVAE, SkipRVAE); "
            f"got {type(model).__name__}"
        )
    model._check_fitted()
    if len(tuple(model.input_shape)) not in (2, 3):
        raise ValueError(f"the latent figures draw image patches; input_shape is {model.input_shape!r}")
    if model.latent_dim < 1:
        raise ValueError(f"this {type(model).__name__} has no content latents (latent_dim=0) to draw")
    return model


def _check_dims(dims: Sequence[int] | None, latent_dim: int) -> tuple[int, ...]:
    """Content-latent indices: ``(i, j)``, ``(i,)``, or the first two (one) when None."""
    if dims is None:
        return (0, 1) if latent_dim >= 2 else (0,)
    if isinstance(dims, (str, bytes)) or not isinstance(dims, Sequence) or len(dims) not in (1, 2):
        raise ValueError(f"dims must be (i, j) or (i,) content-latent indices; got {dims!r}")
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, Integral) or not 0 <= d < latent_dim:
            raise ValueError(
                f"dims {tuple(dims)!r} must index the content latents z1..z{latent_dim}: "
                f"integers in 0..{latent_dim - 1}"
            )
    if len(dims) == 2 and dims[0] == dims[1]:
        raise ValueError(f"dims must name two different content latents; got {tuple(dims)!r}")
    return tuple(int(d) for d in dims)


def _content_columns(model: BaseVAE) -> slice:
    start = len(model.geometric_names)
    return slice(start, start + model.latent_dim)


def _traversal_latents(
    model: BaseVAE, dims: tuple[int, ...], values: np.ndarray, label: int | None
) -> np.ndarray:
    """The ``decode`` input of a traversal: ``n_rows * n x n_latents`` float32, row-major over the
    mosaic. Column ``c`` of the mosaic sets ``dims[0]`` to ``values[c]``; row ``r`` sets ``dims[1]``
    to ``values[::-1][r]`` (largest at the top, as on a plot's y axis). Everything else is 0; a
    class model gets the one-hot ``label``."""
    n = len(values)
    rows = n if len(dims) == 2 else 1
    z = np.zeros((rows, n, model.n_latents), dtype=np.float32)
    first = _content_columns(model).start
    z[:, :, first + dims[0]] = values[None, :]
    if len(dims) == 2:
        z[:, :, first + dims[1]] = values[::-1, None]
    if label is not None:
        if not isinstance(model, JVAE):
            raise ValueError(f"label is for class models (JVAE, JRVAE); got a {type(model).__name__}")
        z[:, :, model.n_latents - model.n_classes + label] = 1.0
    return z.reshape(rows * n, model.n_latents)


def _mosaic(images: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """``rows * cols x h x w`` tiles, row-major -> ``rows * h x cols * w``."""
    _, h, w = images.shape
    return images.reshape(rows, cols, h, w).transpose(0, 2, 1, 3).reshape(rows * h, cols * w)


def latent_traversal(
    model: BaseVAE,
    dims: Sequence[int] | None = None,
    n: int = 8,
    span: float = 2.0,
    path: str | Path | None = None,
) -> np.ndarray:
    """Decode an ``n x n`` grid of two content latents over ``[-span, span]`` (the others and all
    geometric latents at 0) and tile the first channel of the patches into one image.

    ``dims = (i, j)`` picks content latents ``z_{i+1}`` (across, left to right) and ``z_{j+1}`` (down,
    from ``+span`` at the top); ``(i,)`` gives a single row. Default: ``(0, 1)``, or ``(0,)`` for one
    content latent. A model with a class latent (JVAE, JRVAE) gets one mosaic per class.

    Returns:
        ``n*h x n*w`` (``h x n*w`` for one dim) in the units of the training data, or
        ``n_classes x n*h x n*w`` for a class model. With ``path``, also a PNG of it.

    Raises:
        NotFittedError: the model is not fitted. ValueError: bad ``dims``, ``n`` or ``span``.
    """
    model = _check_model(model)
    dims = _check_dims(dims, model.latent_dim)
    n = check_int("n", n, 2)
    if isinstance(span, bool) or not isinstance(span, Real) or not 0 < span < math.inf:
        raise ValueError(f"span must be a finite number > 0; got {span!r}")
    values = np.linspace(-span, span, n, dtype=np.float32)
    labels: list[int | None] = list(range(model.n_classes)) if isinstance(model, JVAE) else [None]
    rows = n if len(dims) == 2 else 1
    mosaics = []
    for label in labels:
        images = model.decode(_traversal_latents(model, dims, values, label))
        first_channel = images if images.ndim == 3 else images[:, 0]
        mosaics.append(_mosaic(first_channel, rows, n))
    mosaic = np.stack(mosaics) if isinstance(model, JVAE) else mosaics[0]
    if path is not None:
        _write_traversal(Path(path), model, mosaics, labels, dims, span, n)
    return mosaic


def _write_traversal(path, model, mosaics, labels, dims, span, n) -> None:
    from matplotlib.figure import Figure

    names = model.latent_names[_content_columns(model)]
    step = 2.0 * span / (n - 1)  # one tile in latent units; the extent centres tiles on values
    half_x = span + step / 2
    half_y = half_x if len(dims) == 2 else step / 2
    fig = Figure(figsize=(3.2 * len(mosaics), 3.4 if len(dims) == 2 else 1.4))
    for k, (mosaic, label) in enumerate(zip(mosaics, labels)):
        ax = fig.add_subplot(1, len(mosaics), k + 1)
        ax.imshow(mosaic, cmap="gray", extent=(-half_x, half_x, -half_y, half_y), aspect="auto")
        ax.set_xlabel(names[dims[0]])
        if len(dims) == 2:
            ax.set_ylabel(names[dims[1]])
        else:
            ax.set_yticks([])
        ax.set_title(f"{type(model).__name__}" + (f", class {label + 1}" if label is not None else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def latent_scatter(
    model: BaseVAE,
    X: Any,
    labels: Any = None,
    true_angle: Any = None,
    dims: Sequence[int] | None = None,
    path: str | Path | None = None,
) -> LatentScatter:
    """Encode patches ``X`` (``N x h x w`` or ``N x C x h x w``) and plot content latents
    ``dims`` (default the first two) against each other, coloured by ``labels`` (``N``) if given;
    with ``true_angle`` (``N`` radians) a second panel plots the encoded angle against it.

    Returns:
        :class:`LatentScatter` with the plotted values; with ``path``, also a PNG.

    Raises:
        NotFittedError: the model is not fitted. ValueError: bad ``dims``, ``labels`` or
        ``true_angle`` of the wrong length, or ``true_angle`` for a model without an angle latent.
    """
    model = _check_model(model)
    dims = _check_dims(dims, model.latent_dim)
    encoded = model.encode(X)
    labels = check_per_patch(labels, len(encoded), "labels")
    truth = check_per_patch(true_angle, len(encoded), "true_angle")
    if truth is not None and "angle" not in model.geometric_names:
        raise ValueError(f"true_angle given, but this {type(model).__name__} has no angle latent")
    first = _content_columns(model).start
    content = encoded[:, [first + d for d in dims]]
    angle = encoded[:, model.geometric_names.index("angle")] if truth is not None else None
    if path is not None:
        _write_scatter(Path(path), model, content, dims, labels, truth, angle)
    return LatentScatter(content=content, angle=angle)


def _write_scatter(path, model, content, dims, labels, truth, angle) -> None:
    from matplotlib.figure import Figure

    names = model.latent_names[_content_columns(model)]
    colour = labels if labels is not None else "tab:blue"
    fig = Figure(figsize=(3.6 * (1 if truth is None else 2), 3.4))
    ax = fig.add_subplot(1, 1 if truth is None else 2, 1)
    x, y = (content[:, 0], content[:, 1]) if len(dims) == 2 else (np.arange(len(content)), content[:, 0])
    points = ax.scatter(x, y, c=colour, s=6, cmap="tab10" if labels is not None else None)
    ax.set_xlabel(names[dims[0]] if len(dims) == 2 else "patch")
    ax.set_ylabel(names[dims[1]] if len(dims) == 2 else names[dims[0]])
    if labels is not None:
        fig.colorbar(points, ax=ax, label="label")
    if truth is not None:
        ax2 = fig.add_subplot(1, 2, 2)
        ax2.scatter(truth, angle, s=6, c=colour, cmap="tab10" if labels is not None else None)
        ax2.set_xlabel("true angle (rad)")
        ax2.set_ylabel("angle latent (rad)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
