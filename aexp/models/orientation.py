"""What ties the angle latent of a rotation-invariant VAE to the true angle, over wide rotations and
across classes of objects.

Two options of :class:`~aexp.models.rvae.RVAE` (and the models built on it) live here:

* **Encoder equivariance** (``equivariance=w``). Each training batch is also turned by known random
  angles ``beta`` (uniform in [-pi, pi)) and encoded again; the loss adds, per patch,

      w * [ (1 - cos(angle(turned) - angle(patch) - beta)) + sum_j (z_j(turned) - z_j(patch))^2 ]

  over the latent means (``z_j``: the content latents and any scale or shear latent, which a turn
  leaves unchanged). Without it the encoder only learns the angle from reconstructions and, once
  rotations span more than about +-90 deg, settles in states where part of a class is explained
  as another class turned over (a spade upside down looks like a heart): the angle is then lost
  and classes mix. The coordinate decoder is exactly equivariant already; this makes the encoder
  so too. A glyph with an n-fold symmetry cannot meet the angle part for every ``beta`` (its turned
  copies are itself); the term is bounded, so it costs such a class a constant, not a divergence.

* **Learned canonical orientation** (``orientation=True``). The generative model draws a patch at
  angle ``angle + h(z)``: ``h`` (a small MLP of the content latents, zero at the start) is the
  canonical orientation of the object that ``z`` describes, and the angle latent is measured from
  it. The encoder reports ``angle = raw(x) - h(mean z(x))``. Every class can then turn its canonical
  orientation at no cost to the reconstruction, so the angle prior ``N(0, rotation_prior^2)`` pulls
  each class's angles to mean zero: the angle of every class is measured from that class's mean
  orientation in the data, one offset for all classes. Without it each class keeps whatever
  orientation its template first took, and angles of different classes differ by an offset.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .base import LatentNetwork
from .decoders import coordinate_grid

__all__ = ["rotate_patches", "OrientedNetwork", "equivariance_penalty"]


def rotate_patches(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Patches turned by ``angle`` (radians) in the decoders' convention: ``N x C x h x w`` and
    ``N`` -> ``N x C x h x w``.

    The result samples ``x`` at ``R(angle) p`` for every grid point ``p`` (bilinear, zeros outside),
    so a patch whose object is at angle ``a`` comes back with the object at ``a + angle``, as
    :class:`~aexp.models.decoders.CoordinateDecoder` would draw it. Corners that turn in from
    outside the patch are zero.
    """
    n, _, height, width = x.shape
    grid = coordinate_grid(height, width).to(device=x.device, dtype=x.dtype)  # P x 2, (row, column) axes
    c, s = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
    qx = c * grid[:, 0] - s * grid[:, 1]
    qy = s * grid[:, 0] + c * grid[:, 1]
    # grid_sample wants (column, row) in [-1, 1] with columns to the right; the decoders' y axis
    # runs right to left, so column = -y and row = x.
    sample_at = torch.stack([-qy, qx], dim=-1).view(n, height, width, 2)
    return F.grid_sample(x, sample_at, mode="bilinear", padding_mode="zeros", align_corners=True)


class OrientedNetwork(LatentNetwork):
    """An invariant network whose decoder turns each object by its learned canonical orientation.

    ``encode``: the wrapped network's ``(mean, log_var)`` with ``h(mean z)`` subtracted from the
    angle column; ``decode``: ``h(z)`` added to the angle column, then the wrapped decoder.
    ``h``: ``Linear(k, hidden) -> tanh -> Linear(hidden, 1)``, output zero at the start (so the
    model starts as the plain one). Latent layout ``[angle, (other geometric), z_1..z_k]`` with
    ``n_geometric`` geometric columns; shapes as the wrapped network's.
    """

    def __init__(self, network: LatentNetwork, n_geometric: int, latent_dim: int, hidden: int = 32):
        super().__init__()
        self.network = network
        self.n_geometric = n_geometric
        first, last = nn.Linear(latent_dim, hidden), nn.Linear(hidden, 1)
        self.orientation = nn.Sequential(first, nn.Tanh(), last)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def canonical_angle(self, content: torch.Tensor) -> torch.Tensor:
        """``h(z)``: content latents ``N x k`` -> canonical orientation ``N`` (radians)."""
        return self.orientation(content)[:, 0]

    def _with_angle_offset(self, latents: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        return torch.cat([(latents[:, 0] + offset)[:, None], latents[:, 1:]], dim=1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_var = self.network.encode(x)
        offset = self.canonical_angle(mean[:, self.n_geometric :])
        return self._with_angle_offset(mean, -offset), log_var

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        offset = self.canonical_angle(latents[:, self.n_geometric :])
        return self.network.decode(self._with_angle_offset(latents, offset))


def equivariance_penalty(
    network: LatentNetwork,
    x: torch.Tensor,
    mean: torch.Tensor,
    invariant: list[int],
    noise: torch.Generator,
) -> torch.Tensor:
    """Per-patch equivariance penalty (see the module docstring), before its weight: ``N``.

    Args:
        network: has ``encode(x) -> (mean, log_var)`` with the angle in column 0.
        x: the normalised batch, ``N x C x h x w``.
        mean: its latent means, ``N x d`` (``network.encode(x)[0]``).
        invariant: the columns a turn leaves unchanged (content, scale, shear).
        noise: generator of the turning angles (the training noise, so runs stay seeded).
    """
    beta = (torch.rand(len(x), generator=noise, device=x.device, dtype=x.dtype) * 2.0 - 1.0) * torch.pi
    turned, _ = network.encode(rotate_patches(x, beta))
    angle_error = 1.0 - torch.cos(turned[:, 0] - mean[:, 0] - beta)
    content_error = (turned[:, invariant] - mean[:, invariant]).square().sum(dim=1)
    return angle_error + content_error
