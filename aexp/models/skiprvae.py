"""Skip-rVAE: an rVAE whose content latents enter every layer of the coordinate decoder.

In the rVAE's decoder the content latents ``z`` only shift the first layer's pre-activation;
deeper layers see them only through that one nonlinearity, and a decoder can learn to ignore
them (posterior collapse) when the geometric latents already explain much of a patch. Here every
layer gets its own projection of ``z``:

    h_0 = tanh(W (R(angle) p + shift) + b + V_0 z)
    h_l = tanh(W_l h_(l-1) + b_l + V_l z),        l = 1..m
    out = W_o h_m + b_o + V_o z

Encoder, latents (``[angle, dx, dy, z...]``), priors and loss are the rVAE's
(:class:`~aexp.models.rvae.RVAE`). The layers here are plain torch operations, not the rVAE
decoder's fused ones, so a step costs more per pixel.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import LatentNetwork, MLPEncoder
from .decoders import coordinate_grid
from .rvae import RVAE, SHIFT_SCALE

__all__ = ["SkipRVAE", "SkipCoordinateDecoder"]


class SkipCoordinateDecoder(nn.Module):
    """Coordinate decoder with the content latents added to every layer (module docstring).

    Same grid, rotation and shift conventions as
    :class:`~aexp.models.decoders.CoordinateDecoder`; with the ``skips`` and ``out_skip`` weights
    at zero it computes the same function. Shapes: ``z`` N x k, ``angle`` N, ``shift`` N x 2 ->
    N x C x height x width.

    Example:
        >>> SkipCoordinateDecoder((1, 16, 16), latent_dim=2)(torch.zeros(5, 2)).shape
        torch.Size([5, 1, 16, 16])
    """

    grid: torch.Tensor  # buffers, registered in __init__
    grid_turned: torch.Tensor

    def __init__(self, shape: tuple[int, int, int], latent_dim: int, hidden: int = 32, layers: int = 2,
                 coordinate_scale: float = 1.0):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        grid = coordinate_grid(self.shape[1], self.shape[2])
        self.register_buffer("grid", grid, persistent=False)
        self.register_buffer("grid_turned", torch.stack([-grid[:, 1], grid[:, 0]], 1), persistent=False)
        self.coordinates = nn.Linear(2, hidden)
        if coordinate_scale != 1.0:  # as CoordinateDecoder's: sharper detail from the start
            with torch.no_grad():
                self.coordinates.weight.mul_(float(coordinate_scale))
        self.content = nn.Linear(latent_dim, hidden, bias=False)
        self.hidden = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.skips = nn.ModuleList(nn.Linear(latent_dim, hidden, bias=False) for _ in range(layers))
        self.out = nn.Linear(hidden, self.shape[0])
        self.out_skip = nn.Linear(latent_dim, self.shape[0], bias=False)
        # The skips start at zero, so training starts from the rVAE's decoder and opens them
        # where they help: started at random, they let z drive the output before the geometry
        # is learned, and the content latents separate classes less reliably.
        with torch.no_grad():
            for layer in [*self.skips, self.out_skip]:
                layer.weight.zero_()

    def forward(
        self, z: torch.Tensor, angle: torch.Tensor | None = None, shift: torch.Tensor | None = None
    ) -> torch.Tensor:
        n = z.shape[0]
        points = self.grid.expand(n, -1, -1)
        if angle is not None:  # R(angle) p = cos(angle) p + sin(angle) J p
            points = (
                torch.cos(angle)[:, None, None] * self.grid
                + torch.sin(angle)[:, None, None] * self.grid_turned
            )
        if shift is not None:
            points = points + shift[:, None, :]
        h = torch.tanh(self.coordinates(points) + self.content(z)[:, None, :])
        for layer, skip in zip(self.hidden, self.skips, strict=True):
            h = torch.tanh(layer(h) + skip(z)[:, None, :])
        out = self.out(h) + self.out_skip(z)[:, None, :]  # N x HW x C
        channels, height, width = self.shape
        return out.transpose(1, 2).reshape(n, channels, height, width)


class _SkipRVAENetwork(LatentNetwork):
    def __init__(self, shape, latent_dim, translation, hidden, decoder_layers, encoder_hidden, coordinate_scale=1.0):
        super().__init__()
        self.n_geometric = 3 if translation else 1
        channels, height, width = shape
        self.encoder = MLPEncoder(channels * height * width, encoder_hidden, self.n_geometric + latent_dim)
        self.decoder = SkipCoordinateDecoder(shape, latent_dim, hidden, decoder_layers, coordinate_scale)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        shift = SHIFT_SCALE * latents[:, 1:3] if self.n_geometric == 3 else None
        return self.decoder(latents[:, self.n_geometric :], angle=latents[:, 0], shift=shift)


class SkipRVAE(RVAE):
    """rVAE with skip connections from the content latents into every decoder layer.

    Hyper-parameters, encoded columns (``[angle, dx, dy, z_1..z_k]``), :meth:`decode` and
    checkpoints work as for :class:`~aexp.models.rvae.RVAE`; only the decoder differs (see the
    module docstring).

    Example:
        >>> m = SkipRVAE(input_shape=(16, 16), latent_dim=2).fit(patches, epochs=20)
        >>> m.encode(patches)[:, 0]           # angle of each patch
    """

    def _build_network(self) -> _SkipRVAENetwork:
        return _SkipRVAENetwork(
            self._patch_shape(),
            self.latent_dim,
            self.translation,
            self.hidden,
            self.decoder_layers,
            self.encoder_hidden,
            self.coordinate_scale,
        )
