"""The seed's 4D-STEM analysis on the twin: an rVAE trained on measured diffraction patterns.

The 4D-STEM twin (:mod:`simulators.fourdstem`) records a Poisson pattern at every position of a
scan grid; the patterns are binned (``--bin``), put on a log scale and given to
:class:`aexp.models.RVAE`. Its angle latent should follow the lattice rotation (domain wall plus
bending) and its shift latents the pattern's centre of mass (the DPC signal), as in the lecture's
graphene and BiFeO3 examples. Scores against the twin's hidden truth:

- ``angle_circular_correlation``: ``|circular_correlation(angle latent, true rotation)|``;
- ``shift_correlation_x`` / ``_y``: ``|pearson(dy, <kx>)|`` and ``|pearson(dx, <ky>)|`` (the
  rVAE's ``dx`` moves the decoded pattern along its rows, i.e. along ``ky``; ``dy`` along ``kx``);
- ``deflection_correlation_x`` / ``_y``: the same against the rigid shift of the disks, which is
  the CoM less the pull of the Friedel asymmetry of the two polar domains;
- the same for a plain VAE's best latent as the non-invariant reference (``--baseline``).

The defaults are the decoder that draws the disks (``--coordinate-scale 10``) and the shift
equivariance that gives both shift latents a direction (``--shift-equivariance 10``); ``1`` and ``0``
give the plain rVAE of the lecture (docs/fourdstem.md has both).

Usage:
    python benchmarks/fourdstem_rvae.py --seed 0 --grid 24 --epochs 60 --json scores.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from aexp.models import RVAE, VAE, shifts
from aexp.models.metrics import circular_correlation
from simulators.fourdstem import FourDStemSimulator

TWINS: dict[str, dict[str, float]] = {
    "default": {},
    # The lattice turns only with the bend of the foil (smoothly, 60 deg across the field); the
    # domains still flip the polarity (the Friedel pair's intensities) and the wall's bound charge
    # still deflects the beam. Rotation and domain contrast are then independent, so a latent that
    # follows the rotation cannot be following the domain instead.
    "bending": {"wall_rotation_deg": 0.0, "bend_rotation_deg": 60.0},
    # Friedel's law holds: the (+-1, 0) pair's intensities do not flip with the polar domain, so
    # the pattern's centre of mass moves with the disks' rigid shift (the deflection) and nothing
    # else. On the default twin up to half of the CoM along one axis is that pair's pull, which no
    # translation latent can follow (docs/fourdstem.md, "ceiling").
    "friedel": {"friedel_asymmetry": 0.0},
}
"""Settings of the twin the benchmark runs on (``--twin``): options of :class:`FourDStemOptions`."""


@dataclass
class PatternSet:
    """Measured patterns on a scan grid and the truth at each place.

    Attributes:
        patterns: ``N x h x w`` float32, binned, ``log1p`` of counts scaled to [0, 1].
        positions: ``N x 2`` (x, y) m, row-major over ``grid x grid``.
        rotation: ``N`` true lattice rotation (rad).
        com: ``N x 2`` true centre of mass (kx, ky) of the noiseless pattern (mrad).
        deflection: ``N x 2`` true rigid shift of the pattern (kx, ky) (mrad): the CoM without the
            pull of the polarity's Friedel asymmetry.
        grid: points per side.
        noise_std: RMS shot noise of ``patterns`` (same units), from :func:`preprocessed_noise_std`.
        pixel_mrad: size of a pixel of ``patterns`` (after binning), mrad.
        polarity: ``N`` true polarity of the domain, in [-1, 1] (the Friedel pair's asymmetry).
    """

    patterns: np.ndarray
    positions: np.ndarray
    rotation: np.ndarray
    com: np.ndarray
    deflection: np.ndarray
    grid: int
    noise_std: float
    pixel_mrad: float
    polarity: np.ndarray


def measure_grid(
    seed: int, grid: int, bin_px: int, smooth_px: float = 1.0, options: dict | None = None
) -> PatternSet:
    """Record one pattern at each of ``grid x grid`` positions spread over the twin's field; bin
    the detector by ``bin_px`` and blur by ``smooth_px`` (binned pixels), which gives the decoder
    smooth disk edges to turn and shift."""
    sim = FourDStemSimulator(seed=seed, **(options or {}))
    n = sim.options.survey_pixels
    idx = np.linspace(0, n - 1, grid).round()
    rc = np.stack(np.meshgrid(idx, idx, indexing="ij"), -1).reshape(-1, 2)
    positions = sim.transform.to_instrument(rc)
    raw = np.stack([sim.measure_pattern(tuple(p))[0] for p in positions])
    scaled, noise = preprocess(raw, bin_px, smooth_px)
    truth = sim.hidden_features(positions)
    com = np.stack([truth["com_x_mrad"], truth["com_y_mrad"]], 1)
    deflection = np.stack([truth["deflection_x_mrad"], truth["deflection_y_mrad"]], 1)
    return PatternSet(scaled, positions, truth["rotation_rad"], com, deflection, grid, noise,
                      sim.options.detector_pixel_mrad * bin_px, truth["polarity"])


def preprocess(raw: np.ndarray, bin_px: int, smooth_px: float) -> tuple[np.ndarray, float]:
    """Counts ``N x ky x kx`` -> binned by ``bin_px``, ``log1p``, blurred by ``smooth_px`` (binned
    pixels), scaled to a peak of 1 (float32), and the RMS shot noise of the result."""
    d = raw.shape[1] // bin_px * bin_px
    binned = raw[:, :d, :d].reshape(len(raw), d // bin_px, bin_px, d // bin_px, bin_px).sum((2, 4))
    scaled = ndimage.gaussian_filter(np.log1p(binned), (0, smooth_px, smooth_px)) if smooth_px > 0 else np.log1p(binned)
    peak = scaled.max()
    return (scaled / peak).astype(np.float32), preprocessed_noise_std(binned, smooth_px) / peak


def shifted_copies(
    seed: int, n: int, spread_mrad: tuple[float, float], bin_px: int = 2, smooth_px: float = 1.0,
    rotation_rad: float = 0.2,
) -> PatternSet:
    """``n`` patterns of one place of the twin (its field's centre) under a known rigid shift and
    nothing else: the beam deflection drawn ``N(0, spread_mrad^2)`` per axis (kx, ky),
    independently, the lattice turned by a uniform angle in ``+-rotation_rad``; polarity, strain,
    disorder and thickness those of that place. Poisson counts at the twin's dose, preprocessed as
    :func:`measure_grid`'s. ``com`` and ``deflection`` are both the drawn shift; ``positions`` are
    all the centre and ``grid`` is ``n`` (the maps do not apply)."""
    sim = FourDStemSimulator(seed=seed)
    rng = np.random.default_rng(seed)
    centre = sim.transform.to_instrument(np.array([[(sim.options.survey_pixels - 1) / 2] * 2]))
    positions = np.repeat(centre, n, axis=0)
    physics = sim.local_physics(positions)
    shift = rng.normal(size=(n, 2)) * np.asarray(spread_mrad, dtype=float)
    physics["deflection_x_mrad"], physics["deflection_y_mrad"] = shift[:, 0], shift[:, 1]
    physics["rotation_rad"] = rng.uniform(-rotation_rad, rotation_rad, n)
    expected = sim._render(physics)  # the twin's own renderer, with the physics set here
    scaled, noise = preprocess(rng.poisson(expected).astype(float), bin_px, smooth_px)
    return PatternSet(scaled, positions, physics["rotation_rad"], shift, shift, n, noise,
                      sim.options.detector_pixel_mrad * bin_px, physics["polarity"])


def preprocessed_noise_std(counts: np.ndarray, smooth_px: float) -> float:
    """RMS shot noise of ``gaussian_filter(log1p(counts), smooth_px)`` for Poisson ``counts``
    (``N x h x w``), from the counts alone: ``var log1p(n) ~ n / (1 + n)^2`` (delta method), and
    the blur is a linear map ``F`` of the pixels, so the variances map by ``F^2`` (elementwise;
    ``F`` is built from the filter's response to each pixel, so its reflecting edges are exact)."""
    var = (counts / (1.0 + counts) ** 2).reshape(len(counts), -1)
    if smooth_px > 0:
        h, w = counts.shape[1:]
        impulses = np.eye(h * w).reshape(h * w, h, w)
        response = ndimage.gaussian_filter(impulses, (0, smooth_px, smooth_px)).reshape(h * w, -1)
        var = var @ response**2  # response[j, i]: weight of input pixel j in output pixel i
    return float(np.sqrt(var.mean()))


@dataclass
class Scores:
    """The rVAE against the truth. Beyond the correlations of one latent with one truth:

    - ``shift_multiple_correlation_x`` / ``_y``: the multiple correlation of the CoM along kx / ky
      with both shift latents (the best linear combination of ``dx, dy``), which does not depend
      on how the latent frame is turned (the angle latent's zero is arbitrary, and the shift is
      applied in that frame);
    - ``ceiling_x`` / ``_y``: ``|pearson(rigid shift of the disks, CoM)|``, what a latent that
      followed the rigid shift exactly would score against the CoM;
    - ``shift_rank``: the smaller over the larger singular value of the least-squares linear map
      from the rigid shift (kx, ky) to ``(dx, dy)``: 1 when the two latents follow two independent
      directions of the shift, 0 when they follow only one;
    - ``displacement_*``: the shift latents read as what the decoder does with them, the
      displacement of the decoded pattern on the detector, ``-R(angle)^T 0.1 (dx, dy)`` turned into
      (kx, ky) mrad by :func:`latent_displacement`; ``displacement_correlation_x`` / ``_y`` against
      the CoM and ``displacement_deflection_correlation_x`` / ``_y`` against the rigid shift, per
      axis, and ``displacement_slope_x`` / ``_y``, the least-squares slope of the displacement on
      the rigid shift (1 if the latents measure the shift in its own units);
    - ``centred_*``: the same for where the template's central beam lands
      (:func:`template_centre`), which turning the template does not move;
    - ``deflection_multiple_correlation_x`` / ``_y``: as ``shift_multiple_correlation`` against the
      rigid shift of the disks;
    - ``reconstruction_rms`` against ``noise_rms``: how far the decoded patterns are from the
      measured ones, against the shot noise of the patterns (``PatternSet.noise_std``).
    """

    angle_circular_correlation: float
    shift_correlation_x: float
    shift_correlation_y: float
    deflection_correlation_x: float
    deflection_correlation_y: float
    shift_multiple_correlation_x: float
    shift_multiple_correlation_y: float
    ceiling_x: float
    ceiling_y: float
    shift_rank: float
    deflection_multiple_correlation_x: float
    deflection_multiple_correlation_y: float
    displacement_correlation_x: float
    displacement_correlation_y: float
    displacement_deflection_correlation_x: float
    displacement_deflection_correlation_y: float
    displacement_slope_x: float
    displacement_slope_y: float
    centred_deflection_correlation_x: float
    centred_deflection_correlation_y: float
    centred_correlation_x: float
    centred_correlation_y: float
    centred_slope_x: float
    centred_slope_y: float
    reconstruction_rms: float
    noise_rms: float
    seconds: float


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(abs(np.corrcoef(a, b)[0, 1]))


def _multiple_correlation(y: np.ndarray, x: np.ndarray) -> float:
    """Correlation of ``y`` (``N``) with its least-squares fit from the columns of ``x`` (``N x k``)."""
    design = np.c_[np.ones(len(y)), x]
    fit = design @ np.linalg.lstsq(design, y, rcond=None)[0]
    return _pearson(fit, y)


def _shift_rank(deflection: np.ndarray, shifts: np.ndarray) -> float:
    """Smaller over larger singular value of the linear map ``deflection (N x 2) -> shifts (N x 2)``."""
    design = np.c_[np.ones(len(shifts)), deflection]
    sv = np.linalg.svd(np.linalg.lstsq(design, shifts, rcond=None)[0][1:], compute_uv=False)
    return float(sv[-1] / sv[0]) if sv[0] > 0 else 0.0


def latent_displacement(
    z: np.ndarray, shape: tuple[int, int], pixel_mrad: float, centre: np.ndarray | None = None
) -> np.ndarray:
    """Where the decoded pattern's point ``centre`` of the template (grid units, or the patch centre)
    lands, ``N x 2`` (kx, ky) mrad from the patch centre, for the rVAE's latents ``z`` (``N x (3 +
    k)``: angle, dx, dy, content) and patterns of ``shape`` (ky, kx) pixels of ``pixel_mrad``
    (:func:`aexp.models.shifts.latent_displacement`: rows are ky, columns kx)."""
    latents = torch.from_numpy(np.asarray(z, dtype=np.float32))
    where = None if centre is None else torch.as_tensor(centre, dtype=torch.float32)
    rows_cols = shifts.latent_displacement(latents, ["angle", "dx", "dy"], shape, where)
    return rows_cols.numpy()[:, ::-1].astype(float) * pixel_mrad


def template_centre(model: RVAE, z: np.ndarray, window: int = 2) -> np.ndarray:
    """Where the central beam sits in the decoder's template: the centroid, above the median, of
    the ``2 window + 1`` pixels square around the brightest pixel of the pattern decoded from the
    mean content latents with zero angle and shift; ``2`` grid units ``(x, y)`` (x down the rows,
    y right to left)."""
    still = z.mean(0, keepdims=True).copy()
    still[:, :3] = 0
    template = model.decode(still)[0]  # h x w (one channel)
    h, w = template.shape
    r, c = np.unravel_index(np.argmax(template), template.shape)
    r0, r1, c0, c1 = max(r - window, 0), min(r + window + 1, h), max(c - window, 0), min(c + window + 1, w)
    weight = np.clip(template[r0:r1, c0:c1] - np.median(template), 0, None)
    rows, cols = np.mgrid[r0:r1, c0:c1]
    row, col = (weight * rows).sum() / weight.sum(), (weight * cols).sum() / weight.sum()
    return np.array([2 * row / (h - 1) - 1, 1 - 2 * col / (w - 1)])


def _slope(y: np.ndarray, x: np.ndarray) -> float:
    """Least-squares slope of ``y`` on ``x`` (both ``N``)."""
    xc = x - x.mean()
    return float(xc @ (y - y.mean()) / (xc @ xc))


def _r2(y: np.ndarray, x: np.ndarray) -> float:
    """Fraction of the variance of ``y`` (``N``) explained by a least-squares fit from ``x`` (``N x k``)."""
    if not y.var() > 0:
        return float("nan")  # nothing to explain (a CoM with no pull along that axis)
    design = np.c_[np.ones(len(y)), x]
    residual = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    return float(1.0 - residual.var() / y.var())


def com_decomposition(data: PatternSet, z: np.ndarray) -> dict[str, float]:
    """What the CoM along each axis is made of, and what the shift latents follow: fractions of
    variance (R^2) of the CoM explained by the rigid shift, by the polarity, by both; of the rigid
    shift and of the pull (CoM - rigid shift) explained by the shift latents ``z[:, 1:3]``; of the
    rigid shift by the shift latents and the polarity; of the polarity by all latents."""
    shifts, polarity = z[:, 1:3], data.polarity
    out: dict[str, float] = {}
    for i, axis in enumerate("xy"):
        com, rigid = data.com[:, i], data.deflection[:, i]
        out[f"com_{axis}_by_rigid"] = _r2(com, rigid[:, None])
        out[f"com_{axis}_by_polarity"] = _r2(com, polarity[:, None])
        out[f"com_{axis}_by_rigid_and_polarity"] = _r2(com, np.c_[rigid, polarity])
        pull = com - rigid
        out[f"pull_{axis}_polarity_correlation"] = _pearson(pull, polarity) if pull.std() > 0 else float("nan")
        out[f"rigid_{axis}_by_shift_latents"] = _r2(rigid, shifts)
        out[f"pull_{axis}_by_shift_latents"] = _r2(pull, shifts)
        out[f"rigid_{axis}_by_shift_latents_and_polarity"] = _r2(rigid, np.c_[shifts, polarity])
    out["polarity_by_all_latents"] = _r2(polarity, z)
    return out


def fit_rvae(
    data: PatternSet, epochs: int, seed: int, hidden: int = 32, noise_std: float = 0.1,
    translation_prior: float = 0.1, coordinate_scale: float = 1.0, shift_equivariance: float = 0.0,
    refine: int = 0,
) -> tuple[RVAE, np.ndarray, Scores]:
    """Train the rVAE on the patterns; its encoding ``N x 5`` and its scores. ``noise_std`` is the
    width of the Gaussian likelihood (the patterns' own shot noise is ``data.noise_std``);
    ``refine`` steps take each pattern's latents on to the most probable ones under the trained
    decoder (``RVAE.encode(refine=...)``)."""
    start = time.perf_counter()
    model = RVAE(input_shape=data.patterns.shape[1:], latent_dim=2, hidden=hidden, rotation_prior=0.5, noise_std=noise_std,
                 translation_prior=translation_prior, coordinate_scale=coordinate_scale,
                 shift_equivariance=shift_equivariance)
    model.fit(data.patterns, epochs=epochs, batch_size=64, lr=3e-3, seed=seed, progress=False)
    z = model.encode(data.patterns, refine=refine)
    return model, z, score_latents(model, z, data, time.perf_counter() - start)


def score_latents(model: RVAE, z: np.ndarray, data: PatternSet, seconds: float) -> Scores:
    """The latents ``z`` (``N x 5``) of the patterns against the twin's truth."""
    moved = latent_displacement(z, data.patterns.shape[1:], data.pixel_mrad)
    centred = latent_displacement(z, data.patterns.shape[1:], data.pixel_mrad, template_centre(model, z))
    return Scores(
        angle_circular_correlation=abs(circular_correlation(z[:, 0], data.rotation)),
        shift_correlation_x=_pearson(z[:, 2], data.com[:, 0]),  # dy: along the columns, kx
        shift_correlation_y=_pearson(z[:, 1], data.com[:, 1]),  # dx: along the rows, ky
        deflection_correlation_x=_pearson(z[:, 2], data.deflection[:, 0]),
        deflection_correlation_y=_pearson(z[:, 1], data.deflection[:, 1]),
        shift_multiple_correlation_x=_multiple_correlation(data.com[:, 0], z[:, 1:3]),
        shift_multiple_correlation_y=_multiple_correlation(data.com[:, 1], z[:, 1:3]),
        ceiling_x=_pearson(data.deflection[:, 0], data.com[:, 0]),
        ceiling_y=_pearson(data.deflection[:, 1], data.com[:, 1]),
        shift_rank=_shift_rank(data.deflection, z[:, 1:3]),
        deflection_multiple_correlation_x=_multiple_correlation(data.deflection[:, 0], z[:, 1:3]),
        deflection_multiple_correlation_y=_multiple_correlation(data.deflection[:, 1], z[:, 1:3]),
        displacement_correlation_x=_pearson(moved[:, 0], data.com[:, 0]),
        displacement_correlation_y=_pearson(moved[:, 1], data.com[:, 1]),
        displacement_deflection_correlation_x=_pearson(moved[:, 0], data.deflection[:, 0]),
        displacement_deflection_correlation_y=_pearson(moved[:, 1], data.deflection[:, 1]),
        displacement_slope_x=_slope(moved[:, 0], data.deflection[:, 0]),
        displacement_slope_y=_slope(moved[:, 1], data.deflection[:, 1]),
        centred_deflection_correlation_x=_pearson(centred[:, 0], data.deflection[:, 0]),
        centred_deflection_correlation_y=_pearson(centred[:, 1], data.deflection[:, 1]),
        centred_correlation_x=_pearson(centred[:, 0], data.com[:, 0]),
        centred_correlation_y=_pearson(centred[:, 1], data.com[:, 1]),
        centred_slope_x=_slope(centred[:, 0], data.deflection[:, 0]),
        centred_slope_y=_slope(centred[:, 1], data.deflection[:, 1]),
        reconstruction_rms=float(np.sqrt(np.mean((model.decode(z).reshape(data.patterns.shape) - data.patterns) ** 2))),
        noise_rms=data.noise_std,
        seconds=seconds,
    )


def fit_vae_baseline(
    data: PatternSet, epochs: int, seed: int, noise_std: float = 0.1, coordinate_scale: float = 1.0
) -> dict[str, float]:
    """A plain VAE with as many latents as the rVAE (5) and the same decoder and likelihood, but
    no geometric latents: the best any of its latents does on each truth. For the rotation a
    latent gets the better of its circular correlation and its Pearson correlation (a latent is
    not an angle; the rotations here span far less than a turn, so both are fair)."""
    model = VAE(input_shape=data.patterns.shape[1:], latent_dim=5, noise_std=noise_std, coordinate_scale=coordinate_scale)
    model.fit(data.patterns, epochs=epochs, batch_size=64, lr=3e-3, seed=seed, progress=False)
    z = model.encode(data.patterns)
    return {
        "angle_circular_correlation": max(
            max(abs(circular_correlation(c, data.rotation)), _pearson(c, data.rotation)) for c in z.T
        ),
        "shift_correlation_x": max(_pearson(c, data.com[:, 0]) for c in z.T),
        "shift_correlation_y": max(_pearson(c, data.com[:, 1]) for c in z.T),
    }


def latent_maps(data: PatternSet, z: np.ndarray, path: Path) -> None:
    """Maps over the measured positions: true rotation and CoM, and the rVAE's angle, dy, dx."""
    from matplotlib.figure import Figure

    g = data.grid
    panels = [
        ("true rotation (deg)", np.degrees(data.rotation)), ("rVAE angle", z[:, 0]),
        ("true CoM kx (mrad)", data.com[:, 0]), ("rVAE dy", z[:, 2]),
        ("true CoM ky (mrad)", data.com[:, 1]), ("rVAE dx", z[:, 1]),
    ]
    fig = Figure(figsize=(10, 6.4))
    for i, (title, values) in enumerate(panels):
        ax = fig.add_subplot(3, 2, [1, 2, 3, 4, 5, 6][i])
        im = ax.imshow(values.reshape(g, g), cmap="RdBu_r")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def reconstruction_figure(data: PatternSet, model: RVAE, z: np.ndarray, path: Path, count: int = 3) -> None:
    """Measured, decoded and their difference for the first ``count`` patterns: what the decoder
    draws, against the shot noise (``data.noise_std``)."""
    from matplotlib.figure import Figure

    decoded = model.decode(z[:count]).reshape(count, *data.patterns.shape[1:])
    fig = Figure(figsize=(7.5, 2.4 * count))
    for i in range(count):
        diff = decoded[i] - data.patterns[i]
        for j, (title, image, cmap) in enumerate([("measured", data.patterns[i], "viridis"),
                                                  ("decoded", decoded[i], "viridis"),
                                                  ("decoded - measured", diff, "RdBu_r")]):
            ax = fig.add_subplot(count, 3, 3 * i + j + 1)
            im = ax.imshow(image, cmap=cmap)
            ax.set_title(title if j < 2 else f"{title} (rms {np.sqrt(np.mean(diff**2)):.3f})", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"shot noise of the patterns: rms {data.noise_std:.3f}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--twin", choices=sorted(TWINS), default="default", help="setting of the twin (TWINS)")
    ap.add_argument("--grid", type=int, default=24, help="patterns per side of the scan grid")
    ap.add_argument("--shifted-copies", type=str, default=None, metavar="KX,KY",
                    help="instead of the scan: grid^2 copies of one pattern under random shifts of these "
                         "spreads (mrad), nothing else changing (shifted_copies)")
    ap.add_argument("--bin", type=int, default=2, help="detector binning before training")
    ap.add_argument("--smooth", type=float, default=1.0, help="Gaussian blur of the binned patterns (px)")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--hidden", type=int, default=32, help="width of the rVAE's decoder")
    ap.add_argument("--coordinate-scale", type=float, default=10.0,
                    help="factor on the decoders' initial coordinate weights (10 lets them draw the disks; "
                         "1: the plain decoder)")
    ap.add_argument("--shift-equivariance", type=float, default=10.0,
                    help="weight of the rVAE's shift-equivariance penalty (aexp.models.shifts; 0: off, the "
                         "plain rVAE, whose shift latents learn one direction here)")
    ap.add_argument("--noise-std", type=float, default=0.1,
                    help="width of the Gaussian likelihood (the JSON reports the patterns' own shot noise)")
    ap.add_argument("--refine", type=int, default=0, metavar="STEPS",
                    help="score the most probable latents under the decoder, found in STEPS Adam steps from the encoder's")
    ap.add_argument("--baseline", action="store_true", help="also train a plain VAE as the reference")
    ap.add_argument("--figure", type=Path, default=None, help="PNG of the latent maps")
    ap.add_argument("--reconstructions", type=Path, default=None, help="PNG of measured and decoded patterns")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--latents", type=Path, default=None, help=".npy of the rVAE's encoding (N x 5, row-major grid)")
    args = ap.parse_args()
    if args.shifted_copies:
        spread = tuple(float(v) for v in args.shifted_copies.split(","))
        if len(spread) != 2:
            ap.error(f"--shifted-copies takes two spreads KX,KY in mrad; got {args.shifted_copies!r}")
        data = shifted_copies(args.seed, args.grid**2, (spread[0], spread[1]), args.bin, args.smooth)
    else:
        data = measure_grid(args.seed, args.grid, args.bin, args.smooth, TWINS[args.twin])
    model, z, scores = fit_rvae(data, args.epochs, args.seed, args.hidden, args.noise_std,
                                coordinate_scale=args.coordinate_scale, shift_equivariance=args.shift_equivariance,
                                refine=args.refine)
    result = {"seed": args.seed, "twin": args.twin, "grid": args.grid, "bin": args.bin, "smooth": args.smooth, "epochs": args.epochs, "hidden": args.hidden, "coordinate_scale": args.coordinate_scale,
              "shift_equivariance": args.shift_equivariance, "refine": args.refine,
              "pattern_shape": list(data.patterns.shape[1:]), "rvae": asdict(scores)}
    if args.refine:  # the same model's encoder alone, for comparison
        result["rvae_encoder"] = asdict(score_latents(model, model.encode(data.patterns), data, float("nan")))
    if args.baseline:
        result["vae"] = fit_vae_baseline(data, args.epochs, args.seed, args.noise_std, args.coordinate_scale)
    if args.shifted_copies:
        result["shifted_copies_mrad"] = list(spread)
    else:
        result["com_decomposition"] = com_decomposition(data, z)
    if args.figure and not args.shifted_copies:
        latent_maps(data, z, args.figure)
    if args.reconstructions:
        reconstruction_figure(data, model, z, args.reconstructions)
    if args.latents:
        np.save(args.latents, z)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
