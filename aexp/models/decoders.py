"""The coordinate ("spatial") decoder shared by the invariant VAEs.

The decoder draws a patch one pixel at a time: every pixel coordinate ``p`` of a fixed grid in
``[-1, 1]^2`` is moved by the sample's geometric latents (``R(angle) p + shift``) and then mapped,
together with the content latents ``z``, to the pixel's value:

    out(p) = MLP(tanh(W (R p + shift) + b + V z)),    W: H x 2, V: H x k (no bias)

Because the transform is applied to the coordinates, the content latents never have to describe
where or how the object is turned.

Cost: the network runs once per pixel and sample (``N * H * W`` rows), which makes it the most
expensive piece of an rVAE. Three things keep it cheap without changing the function computed:

* the first layer is separable. ``R p = cos(angle) p + sin(angle) J p`` with ``J`` the quarter
  turn, so ``W R p = cos(angle) (W p) + sin(angle) (W J p)``: the two projections ``W p`` and
  ``W J p`` of the grid are computed once per batch (``HW x H``) and each sample only mixes them,
  with the shift and the content folded into one bias ``c = W shift + b + V z`` per sample;
* every hidden activation is kept as ``s = sigmoid(2a)``, since ``tanh(a) = 2 s - 1`` and the
  affine map ``2 s - 1`` folds into the next layer's weights (``W tanh(a) + b =
  2W s + (b - W 1)``); torch's CPU ``tanh`` and its backward are several times slower than
  ``sigmoid`` and ``sigmoid_backward``;
* the per-pixel layers are fused autograd functions that work in place and save only their
  outputs (and inputs already saved), so a training step makes few passes over ``N x HW x H``.
"""

from __future__ import annotations

import warnings
from typing import cast

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

__all__ = ["coordinate_grid", "CoordinateDecoder"]

_sigmoid_backward = torch.ops.aten.sigmoid_backward


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


class _RotatedSigmoid(torch.autograd.Function):
    """``s[n, p, :] = sigmoid(cs[n, 0] A[p] + cs[n, 1] B[p] + c[n])``.

    Shapes: ``cs`` N x 2 (cos, sin of the angle), ``ab`` 2 x P x H (the grid projections ``A``,
    ``B``), ``c`` N x H (per-sample bias) -> ``s`` N x P x H.
    """

    @staticmethod
    def forward(ctx, cs: torch.Tensor, ab: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        s = torch.addcmul(c.unsqueeze(1), ab[0], cs[:, 0, None, None])
        s.addcmul_(ab[1], cs[:, 1, None, None])
        torch.sigmoid_(s)
        ctx.save_for_backward(cs, ab, s)
        return s

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        cs, ab, s = ctx.saved_tensors
        d = _sigmoid_backward(grad, s)
        # Explicit widths: with an empty batch (N = 0) a -1 in view() would be ambiguous.
        ab_flat = ab.view(2, ab[0].numel())
        flat = d.view(d.shape[0], ab_flat.shape[1])
        grad_cs = flat @ ab_flat.t() if ctx.needs_input_grad[0] else None
        grad_ab = (cs.t() @ flat).view_as(ab) if ctx.needs_input_grad[1] else None
        grad_c = d.sum(dim=1) if ctx.needs_input_grad[2] else None
        return grad_cs, grad_ab, grad_c


class _LinearSigmoid(torch.autograd.Function):
    """``s = sigmoid(x W^T + b)``; ``x`` M x H_in, ``W`` H_out x H_in, ``b`` H_out -> M x H_out."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid_(torch.addmm(bias, x, weight.t()))
        ctx.save_for_backward(x, weight, s)
        return s

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight, s = ctx.saved_tensors
        d = _sigmoid_backward(grad, s)
        grad_x = d @ weight if ctx.needs_input_grad[0] else None
        grad_w = d.t() @ x if ctx.needs_input_grad[1] else None
        grad_b = d.sum(dim=0) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


class _AffineSigmoid(torch.autograd.Function):
    """``s[n, p, :] = sigmoid(grid[p] @ U[n]^T + c[n])`` for a per-sample first-layer weight
    ``U[n] = W M[n]`` (``M`` the sample's 2 x 2 grid transform).

    Shapes: ``grid`` P x 2, ``u`` N x H x 2, ``c`` N x H -> ``s`` N x P x H.
    """

    @staticmethod
    def forward(ctx, grid: torch.Tensor, u: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        points = grid.expand(u.shape[0], *grid.shape)
        s = torch.sigmoid_(torch.baddbmm(c.unsqueeze(1), points, u.transpose(1, 2)))
        ctx.save_for_backward(points, s)
        return s

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        points, s = ctx.saved_tensors
        d = _sigmoid_backward(grad, s)
        grad_u = torch.bmm(d.transpose(1, 2), points) if ctx.needs_input_grad[1] else None
        grad_c = d.sum(dim=1) if ctx.needs_input_grad[2] else None
        return None, grad_u, grad_c


class CoordinateDecoder(nn.Module):
    """Coordinate decoder: content latents + angle + shift -> patch.

    ``out(p) = L_out(tanh(L_m(... tanh(L_1(tanh(W (R(angle) p + shift) + b + V z))))))`` for every
    grid point ``p`` (see :func:`coordinate_grid`), with ``m = layers`` hidden ``H x H`` layers.
    ``R(angle) = [[cos, -sin], [sin, cos]]`` acts on ``(x, y)``; the shift is in grid units (the
    patch spans 2). Outputs are raw (the caller applies the likelihood's link). As displayed with
    row 0 at the top, ``angle = pi/2`` turns the patch counter-clockwise (``np.rot90``), a shift
    ``(t, 0)`` moves the content ``t (height - 1) / 2`` pixels up and ``(0, t)`` moves it
    ``t (width - 1) / 2`` pixels right.

    Args:
        shape: ``(C, height, width)`` of the patches.
        latent_dim: number of content latents ``k``.
        hidden: width ``H`` of every per-pixel layer; the cost grows like ``H^2``.
        layers: number of hidden ``H x H`` tanh layers after the first one.
        coordinate_scale: factor on the initial weights ``W`` of the coordinates. An MLP of the
            coordinates learns smooth images first and fine detail very slowly (its spectral
            bias); starting ``W`` larger gives the first layer features of higher spatial
            frequency from the start, as SIREN's ``omega_0`` or Fourier-feature scales do. 1 keeps
            torch's default initialisation.

    Example:
        >>> dec = CoordinateDecoder((1, 16, 16), latent_dim=2, hidden=32)
        >>> dec(torch.zeros(5, 2), angle=torch.zeros(5)).shape
        torch.Size([5, 1, 16, 16])
    """

    grid: torch.Tensor  # buffers, registered in __init__
    grid_turned: torch.Tensor

    def __init__(
        self, shape: tuple[int, int, int], latent_dim: int, hidden: int = 32, layers: int = 2,
        coordinate_scale: float = 1.0,
    ):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        _, height, width = self.shape
        grid = coordinate_grid(height, width)
        self.register_buffer("grid", grid, persistent=False)
        # J p for the quarter turn J = [[0, -1], [1, 0]]: R(a) p = cos(a) p + sin(a) J p.
        self.register_buffer("grid_turned", torch.stack([-grid[:, 1], grid[:, 0]], 1), persistent=False)
        self.coordinates = nn.Linear(2, hidden)
        if coordinate_scale != 1.0:
            with torch.no_grad():
                self.coordinates.weight.mul_(float(coordinate_scale))
        with warnings.catch_warnings():  # latent_dim 0 (content from a class input only) is fine
            warnings.filterwarnings("ignore", "Initializing zero-element tensors")
            self.content = nn.Linear(latent_dim, hidden, bias=False)
        self.hidden = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.out = nn.Linear(hidden, self.shape[0])

    def forward(
        self,
        z: torch.Tensor,
        angle: torch.Tensor | None = None,
        shift: torch.Tensor | None = None,
        matrix: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``z`` N x k, ``angle`` N (radians) or None, ``shift`` N x 2 (grid units) or None,
        ``matrix`` N x 2 x 2 or None -> N x C x height x width.

        ``matrix`` is a general linear map of the grid (``M p + shift`` replaces ``R(angle) p +
        shift``; give it for scale or shear, and leave ``angle`` None). The rotation-only path is
        the faster one.
        """
        n = z.shape[0]
        w, b = self.coordinates.weight, self.coordinates.bias
        c = self.content(z) + b
        if shift is not None:
            c = c + shift @ w.t()
        # Pre-activations are doubled (sigmoid(2a) stands for tanh(a)); see the module docstring.
        if matrix is not None:
            if angle is not None:
                raise ValueError("give either angle or matrix to the decoder, not both")
            s = _AffineSigmoid.apply(self.grid, 2.0 * (w @ matrix), 2.0 * c)
        else:
            if angle is None:
                angle = z.new_zeros(n)
            cs = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
            ab = 2.0 * torch.stack([self.grid @ w.t(), self.grid_turned @ w.t()])
            s = _RotatedSigmoid.apply(cs, ab, 2.0 * c)
        s = s.reshape(-1, s.shape[-1])
        for module in self.hidden:
            layer = cast(nn.Linear, module)  # every entry is built as an nn.Linear in __init__
            lw, lb = layer.weight, layer.bias
            s = _LinearSigmoid.apply(s, 4.0 * lw, 2.0 * (lb - lw.sum(dim=1)))
        ow, ob = self.out.weight, self.out.bias
        out = F.linear(s, 2.0 * ow, ob - ow.sum(dim=1))
        channels, height, width = self.shape
        return out.view(n, height * width, channels).transpose(1, 2).reshape(n, channels, height, width)
