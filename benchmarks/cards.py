"""Do the models disentangle what they claim? Scores on the cards data (aexp.datasets.cards).

Experiments (each trains on one cards set and scores on the same set's known factors; nothing is
tuned on the scores):

- ``rvae``: rVAE on cards with +-``--rotation`` deg rotation and +-1 deg shear. |circular
  correlation| of the angle latent with the true angle, over all cards (global sign and offset
  allowed) and per suit (each suit's own offset); k-means purity of the content latents
  against the suits. The ``_symmetric`` scores compare the diamond's angle modulo 180 deg (its
  glyph is unchanged by a half turn; see ``symmetric_circular_correlation``), still with one
  offset for all suits; the plain scores are reported next to them.
- ``vae``: the plain VAE on the same cards: k-means purity of its latents.
- ``affine``: affine VAE on the high-shear regimes (+-12 and +-``--rotation`` deg rotation,
  +-20 deg shear): |Pearson correlation| of the shear latent with the true shear angle.
- ``jrvae``: jrVAE (4 classes, no continuous content, Gumbel-softmax with the temperature falling
  from 1 to 0.3) on +-12 deg rotation, +-1 deg shear: purity of its predicted classes against the
  suits (use ``--epochs 100``).

    python benchmarks/cards.py --size 48 --n-per-suit 1000 --epochs 60 --json cards.json
    python benchmarks/cards.py --size 32 --n-per-suit 250 --epochs 60 --rotation 60   # quicker
    python benchmarks/cards.py --size 32 --n-per-suit 250 --epochs 60 --rotation 120 --only rvae \
        --orientation --equivariance 1000 --rotation-prior-warmup 10    # the wide-rotation options

``--orientation``, ``--equivariance`` and ``--rotation-prior-warmup`` set the rVAE and affine
VAE options of the same names (see ``aexp.models.orientation``); by default they are off.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from aexp.datasets import SUIT_SYMMETRY, make_cards
from aexp.models import JRVAE, RVAE, VAE, AffineVAE
from aexp.models.metrics import (
    circular_correlation,
    cluster_purity,
    kmeans_purity,
    symmetric_circular_correlation,
)


def _fit(model, images, args):
    start = time.perf_counter()
    model.fit(images, epochs=args.epochs, seed=args.seed, progress=not args.quiet)
    return time.perf_counter() - start


def _angle_scores(z_angle: np.ndarray, cards) -> dict:
    suits = [cards.label == k for k in range(4)]
    per_suit = [abs(circular_correlation(z_angle[s], cards.angle[s])) for s in suits]
    order = np.asarray(SUIT_SYMMETRY)[cards.label]
    per_suit_symmetric = [
        symmetric_circular_correlation(z_angle[s], cards.angle[s], n) for s, n in zip(suits, SUIT_SYMMETRY)
    ]
    # each suit's mean offset of the latent from the true angle (deg; modulo 180 for the diamond)
    offsets = [
        float(np.degrees(np.angle(np.exp(1j * n * (z_angle[s] - cards.angle[s])).mean()) / n))
        for s, n in zip(suits, SUIT_SYMMETRY)
    ]
    return {
        "angle_circ_global": abs(circular_correlation(z_angle, cards.angle)),
        "angle_circ_global_symmetric": symmetric_circular_correlation(z_angle, cards.angle, order),
        "angle_circ_per_suit": per_suit,
        "angle_circ_per_suit_symmetric": per_suit_symmetric,
        "angle_offset_per_suit_deg": offsets,
    }


def _invariant_options(args) -> dict:
    """Options shared by the rVAE and the affine VAE."""
    return {"orientation": args.orientation, "equivariance": args.equivariance,
            "rotation_prior_warmup": args.rotation_prior_warmup, "rotation_prior": args.rotation_prior}


def rvae_experiment(args) -> dict:
    cards = make_cards(args.n_per_suit, args.rotation, 1.0, size=args.size, seed=args.seed)
    model = RVAE(input_shape=(args.size, args.size), latent_dim=2, **_invariant_options(args))
    seconds = _fit(model, cards.images, args)
    z = model.encode(cards.images)
    return {"rotation_deg": args.rotation, **_angle_scores(z[:, 0], cards),
            "content_purity": kmeans_purity(z[:, 3:], cards.label), "fit_s": seconds}


def vae_experiment(args) -> dict:
    cards = make_cards(args.n_per_suit, args.rotation, 1.0, size=args.size, seed=args.seed)
    model = VAE(input_shape=(args.size, args.size), latent_dim=2)
    seconds = _fit(model, cards.images, args)
    return {"rotation_deg": args.rotation, "purity": kmeans_purity(model.encode(cards.images), cards.label),
            "fit_s": seconds}


def affine_experiment(args) -> dict:
    out = {}
    for rotation in (12.0, args.rotation):
        cards = make_cards(args.n_per_suit, rotation, 20.0, size=args.size, seed=args.seed)
        model = AffineVAE(input_shape=(args.size, args.size), latent_dim=2, **_invariant_options(args))
        seconds = _fit(model, cards.images, args)
        z = model.encode(cards.images)
        shear = z[:, model.latent_names.index("shear")]
        out[f"rotation_{rotation:g}_shear_20"] = {
            "shear_corr": abs(float(np.corrcoef(shear, cards.shear)[0, 1])),
            **_angle_scores(z[:, 0], cards),
            "content_purity": kmeans_purity(z[:, len(model.geometric_names):], cards.label),
            "fit_s": seconds,
        }
    return out


def jrvae_experiment(args) -> dict:
    cards = make_cards(args.n_per_suit, 12.0, 1.0, size=args.size, seed=args.seed)
    # No continuous content: the class is the only way to tell the suits apart in the decoder.
    model = JRVAE(input_shape=(args.size, args.size), latent_dim=0, n_classes=4, discrete="gumbel",
                  temperature=(1.0, 0.3), capacity_epochs=30, noise_std=0.2)
    seconds = _fit(model, cards.images, args)
    predicted = model.predict(cards.images)
    return {"class_purity": cluster_purity(predicted, cards.label),
            "class_counts": np.bincount(predicted, minlength=4).tolist(), "fit_s": seconds}


EXPERIMENTS = {"rvae": rvae_experiment, "vae": vae_experiment, "affine": affine_experiment, "jrvae": jrvae_experiment}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--n-per-suit", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--rotation", type=float, default=120.0, help="high rotation range, +- deg")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default=",".join(EXPERIMENTS), help="comma-separated experiments")
    parser.add_argument("--orientation", action="store_true", help="learned canonical orientation per content")
    parser.add_argument("--equivariance", type=float, default=0.0, help="encoder equivariance weight (0: off)")
    parser.add_argument("--rotation-prior-warmup", type=int, default=0, help="epochs of angle-prior warm-up")
    parser.add_argument("--rotation-prior", type=float, default=math.pi / 3, help="angle prior std (rad)")
    parser.add_argument("--json")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {"args": vars(args)}
    for name in args.only.split(","):
        results[name] = EXPERIMENTS[name](args)
        print(name, json.dumps(results[name], indent=1), flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
