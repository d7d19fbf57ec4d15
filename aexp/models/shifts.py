"""What ties the shift latents of an rVAE to the shift of the object, in every direction.

The rVAE's encoder learns its shift latents ``(dx, dy)`` only from reconstructions, so it learns
each direction of shift about as fast as the data vary along it: gradient descent fits a linear
read-out along its directions in the order of their variance. When the data shift much more along
one direction than across it (the beam deflection of a 4D-STEM scan across one domain wall: the
twin's deflection varies 3-4x more along the wall normal than across it), 60 epochs learn the large
direction and leave the small one out of both latents; the decoder could draw it, the encoder never
reports it. Measured on patterns of one diffraction pattern shifted at random, spread 0.25 mrad
along kx and 0.076 along ky: ky from both shift latents 0.10 after 60 epochs and 0.86 after 240;
with equal spreads (0.15 each) 0.97 after 60.

**Shift equivariance** (``shift_equivariance=w`` on :class:`~aexp.models.rvae.RVAE`). Each training
batch is also moved by known random shifts ``d`` (grid units, ``d ~ N(0, translation_prior^2)`` per
axis) and encoded again; the loss adds, per patch,

    w * [ |t(moved) - t(patch) + M d / 0.1|^2 + sum_j (z_j(moved) - z_j(patch))^2
          + (1 - cos(angle(moved) - angle(patch))) ]

over the latent means, with ``t = (dx, dy)``, ``M`` the decoder's grid transform of the patch
(``R(angle)``, times scale and shear where the model has them) and ``z_j`` every other latent (a
shift leaves content, scale and shear unchanged). It follows from the decoder: it draws ``f(M p +
0.1 t)`` at grid point ``p``, so content moved by ``d`` is ``f(M p + 0.1 t - M d)``. The encoder so
learns the shift in both directions at the same rate, whatever the spread of the data along each.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .base import SHIFT_SCALE, LatentNetwork, grid_transform
from .decoders import coordinate_grid

__all__ = ["shift_patches", "shift_equivariance_penalty", "latent_displacement"]


def shift_patches(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Patches whose content moved by ``shift`` (grid units, the decoders' ``(x, y)`` axes; the
    patch spans [-1, 1]): ``N x C x h x w`` and ``N x 2`` -> ``N x C x h x w``.

    The result samples ``x`` at ``p - shift`` for every grid point ``p`` (bilinear; the border
    pixels continue outside, as a pattern's background does). With the decoders' axes, ``(s, 0)``
    moves the content ``s (h - 1) / 2`` pixels down and ``(0, s)`` moves it ``s (w - 1) / 2`` pixels
    left (their ``y`` runs right to left; see :func:`~aexp.models.decoders.coordinate_grid`).

    Example:
        >>> x = torch.zeros(1, 1, 5, 5); x[0, 0, 2, 2] = 1
        >>> shift_patches(x, torch.tensor([[0.5, 0.0]]))[0, 0, 3, 2]   # one pixel down
        tensor(1.)
    """
    n, _, height, width = x.shape
    grid = coordinate_grid(height, width).to(device=x.device, dtype=x.dtype)  # P x 2
    source = grid[None] - shift[:, None, :]  # N x P x 2
    # grid_sample wants (column, row) with columns to the right; the decoders' y runs right to left.
    sample_at = torch.stack([-source[..., 1], source[..., 0]], dim=-1).view(n, height, width, 2)
    return F.grid_sample(x, sample_at, mode="bilinear", padding_mode="border", align_corners=True)


def shift_equivariance_penalty(
    network: LatentNetwork,
    x: torch.Tensor,
    decoder_latents: torch.Tensor,
    mean: torch.Tensor,
    geometric: list[str],
    spread: float,
    noise: torch.Generator,
) -> torch.Tensor:
    """Per-patch shift-equivariance penalty (see the module docstring), before its weight: ``N``.

    Args:
        network: has ``encode(x) -> (mean, log_var)`` with the geometric latents ``geometric``
            (which hold ``dx`` and ``dy``) first.
        x: the normalised batch, ``N x C x h x w``.
        decoder_latents: the latents as the decoder's grid transform reads them, ``N x d`` (the
            means, with any learned canonical orientation added to the angle); not differentiated.
        mean: the batch's latent means, ``N x d`` (``network.encode(x)[0]``).
        geometric: names of the geometric latents, in column order.
        spread: standard deviation of the random shifts, grid units.
        noise: generator of the shifts (the training noise, so runs stay seeded).
    """
    shift = torch.randn(len(x), 2, generator=noise, device=x.device, dtype=x.dtype) * spread
    moved, _ = network.encode(shift_patches(x, shift))
    transform = grid_transform(decoder_latents.detach(), geometric)
    if "matrix" in transform:
        matrix = transform["matrix"]
    else:
        angle = transform.get("angle", torch.zeros(len(x), device=x.device, dtype=x.dtype))
        c, s = torch.cos(angle), torch.sin(angle)
        matrix = torch.stack([torch.stack([c, -s], 1), torch.stack([s, c], 1)], 1)
    expected = -(matrix @ shift[:, :, None])[:, :, 0] / SHIFT_SCALE
    columns = [geometric.index("dx"), geometric.index("dy")]
    others = [i for i in range(mean.shape[1]) if i not in columns and i != geometric.index("angle")]
    shift_error = (moved[:, columns] - mean[:, columns] - expected).square().sum(dim=1)
    other_error = (moved[:, others] - mean[:, others]).square().sum(dim=1)
    angle_col = geometric.index("angle")
    return shift_error + other_error + (1.0 - torch.cos(moved[:, angle_col] - mean[:, angle_col]))


def latent_displacement(
    latents: torch.Tensor, geometric: list[str], shape: tuple[int, int], centre: torch.Tensor | None = None
) -> torch.Tensor:
    """Where the decoder draws the point of its template at ``centre``: ``N x d`` latents whose
    first columns are ``geometric`` (with ``dx``, ``dy``) -> ``N x 2`` (rows down, columns right),
    pixels from the patch centre, for a patch of ``shape`` = ``(h, w)``.

    The decoder draws ``f(M p + t)`` (``M`` its grid transform, ``t = 0.1 (dx, dy)``), so the
    template's point ``q`` lands at ``p = M^-1 (q - t)`` (grid units; the grid's ``x`` runs down the
    rows and its ``y`` right to left, and the patch spans 2). With ``centre`` None (``q = 0``) this
    is the displacement ``-M^-1 t`` of the drawing; give the template's own centre (grid units,
    ``2``) when it is off the patch centre, else turning the template moves it too. Either way
    the result does not depend on the angle latent's zero, so it is the shift to compare with a
    shift in the data, axis by axis.

    Example:
        >>> latent_displacement(torch.tensor([[0.0, 1.0, 0.0]]), ["angle", "dx", "dy"], (21, 21))
        tensor([[-1., 0.]])
    """
    transform = grid_transform(latents, geometric)
    q = -transform["shift"] if centre is None else centre.reshape(1, 2) - transform["shift"]
    if "matrix" in transform:
        p = torch.linalg.solve(transform["matrix"], q[:, :, None])[:, :, 0]
    else:
        angle = transform.get("angle", torch.zeros(len(q), dtype=q.dtype, device=q.device))
        c, s = torch.cos(angle), torch.sin(angle)
        p = torch.stack([c * q[:, 0] + s * q[:, 1], -s * q[:, 0] + c * q[:, 1]], 1)  # R^T q
    height, width = shape
    return torch.stack([p[:, 0] * (height - 1) / 2, -p[:, 1] * (width - 1) / 2], 1)
