import math

import numpy as np
import pytest
import torch

from aexp.models.decoders import CoordinateDecoder, coordinate_grid


def _decoder(shape=(2, 7, 7), latent_dim=3, hidden=8, layers=2, seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CoordinateDecoder(shape, latent_dim, hidden, layers).double()


def _reference(dec: CoordinateDecoder, z, angle, shift):
    """The textbook coordinate decoder: turn and move the grid, then run the MLP per pixel."""
    c, s = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # N x 2 x 2
    grid = dec.grid.to(z.dtype)
    coords = torch.einsum("nij,pj->npi", rot, grid) + shift[:, None, :]
    h = torch.tanh(dec.coordinates(coords) + dec.content(z)[:, None, :])
    for layer in dec.hidden:
        h = torch.tanh(layer(h))
    out = dec.out(h)  # N x P x C
    channels, height, width = dec.shape
    return out.permute(0, 2, 1).reshape(len(z), channels, height, width)


def test_grid_convention():
    grid = coordinate_grid(3, 4).view(3, 4, 2)
    assert torch.allclose(grid[:, 0, 0], torch.tensor([-1.0, 0.0, 1.0]))  # x runs down the rows
    assert torch.allclose(grid[0, :, 1], torch.linspace(1.0, -1.0, 4))  # y falls across columns
    assert torch.all(grid[:, :, 1] == grid[0, :, 1])


def test_matches_reference_decoder():
    dec = _decoder()
    g = torch.Generator().manual_seed(1)
    z = torch.randn(5, 3, generator=g, dtype=torch.float64)
    angle = torch.randn(5, generator=g, dtype=torch.float64) * 2
    shift = torch.randn(5, 2, generator=g, dtype=torch.float64) * 0.2
    out = dec(z, angle=angle, shift=shift)
    assert out.shape == (5, 2, 7, 7)
    torch.testing.assert_close(out, _reference(dec, z, angle, shift))


def test_gradients_are_exact():
    dec = _decoder(shape=(2, 4, 5), hidden=4)
    g = torch.Generator().manual_seed(2)
    z = torch.randn(3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    angle = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    shift = torch.randn(3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z, a, s: dec(z, angle=a, shift=s), (z, angle, shift))

    weights = torch.randn(3, 2, 4, 5, generator=g, dtype=torch.float64)
    params = tuple(dec.parameters())
    fused = torch.autograd.grad((dec(z, angle=angle, shift=shift) * weights).sum(), params)
    reference = torch.autograd.grad((_reference(dec, z, angle, shift) * weights).sum(), params)
    for a, b in zip(fused, reference):
        torch.testing.assert_close(a, b)


def test_quarter_turn_is_rot90_and_shift_moves_pixels():
    dec = _decoder(shape=(1, 9, 9), layers=1)
    z = torch.randn(1, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    upright = dec(z)[0, 0].detach().numpy()
    turned = dec(z, angle=torch.tensor([math.pi / 2], dtype=torch.float64))[0, 0].detach().numpy()
    np.testing.assert_allclose(turned, np.rot90(upright), atol=1e-9)  # counter-clockwise as shown

    step = 2.0 / (9 - 1)  # one pixel in grid units
    up = dec(z, shift=torch.tensor([[step, 0.0]], dtype=torch.float64))[0, 0].detach().numpy()
    right = dec(z, shift=torch.tensor([[0.0, step]], dtype=torch.float64))[0, 0].detach().numpy()
    np.testing.assert_allclose(up[:-1], upright[1:], atol=1e-9)  # content moves one row up
    np.testing.assert_allclose(right[:, 1:], upright[:, :-1], atol=1e-9)  # one column right


@pytest.mark.parametrize("layers", [0, 1])
def test_defaults_without_angle_or_shift(layers):
    dec = _decoder(layers=layers)
    z = torch.randn(4, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    zeros = torch.zeros(4, dtype=torch.float64)
    torch.testing.assert_close(dec(z), dec(z, angle=zeros, shift=torch.zeros(4, 2, dtype=torch.float64)))


def _rotation(angle):
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.stack([torch.stack([c, -s], 1), torch.stack([s, c], 1)], 1)


def test_matrix_path_equals_rotation_path_and_has_exact_gradients():
    torch.manual_seed(0)
    dec = CoordinateDecoder((2, 9, 7), latent_dim=3, hidden=8, layers=1).double()
    z, angle = torch.randn(4, 3, dtype=torch.double), torch.randn(4, dtype=torch.double)
    shift = 0.1 * torch.randn(4, 2, dtype=torch.double)
    by_angle = dec(z, angle=angle, shift=shift)
    by_matrix = dec(z, shift=shift, matrix=_rotation(angle))
    torch.testing.assert_close(by_matrix, by_angle)
    matrix = torch.randn(4, 2, 2, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda m, zz: dec(zz, shift=shift, matrix=m), (matrix, z.requires_grad_()))


def test_angle_and_matrix_together_are_refused():
    dec = CoordinateDecoder((1, 5, 5), latent_dim=1, hidden=4)
    with pytest.raises(ValueError, match="angle or matrix"):
        dec(torch.zeros(1, 1), angle=torch.zeros(1), matrix=torch.eye(2).expand(1, 2, 2))


@pytest.mark.parametrize("layers", [0, 2])
@pytest.mark.parametrize("path", ["angle", "matrix", "default"])
def test_empty_batch_runs_forward_and_backward(layers, path):
    """A batch of N = 0 (e.g. no unlabelled patch in a semi-supervised batch) decodes to an empty
    patch stack and adds nothing to any gradient."""
    dec = _decoder(shape=(2, 5, 4), hidden=4, layers=layers)
    g = torch.Generator().manual_seed(5)

    def inputs(n):
        z = torch.randn(n, 3, generator=g, dtype=torch.float64, requires_grad=True)
        extra = {}
        if path == "angle":
            extra["angle"] = torch.randn(n, generator=g, dtype=torch.float64, requires_grad=True)
            extra["shift"] = torch.randn(n, 2, generator=g, dtype=torch.float64, requires_grad=True)
        elif path == "matrix":
            extra["matrix"] = torch.randn(n, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)
        return z, extra

    z0, extra0 = inputs(0)
    empty = dec(z0, **extra0)
    assert empty.shape == (0, 2, 5, 4)
    z, extra = inputs(3)
    params = tuple(dec.parameters())
    alone = torch.autograd.grad(dec(z, **extra).square().sum(), params)
    leaves = (z0, *extra0.values())
    both = torch.autograd.grad(
        dec(z, **extra).square().sum() + dec(z0, **extra0).square().sum(), params + leaves
    )
    for a, b in zip(alone, both[: len(params)]):
        torch.testing.assert_close(b, a)
    for leaf, grad in zip(leaves, both[len(params) :]):
        assert grad.shape == leaf.shape


def test_coordinate_scale_multiplies_only_the_initial_coordinate_weights():
    torch.manual_seed(3)
    plain = CoordinateDecoder((1, 8, 8), latent_dim=2, hidden=16)
    torch.manual_seed(3)
    sharp = CoordinateDecoder((1, 8, 8), latent_dim=2, hidden=16, coordinate_scale=10.0)
    torch.testing.assert_close(sharp.coordinates.weight, 10.0 * plain.coordinates.weight)
    torch.testing.assert_close(sharp.coordinates.bias, plain.coordinates.bias)
    torch.testing.assert_close(sharp.content.weight, plain.content.weight)


def test_rvae_passes_coordinate_scale_to_its_decoder_and_checks_it():
    from aexp.models import RVAE

    patches = np.random.default_rng(0).random((8, 8, 8)).astype(np.float32)
    plain = RVAE(input_shape=(8, 8), hidden=8).fit(patches, epochs=1, progress=False)
    sharp = RVAE(input_shape=(8, 8), hidden=8, coordinate_scale=10.0)
    assert sharp.get_params()["coordinate_scale"] == 10.0
    network = sharp._new_network(seed=0)
    torch.testing.assert_close(network.decoder.coordinates.weight,
                               10.0 * plain._new_network(seed=0).decoder.coordinates.weight)
    with pytest.raises(ValueError, match="coordinate_scale"):
        RVAE(input_shape=(8, 8), coordinate_scale=0.0).fit(patches, epochs=1, progress=False)
