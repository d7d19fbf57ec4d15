"""Small survey pictures of the simulated twins for the README (``docs/*.png``).

Usage:
    python benchmarks/survey_pictures.py [--out docs] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from aexp.config import load_config  # noqa: E402
from aexp.patches import make_candidates  # noqa: E402
from simulators.ferroelectric import FerroelectricSimulator  # noqa: E402
from simulators.lattice import LatticeSimulator  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def lattice_picture(seed: int, out: Path) -> Path:
    """HAADF survey (a 128 px crop) with the found atoms and the true top-1 % edge onsets."""
    cfg = load_config(ROOT / "configs" / "lattice-dkl.yaml")
    sim = LatticeSimulator(seed=seed, **cfg.instrument.options)
    survey = sim.survey()
    cands = make_candidates(survey, cfg.candidates)
    onset = sim.truth(cands.positions, cfg.target.build())
    top = onset >= np.quantile(onset, 0.99)
    crop = 128
    keep = (cands.pixels < crop).all(axis=1)
    fig, axes = plt.subplots(1, 2, figsize=(7.2, 3.6), constrained_layout=True)
    axes[0].imshow(survey.image[0, :crop, :crop], cmap="gray")
    axes[0].set_title(f"HAADF survey (crop {crop} px, 0.3 A/px)", fontsize=8)
    axes[1].imshow(survey.image[0, :crop, :crop], cmap="gray", alpha=0.5)
    sc = axes[1].scatter(cands.pixels[keep, 1], cands.pixels[keep, 0], c=onset[keep], s=6, cmap="magma")
    axes[1].scatter(cands.pixels[keep & top, 1], cands.pixels[keep & top, 0], s=40, facecolors="none",
                    edgecolors="cyan", linewidths=0.8)
    axes[1].set_title("found atoms: true edge onset (eV); circles: top 1 %", fontsize=8)
    fig.colorbar(sc, ax=axes[1], shrink=0.8)
    for ax in axes:
        ax.set_axis_off()
    path = out / "lattice-survey.png"
    fig.savefig(path, dpi=60)
    plt.close(fig)
    return path


def ferroelectric_picture(seed: int, out: Path) -> Path:
    """Amplitude and phase survey and the true loop-area map."""
    cfg = load_config(ROOT / "configs" / "ferroelectric-dkl.yaml")
    sim = FerroelectricSimulator(seed=seed, **cfg.instrument.options)
    survey = sim.survey()
    cands = make_candidates(survey, cfg.candidates)
    area = sim.truth(cands.positions, cfg.target.build()).reshape(cands.grid_shape)
    fig, axes = plt.subplots(1, 3, figsize=(9.0, 3.2), constrained_layout=True)
    for ax, img, title in ((axes[0], survey.image[0], "amplitude (a.u.)"), (axes[1], survey.image[1], "phase (deg)")):
        im = ax.imshow(img, cmap="gray" if ax is axes[0] else "coolwarm")
        fig.colorbar(im, ax=ax, shrink=0.8)
        ax.set_title(title, fontsize=8)
    im = axes[2].imshow(area, cmap="magma")
    fig.colorbar(im, ax=axes[2], shrink=0.8)
    axes[2].set_title("true loop area (a.u. V) on the candidate grid", fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    path = out / "ferroelectric-survey.png"
    fig.savefig(path, dpi=60)
    plt.close(fig)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for path in (lattice_picture(args.seed, args.out), ferroelectric_picture(args.seed, args.out)):
        print(f"{path}: {path.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
