"""ssVAE on the cards data's public semi-supervised split: suit accuracy on the validation set.

The split (:func:`aexp.datasets.cards.semi_supervised_split`): labelled cards with +-4 deg rotation,
+-15 deg shear and scale 1-1.3 (200 per suit); unlabelled cards with +-60 deg rotation and shift
0.1 (3,000 per suit); validation cards drawn like the unlabelled ones from another seed (1,000 per
suit). The model trains on the labelled and the unlabelled sets (the latter's labels are never
shown to it) and is scored once, at the end, on the validation set: nothing is chosen by
validation accuracy.

For context the same model is also trained on the labelled cards alone (``--baseline``): the
difference is what the unlabelled cards contribute.

    python benchmarks/ssvae_cards.py --rotation --renderer resample --align-classifier \
        --classifier conv --classifier-downsample 2 --epochs 20 --threads 1 --baseline
    python benchmarks/ssvae_cards.py --rotation --epochs 80 --json ssvae_cards.json
    python benchmarks/ssvae_cards.py --per-suit 20,300,100 --size 32 --epochs 5   # a quick look

The first line is the ss-rVAE whose classifier sees every card turned and moved back by the pose
encoder (see :class:`aexp.models.ssvae.SSVAE`); ``--seed`` sets the cards, the weights and the
training noise alike.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import torch

from aexp.datasets.cards import semi_supervised_split
from aexp.models.ssvae import SSVAE


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--per-suit",
        default="200,3000,1000",
        help="labelled,unlabelled,validation cards per suit (default: the public recipe)",
    )
    parser.add_argument("--size", type=int, default=48, help="card size in pixels")
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--latent-dim", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=128, help="decoder width (32 suits --rotation)")
    parser.add_argument("--classifier-weight", type=float, default=20.0)
    parser.add_argument("--classifier", default="mlp", choices=["mlp", "conv"], help="q(y|x) network")
    parser.add_argument("--rotation", action="store_true", help="ss-rVAE: angle and shift latents")
    parser.add_argument(
        "--renderer", default="coordinate", choices=["coordinate", "resample"], help="decoder with --rotation"
    )
    parser.add_argument(
        "--align-classifier", action="store_true", help="with --rotation: classify the card turned back"
    )
    parser.add_argument(
        "--classifier-downsample", type=int, default=1, help="q(y|x) sees patches pooled by this factor"
    )
    parser.add_argument("--baseline", action="store_true", help="also train on the labelled cards alone")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="write the results here")
    return parser.parse_args()


def train_and_score(X, y, validation, args) -> dict[str, float]:
    model = SSVAE(
        input_shape=(args.size, args.size),
        latent_dim=args.latent_dim,
        output_dim=4,
        classifier_weight=args.classifier_weight,
        classifier=args.classifier,
        rotation=args.rotation,
        translation=args.rotation,
        hidden=args.hidden,
        renderer=args.renderer,
        align_classifier=args.align_classifier,
        classifier_downsample=args.classifier_downsample,
        device=args.device,
    )
    start = time.perf_counter()
    model.fit(X, y, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    seconds = time.perf_counter() - start
    accuracy = float((model.predict(validation.images) == validation.label).mean())
    return {
        "validation_accuracy": accuracy,
        "train_seconds": seconds,
        "seconds_per_epoch": seconds / args.epochs,
    }


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n_labelled, n_unlabelled, n_validation = (int(v) for v in args.per_suit.split(","))
    split = semi_supervised_split(n_labelled, n_unlabelled, n_validation, size=args.size, seed=args.seed)
    X = np.concatenate([split.labelled.images, split.unlabelled.images])
    y = np.concatenate([split.labelled.label, np.full(len(split.unlabelled), -1)])  # -1: unlabelled
    results = {"args": vars(args), "labelled_fraction": float((y >= 0).mean())}
    results["ssvae"] = train_and_score(X, y, split.validation, args)
    print(
        f"ssVAE: validation accuracy {results['ssvae']['validation_accuracy']:.4f} "
        f"({results['ssvae']['seconds_per_epoch']:.1f} s/epoch)"
    )
    if args.baseline:
        results["labelled_only"] = train_and_score(
            split.labelled.images, split.labelled.label, split.validation, args
        )
        print(
            f"labelled cards only: validation accuracy {results['labelled_only']['validation_accuracy']:.4f}"
        )
    results["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory {results['peak_rss_mib']:.0f} MiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
