"""Time-delay rVAE: patches from frames ``t - dt``, ``t`` and ``t + dt`` stacked as channels.

An rVAE on such stacks learns latents of *how a site changes* over ``2 dt`` frames, not only of
what it looks like. :class:`~aexp.models.rvae.RVAE` already takes multichannel patches
(``input_shape=(C, h, w)``; the decoder draws ``C`` outputs per pixel and the angle and shift are
shared by all channels), so the time-delay rVAE is ``RVAE(input_shape=(3 C, p, p))`` on the
output of :func:`time_delay_patches`, which builds the stacks from a frame sequence.

Example:
    >>> stacks = time_delay_patches(frames, pixels, patch_size=16, delay=1)
    >>> model = RVAE(input_shape=stacks.patches.shape[1:], latent_dim=2).fit(stacks.patches)
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from typing import Any

import numpy as np

from ..patches import extract_patches

__all__ = ["TimeDelayPatches", "time_delay_patches"]


@dataclass(frozen=True)
class TimeDelayPatches:
    """Stacked patches and where each came from.

    Attributes:
        patches: ``N x 3C x p x p`` float32; channels ``[frame t - dt (C channels), frame t (C),
            frame t + dt (C)]``.
        frame: ``N`` int, the centre frame ``t`` of each stack.
        pixel: ``N x 2`` int, the (row, col) centre of each patch.
    """

    patches: np.ndarray
    frame: np.ndarray
    pixel: np.ndarray


def time_delay_patches(frames: Any, pixels: Any, patch_size: int, delay: int = 1) -> TimeDelayPatches:
    """Stack the patches around ``pixels`` from frames ``t - delay``, ``t``, ``t + delay``.

    Every centre frame ``t`` in ``[delay, T - delay)`` and every pixel gives one stack, frame by
    frame (row ``i`` is frame ``delay + i // len(pixels)``, pixel ``i % len(pixels)``). The first and
    last ``delay`` frames have no neighbour on one side and are centre frames of no stack; they
    still serve as neighbours. Patches reaching over the image border are mirror-padded (as in
    :func:`aexp.patches.extract_patches`), never dropped. The same pixels are used in every frame:
    register (drift-correct) the sequence first.

    Args:
        frames: ``T x H x W`` or ``T x C x H x W`` real numbers.
        pixels: ``M x 2`` patch centres (row, col) inside the frames.
        patch_size: side ``p`` of the square patches.
        delay: ``dt`` in frames, >= 1.

    Returns:
        :class:`TimeDelayPatches` with ``(T - 2 delay) M`` stacks.
    """
    if isinstance(delay, bool) or not isinstance(delay, Integral) or delay < 1:
        raise ValueError(f"delay must be an integer >= 1; got {delay!r}")
    stack = np.asarray(frames)
    if stack.dtype == bool or not np.issubdtype(stack.dtype, np.number) or np.iscomplexobj(stack):
        raise ValueError(f"frames must hold real numbers; got dtype {stack.dtype}")
    if stack.ndim == 3:
        stack = stack[:, None]
    if stack.ndim != 4:
        raise ValueError(f"frames must be T x H x W or T x C x H x W; got shape {np.shape(frames)}")
    n_frames = len(stack)
    if n_frames < 2 * delay + 1:
        raise ValueError(f"frames holds {n_frames} frames; delay={delay} needs at least {2 * delay + 1}")
    if not np.isfinite(stack).all():
        bad = int(np.flatnonzero(~np.isfinite(stack).reshape(n_frames, -1).all(axis=1))[0])
        raise ValueError(f"frames holds NaN or inf (first in frame {bad})")
    per_frame = [extract_patches(frame, pixels, patch_size) for frame in stack]  # T x (M x C x p x p)
    centres = np.arange(delay, n_frames - delay)
    patches = np.concatenate(
        [np.concatenate([per_frame[t - delay], per_frame[t], per_frame[t + delay]], axis=1) for t in centres]
    )
    rows = np.rint(np.asarray(pixels)).astype(np.int64)
    return TimeDelayPatches(
        patches=patches,
        frame=np.repeat(centres, len(rows)),
        pixel=np.tile(rows, (len(centres), 1)),
    )
