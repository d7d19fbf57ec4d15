"""The coordinate ("spatial") decoder shared by the invariant VAEs.

The decoder draws a patch one pixel at a time: every pixel coordinate ``p`` of a fixed grid in
``[-1, 1]^2`` is moved by the sample's geometric latents (``R(angle) p + shift``) and then mapped,
together with the content latents ``z``, to the pixel's value:

    out(p) = MLP(tanh(W (R p + shift) + b + V z)),    W: H x 2, V: H x k (no bias)

Because the transform is applied to the coordinates, the content latents never have to describe
where or how the object is turned.

Cost: the network runs once per pixel and sample (``N * H * W`` rows), which makes it the most
expensive piece of an rVAE. Two things keep it cheap without changing the function computed:

* the first layer is separable. ``R p = cos(angle) p + sin(angle) J p`` with ``J`` the quarter
  turn, so ``W R p = cos(angle) (W p) + sin(angle) (W J p)``: the two projections ``W p`` and
  ``W J p`` of the grid are computed once per batch (``HW x H``) and each sample only mixes them,
  with the shift and the content folded into one bias ``c = W shift + b + V z`` per sample;
* the tanh layers are fused autograd functions that work in place and evaluate
  ``tanh(x) = 2 sigmoid(2x) - 1`` (torch's CPU ``tanh`` is several times slower than its
  ``sigmoid``); the backward pass uses the saved output only.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["coordinate_grid", "CoordinateDecoder"]

_tanh_backward = torch.ops.aten.tanh_backward


def coordinate_grid(height: int, width: int) -> torch.Tensor:
    """Pixel coordinates of a ``height x width`` patch, ``(height * width) x 2``, row-major.

    ``x = linspace(-1, 1, height)`` runs down the rows and ``y = linspace(1, -1, width)`` across the
    columns (``meshgrid(x, y, indexing='ij')``): row ``i``, column ``j`` sits at ``(x_i, y_j)``.

    Example:
        >>> coordinate_grid(2, 3)[:3]
        tensor([[-1.,  1.],
                [-1.,  0.],
                [-1., -1.]])
    """
    x = torch.linspace(-1.0, 1.0, height)
    y = torch.linspace(1.0, -1.0, width)
    gx, gy = torch.meshgrid(x, y, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)


def _tanh_from_doubled_(h: torch.Tensor) -> torch.Tensor:
    """In place: ``h`` holds ``2x`` on entry and ``tanh(x) = 2 sigmoid(2x) - 1`` on return."""
    return torch.sigmoid_(h).mul_(2.0).sub_(1.0)


class _RotatedProjectionTanh(torch.autograd.Function):
    """``y[n, p, :] = tanh(cs[n, 0] A[p] + cs[n, 1] B[p] + c[n])``.

    Shapes: ``cs`` N x 2 (cos, sin of the angle), ``ab`` 2 x (P*H) (the stacked grid projections
    ``A``, ``B``), ``c`` N x H (per-sample bias) -> ``y`` N x P x H.
    """

    @staticmethod
    def forward(ctx, cs: torch.Tensor, ab: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        n, hidden = c.shape
        h = torch.mm(cs * 2.0, ab).view(n, -1, hidden)
        h.add_(c.unsqueeze(1), alpha=2.0)
        y = _tanh_from_doubled_(h)
        ctx.save_for_backward(cs, ab, y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        cs, ab, y = ctx.saved_tensors
        d = _tanh_backward(grad, y)
        flat = d.view(d.shape[0], -1)
        grad_cs = flat @ ab.t() if ctx.needs_input_grad[0] else None
        grad_ab = cs.t() @ flat if ctx.needs_input_grad[1] else None
        grad_c = d.sum(dim=1) if ctx.needs_input_grad[2] else None
        return grad_cs, grad_ab, grad_c


class _LinearTanh(torch.autograd.Function):
    """``y = tanh(x W^T + b)``; ``x`` M x H_in, ``W`` H_out x H_in, ``b`` H_out -> M x H_out."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        y = _tanh_from_doubled_(torch.addmm(bias, x, weight.t(), beta=2.0, alpha=2.0))
        ctx.save_for_backward(x, weight, y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, y = ctx.saved_tensors
        d = _tanh_backward(grad, y)
        grad_x = d @ weight if ctx.needs_input_grad[0] else None
        grad_w = d.t() @ x if ctx.needs_input_grad[1] else None
        grad_b = d.sum(dim=0) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


class CoordinateDecoder(nn.Module):
    """Coordinate decoder: content latents + angle + shift -> patch.

    ``out(p) = L_out(tanh(L_m(... tanh(L_1(tanh(W (R(angle) p + shift) + b + V z))))))`` for every
    grid point ``p`` (see :func:`coordinate_grid`), with ``m = layers`` hidden ``H x H`` layers.
    ``R(angle) = [[cos, -sin], [sin, cos]]`` acts on ``(x, y)``; the shift is in grid units (the
    patch spans 2). Outputs are raw (the caller applies the likelihood's link).

    Args:
        shape: ``(C, height, width)`` of the patches.
        latent_dim: number of content latents ``k``.
        hidden: width ``H`` of every per-pixel layer; the cost grows like ``H^2``.
        layers: number of hidden ``H x H`` tanh layers after the first one.

    Example:
        >>> dec = CoordinateDecoder((1, 16, 16), latent_dim=2, hidden=32)
        >>> dec(torch.zeros(5, 2), angle=torch.zeros(5)).shape
        torch.Size([5, 1, 16, 16])
    """

    def __init__(self, shape: tuple[int, int, int], latent_dim: int, hidden: int, layers: int = 1):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        _, height, width = self.shape
        grid = coordinate_grid(height, width)
        self.register_buffer("grid", grid, persistent=False)
        # J p for the quarter turn J = [[0, -1], [1, 0]]: R(a) p = cos(a) p + sin(a) J p.
        self.register_buffer("grid_turned", torch.stack([-grid[:, 1], grid[:, 0]], 1), persistent=False)
        self.coordinates = nn.Linear(2, hidden)
        self.content = nn.Linear(latent_dim, hidden, bias=False)
        self.hidden = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.out = nn.Linear(hidden, self.shape[0])

    def forward(
        self,
        z: torch.Tensor,
        angle: torch.Tensor | None = None,
        shift: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``z`` N x k, ``angle`` N (radians) or None, ``shift`` N x 2 (grid units) or None ->
        N x C x height x width."""
        n = z.shape[0]
        w, b = self.coordinates.weight, self.coordinates.bias
        if angle is None:
            angle = z.new_zeros(n)
        cs = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
        ab = torch.stack([self.grid @ w.t(), self.grid_turned @ w.t()]).reshape(2, -1)
        c = self.content(z) + b
        if shift is not None:
            c = c + shift @ w.t()
        h = _RotatedProjectionTanh.apply(cs, ab, c)
        h = h.view(-1, h.shape[-1])
        for layer in self.hidden:
            h = _LinearTanh.apply(h, layer.weight, layer.bias)
        out = F.linear(h, self.out.weight, self.out.bias)
        channels, height, width = self.shape
        return out.view(n, height * width, channels).transpose(1, 2).reshape(n, channels, height, width)
