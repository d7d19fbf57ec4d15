import math

import numpy as np
import pytest
import torch

from aexp.models._conditional import ConditionalDecoder, ResampledDecoder
from aexp.models.decoders import CoordinateDecoder
from aexp.models.ssvae import upright_patches


def _drawing(image: torch.Tensor, latent_dim: int = 2) -> ResampledDecoder:
    """A ResampledDecoder whose upright patch is ``image`` (C x h x w) for every latent: zero
    last-layer weights, the image as its bias."""
    dec = ResampledDecoder(tuple(image.shape), latent_dim, hidden=4).double()
    last = dec.upright.body[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(image.reshape(-1))
    return dec


def _smooth_image(size: int, seed: int = 0) -> torch.Tensor:
    """A smooth, asymmetric 1 x size x size image (a sum of Gaussian blobs)."""
    g = torch.Generator().manual_seed(seed)
    c = torch.linspace(-1, 1, size, dtype=torch.float64)
    rows, cols = torch.meshgrid(c, c, indexing="ij")
    image = torch.zeros(size, size, dtype=torch.float64)
    for centre in torch.rand(4, 2, generator=g, dtype=torch.float64) - 0.5:
        image += torch.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / 0.1)
    return image[None]


def test_quarter_turn_is_rot90_and_shift_moves_pixels_like_the_coordinate_decoder():
    upright = _smooth_image(9)
    dec = _drawing(upright).requires_grad_(False)
    z = torch.zeros(1, 2, dtype=torch.float64)
    np.testing.assert_allclose(dec(z)[0], upright, atol=1e-12)  # no transform: the upright patch
    turned = dec(z, angle=torch.tensor([math.pi / 2], dtype=torch.float64))[0, 0]
    np.testing.assert_allclose(turned, np.rot90(upright[0].numpy()), atol=1e-9)

    step = 2.0 / (9 - 1)  # one pixel in grid units
    up = dec(z, shift=torch.tensor([[step, 0.0]], dtype=torch.float64))[0, 0]
    right = dec(z, shift=torch.tensor([[0.0, step]], dtype=torch.float64))[0, 0]
    np.testing.assert_allclose(up[:-1], upright[0, 1:], atol=1e-9)  # content moves one row up
    np.testing.assert_allclose(right[:, 1:], upright[0, :, :-1], atol=1e-9)  # one column right


def test_turn_and_shift_match_the_coordinate_decoder_inside_the_patch():
    """Same upright patch, same (angle, shift): the two renderers agree up to the bilinear
    interpolation of a smooth image (pixels near the border may come from outside the patch)."""
    torch.manual_seed(0)
    coordinate = CoordinateDecoder((1, 33, 33), latent_dim=2, hidden=8).double()
    z = torch.randn(3, 2, dtype=torch.float64)
    resampled = _drawing(coordinate(z)[0].detach())
    angle = torch.tensor([0.3, -1.0, 2.5], dtype=torch.float64)
    shift = torch.tensor([[0.1, -0.2], [0.0, 0.15], [-0.1, 0.05]], dtype=torch.float64)
    want = coordinate(z[:1].expand(3, 2), angle=angle, shift=shift).detach()
    got = resampled(z, angle=angle, shift=shift).detach()
    inner = (slice(None), slice(None), slice(9, 24), slice(9, 24))
    assert (want - got)[inner].abs().max() < 0.02 * want.abs().max()


def test_upright_patches_undoes_the_decoders_transform():
    upright = _smooth_image(33, seed=1)
    dec = _drawing(upright)
    angle = torch.tensor([0.5, -0.9], dtype=torch.float64)
    shift = torch.tensor([[0.1, -0.15], [-0.05, 0.1]], dtype=torch.float64)
    moved = dec(torch.zeros(2, 2, dtype=torch.float64), angle=angle, shift=shift).detach()
    back = upright_patches(moved, angle, shift)
    inner = (slice(None), slice(None), slice(10, 23), slice(10, 23))
    error = (back - upright)[inner].abs().max()
    assert error < 0.05 * upright.max() < (moved - upright)[inner].abs().max()


def test_resampled_decoder_takes_gradients_and_an_empty_batch():
    dec = ConditionalDecoder(
        (1, 8, 8), 2, 3, rotation=True, translation=True, hidden=8, layers=1, renderer="resample"
    )
    assert isinstance(dec.render, ResampledDecoder)
    latents = torch.randn(4, 5, requires_grad=True)
    dec(latents, torch.eye(3)[[0, 1, 2, 0]]).square().sum().backward()
    assert latents.grad[:, :3].abs().sum() > 0  # angle and shift get a gradient through grid_sample
    empty = dec(torch.zeros(0, 5, requires_grad=True), torch.zeros(0, 3))
    assert empty.shape == (0, 1, 8, 8)
    empty.sum().backward()


@pytest.mark.parametrize("renderer", ["coordinate", "resample"])
def test_without_geometric_latents_the_renderer_is_a_plain_mlp(renderer):
    dec = ConditionalDecoder(
        (1, 8, 8), 2, 3, rotation=False, translation=False, hidden=8, layers=1, renderer=renderer
    )
    assert type(dec.render).__name__ == "MLPDecoder"
