"""Embedding before the first decision at 65,536 candidates: the rVAE trained on every candidate, or on
``embedder.train_subsample`` of them (then every candidate encoded).

The default plasmonic config's embedder on a 256 x 256 survey (24 particles), every pixel a candidate.

    OMP_NUM_THREADS=1 python benchmarks/embed_subsample.py --subsample 8192 --epochs 20
"""

from __future__ import annotations

import argparse
import time

from aexp.config import load_config
from aexp.features import embed_candidates
from aexp.instrument import load_instrument
from aexp.patches import make_candidates


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/plasmonic-dkl.yaml")
    p.add_argument("--subsample", type=int, default=8192)
    p.add_argument("--epochs", type=int, default=20)
    args = p.parse_args()
    cfg = load_config(args.config)
    inst = load_instrument(cfg.instrument.driver, {**cfg.instrument.options, "survey_pixels": 256, "n_particles": 24},
                           seed=0)
    cands = make_candidates(inst.survey(), cfg.candidates.model_copy(update={"stride": 1}))
    print(f"{len(cands)} candidates", flush=True)
    for sub in (args.subsample, None):
        emb = cfg.embedder.model_copy(update={"epochs": args.epochs, "train_subsample": sub})
        t0, c0 = time.perf_counter(), time.process_time()
        embed_candidates(cands, emb, seed=0, progress=False)
        print(f"train_subsample={sub}: {time.perf_counter() - t0:.1f} s wall, {time.process_time() - c0:.1f} CPU s "
              f"({args.epochs} epochs)", flush=True)


if __name__ == "__main__":
    main()
