"""An autonomous experiment from Python, without the CLI: the same calls ``aexp run`` and
``aexp replay --verify`` make, small enough to read in a notebook.

A simulated STEM-EELS sample (the ``plasmonic`` twin) is surveyed, a patch around every candidate
position is embedded by an rVAE, and a deep-kernel GP chooses where to measure next until the budget
ends. Every step is written to a session folder before the next decision; the folder is then read
back and every decision re-run on the recorded measurements.

Run it from the repository root (a minute or two on a laptop CPU with the defaults below)::

    python examples/api_loop.py --out runs/api-example

In a notebook, copy the two functions ``experiment_config`` and ``run`` (or put ``examples/`` on
``sys.path`` and import them), then ``folder, best = run(experiment_config(steps=10), "runs/nb")``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from aexp.config import ExperimentConfig, parse_config
from aexp.instrument import load_instrument
from aexp.loop import run_experiment
from aexp.session.replay import verify_session
from aexp.session.store import SessionReader
from aexp.types import Step

# The shipped configs/plasmonic-dkl.yaml, scaled down: a 64 x 64 px survey (1 nm pixels) gives
# 32 x 32 = 1,024 candidates on a stride of 2 px. Each section maps onto one object of the loop.
CONFIG: dict[str, Any] = {
    "name": "api-example",
    "device": "cpu",
    "instrument": {"driver": "plasmonic", "options": {"survey_pixels": 64, "n_particles": 4, "dose": 200}},
    "candidates": {"mode": "grid", "stride": 2, "patch_size": 8},
    "embedder": {"kind": "rvae", "latent_dim": 2, "epochs": 10},
    "surrogate": {"gp_until": 20, "centre_pixels": 1, "centre_gradient": True, "position": True},
    "policy": {"kind": "dkl", "acquisition": "ucb", "beta": 4.0, "n_initial": 5},
    "target": {"name": "band_intensity", "window": [2.3, 2.9]},  # edge-mode intensity, eV
    "stopping": {"max_steps": 25},
    "recording": {"spectra": True, "figure": True},
}


def experiment_config(steps: int | None = None, survey_pixels: int | None = None,
                      embedder_epochs: int | None = None) -> ExperimentConfig:
    """The example's config, validated the way ``aexp check`` validates a YAML file."""
    cfg = parse_config(CONFIG, source="examples/api_loop.py")
    overrides: dict[str, Any] = {}
    if steps is not None:
        overrides["stopping.max_steps"] = steps
    if survey_pixels is not None:
        overrides["instrument.options.survey_pixels"] = survey_pixels
    if embedder_epochs is not None:
        overrides["embedder.epochs"] = embedder_epochs
    return cfg.with_overrides(**overrides) if overrides else cfg


def _print_step(step: Step, budget: int) -> None:
    target = f"{step.target:.4g}" if step.target is not None else f"failed ({step.error})"
    x, y = step.position
    print(f"step {step.step + 1:>3}/{budget} {step.phase:<7} at ({x * 1e9:6.1f}, {y * 1e9:6.1f}) nm  "
          f"target {target}")


def run(cfg: ExperimentConfig, out: str | Path, seed: int = 0, *, overwrite: bool = False,
        quiet: bool = False) -> tuple[Path, Step | None]:
    """Run the experiment into the session folder ``out``; returns the folder and the best step."""
    # instruments are found by name (entry point group aexp.instruments), like `aexp run` finds them
    instrument = load_instrument(cfg.instrument.driver, cfg.instrument.options, seed=seed)
    folder, result = run_experiment(cfg, instrument, out, seed=seed, overwrite=overwrite,
                                    progress=not quiet, on_step=None if quiet else _print_step)
    return folder, result.best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/api-example"), help="session folder to create")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="measurements after the initial ones (config: 25)")
    parser.add_argument("--survey-pixels", type=int, default=None, help="survey edge in px (config: 64)")
    parser.add_argument("--epochs", type=int, default=None, help="rVAE training epochs (config: 10)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing session folder")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    cfg = experiment_config(args.steps, args.survey_pixels, args.epochs)
    folder, best = run(cfg, args.out, args.seed, overwrite=args.overwrite, quiet=args.quiet)

    # The session is plain files: read it back like any other recorded experiment.
    reader = SessionReader(folder)
    ok = [s for s in reader.steps if s.status == "ok"]
    print(f"session {folder}: {len(reader.steps)} steps recorded ({len(ok)} ok) of a budget of {cfg.budget}")
    if best is not None:
        print(f"best target {best.target:.4g} at candidate {best.index} (step {best.step + 1})")

    # Same seed + config + measurements -> same decisions: re-run them all from the record.
    report = verify_session(folder)
    largest = max(report.max_deviation.values(), default=0.0)
    print(f"replay: all {report.steps} decisions reproduced (largest relative deviation {largest:.1e})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
