"""Write a full-grid data set (``docs/grid-dataset.md``) from the plasmonic simulator.

Every grid point is measured once, with the same Poisson noise a live run would draw there, so a
what-if run on the data set (driver ``replay``) sees what the simulator would have shown.

Usage::

    python -m simulators.grid_dataset --out data/grid.npz --seed 0 --stride 2 [--option key=value ...]

``--option`` takes the simulator's options (``survey_pixels=128``, ``n_particles=8``, ``dose=200``).
Progress goes to stderr: a bar on a terminal, a plain line per tenth of the grid when redirected (a
log file or CI); stdout holds only the path written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import yaml

from aexp.griddata import GridDataset, save_grid

from .plasmonic import PlasmonicSimulator

__all__ = ["make_grid_dataset", "main", "Progress"]


def make_grid_dataset(out: str | Path, seed: int = 0, stride: int = 1,
                      progress: Callable[[int, int], None] | None = None, **options: Any) -> Path:
    """Measure the simulator at every ``stride``-th survey pixel and save survey + spectra to ``out``.

    ``progress(done, total)`` is called after each grid point (``None``: silent).

    Returns:
        The path written (``.npz``, or HDF5 for ``.h5``/``.hdf5``).
    """
    sim = PlasmonicSimulator.from_options(options, seed=seed)
    survey = sim.survey()
    h, w = survey.shape
    rows, cols = np.arange(0, h, stride), np.arange(0, w, stride)
    rc = np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1).reshape(-1, 2)
    xy = survey.transform.to_instrument(rc)
    spectra = []
    for k, (x, y) in enumerate(xy, start=1):
        spectra.append(sim.measure((float(x), float(y))).spectrum)
        if progress is not None:
            progress(k, len(xy))
    data = GridDataset(
        survey=survey.image,
        spectra=np.stack(spectra).reshape(len(rows), len(cols), -1),
        transform=survey.transform,
        channels=survey.channels,
        axis=sim.describe().spectrum_axis,
        stride=stride,
        spectrum_units=str(sim.describe().extra.get("spectrum_units", "counts")),
    )
    return save_grid(out, data)


class Progress:
    """``progress(done, total)`` for :func:`make_grid_dataset`: a tqdm bar when ``stream`` is a terminal
    (as ``aexp report`` shows its bar), else one plain line per tenth of the grid, which a log keeps
    readable where a bar's carriage returns would not."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.bar: Any = None
        self.said = 0

    def __call__(self, done: int, total: int) -> None:
        if self.stream.isatty():
            if self.bar is None:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, desc="measuring the grid", unit="point", file=self.stream, leave=False)
            self.bar.update(done - self.bar.n)
            return
        tenth = done * 10 // total
        if tenth > self.said or done == 1:
            self.said = tenth
            print(f"measured {done} of {total} grid points ({100 * done // total} %)", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--option takes key=value, got {text!r}")
    return key, yaml.safe_load(value)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m simulators.grid_dataset", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--option", type=_option, action="append", default=[])
    args = p.parse_args(argv)
    progress = Progress()
    try:
        path = make_grid_dataset(args.out, seed=args.seed, stride=args.stride, progress=progress,
                                 **dict(args.option))
    except ValueError as exc:
        print(f"grid_dataset: error: {exc}", file=sys.stderr)
        return 2
    finally:
        progress.close()
    print(f"data set: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
