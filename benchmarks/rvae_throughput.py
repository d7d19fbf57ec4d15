"""Training throughput and peak memory of the rVAE on 32x32 patches, per decoder setting.

Each setting trains in its own subprocess (so its peak RSS is its own) on the same cards patches,
with torch limited to ``--threads`` threads; the settings run interleaved ``--repeats`` times and
the median per-epoch throughput of each (after one warm-up epoch) is reported, with its ratio to
the first setting (by default the rVAE's default, hidden 32 / 2 layers). With ``--check-angle`` every setting is also
trained to convergence on cards with +-60 deg rotation and scored: per-suit |circular correlation|
of the angle latent with the true angle, and k-means purity of the content latents.

    python benchmarks/rvae_throughput.py --patches 4096 --epochs 3 --repeats 3 --json throughput.json
    python benchmarks/rvae_throughput.py --settings 32x2,24x1 --repeats 1 --check-angle
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def _one(args: argparse.Namespace) -> dict:
    """Train one setting in this process and measure it."""
    import torch

    from aexp.datasets import make_cards
    from aexp.models import RVAE
    from aexp.models.metrics import circular_correlation, kmeans_purity

    torch.set_num_threads(args.threads)
    setting = json.loads(args.one)
    cards = make_cards(args.patches // 4, rotation_deg=60, shear_deg=1, shift=0.05, size=32, seed=0)
    model = RVAE(input_shape=(32, 32), latent_dim=2, **setting)
    model.fit(cards.images, epochs=args.epochs + 1, batch_size=args.batch_size, seed=0, progress=False)
    seconds = model.history_["seconds"][1:]  # the first epoch warms up allocators and caches
    out = {
        "setting": setting,
        "patches_per_s": [len(cards) / s for s in seconds],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if args.check_angle:
        check = make_cards(250, rotation_deg=60, shear_deg=1, size=32, seed=1)
        model = RVAE(input_shape=(32, 32), latent_dim=2, **setting)
        model.fit(check.images, epochs=60, seed=0, progress=False)
        z = model.encode(check.images)
        out["angle_circ_per_suit"] = [
            abs(circular_correlation(z[check.label == k, 0], check.angle[check.label == k])) for k in range(4)
        ]
        out["content_purity"] = kmeans_purity(z[:, 3:], check.label)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patches", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per run (after one warm-up)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--check-angle", action="store_true")
    parser.add_argument("--settings", default="32x2,32x1,24x1,16x2",
                        help="comma-separated HIDDENxLAYERS decoder settings; the first is the baseline")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_one(args)))
        return

    settings = [dict(zip(("hidden", "decoder_layers"), map(int, s.split("x")))) for s in args.settings.split(",")]
    runs: dict[str, list[dict]] = {json.dumps(s): [] for s in settings}
    start = time.perf_counter()
    for repeat in range(args.repeats):
        for key in runs:
            check = args.check_angle and repeat == 0
            cmd = [sys.executable, __file__, "--one", key, "--patches", str(args.patches),
                   "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
                   "--threads", str(args.threads)] + (["--check-angle"] if check else [])
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            runs[key].append(json.loads(done.stdout.strip().splitlines()[-1]))
    results = []
    for key, reps in runs.items():
        rates = [r for rep in reps for r in rep["patches_per_s"]]
        row = {
            "setting": json.loads(key),
            "median_patches_per_s": statistics.median(rates),
            "peak_rss_mib": max(rep["peak_rss_mib"] for rep in reps),
        }
        row.update({k: v for rep in reps for k, v in rep.items() if k in ("angle_circ_per_suit", "content_purity")})
        results.append(row)
    base = results[0]["median_patches_per_s"]
    for row in results:
        row["ratio_to_default"] = row["median_patches_per_s"] / base
        extra = ""
        if "content_purity" in row:
            extra = f"  angle |circ| per suit {[round(c, 3) for c in row['angle_circ_per_suit']]}" \
                    f"  purity {row['content_purity']:.3f}"
        print(f"{row['setting']}: {row['median_patches_per_s']:.0f} patches/s "
              f"(x{row['ratio_to_default']:.2f})  peak RSS {row['peak_rss_mib']:.0f} MiB{extra}")
    summary = {"args": vars(args), "results": results, "wall_s": time.perf_counter() - start}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
