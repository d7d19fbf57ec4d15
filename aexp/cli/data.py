"""``aexp import``: a real recording (DM3/DM4, EMD, ``.hspy``, USID, Nanonis ``.3ds``, ``.npy``) into
the full-grid data set of ``docs/grid-dataset.md``; ``aexp import --list SOURCE`` says what is inside.
:func:`add_parsers` adds the command to the main parser; :data:`COMMANDS` maps its name to its function.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["add_parsers", "COMMANDS"]


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("import", help="read a real recording into a full-grid data set (see docs/real-data.md)")
    p.add_argument("source", type=Path, help="the recording (.dm3, .dm4, .emd, .hspy, .zspy, .h5, .3ds, .npy, ...)")
    p.add_argument("--list", action="store_true", help="list the signals inside, their shapes, axes and units")
    survey = p.add_mutually_exclusive_group()
    survey.add_argument("--survey", type=Path, default=None, metavar="SURVEY_FILE",
                        help="a paired image (HAADF, topography, survey); SOURCE itself picks an image inside it")
    survey.add_argument("--survey-band", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                        help="make the survey from the spectra's intensity over [LO, HI] (signal-axis units; "
                             "default: the whole axis)")
    p.add_argument("--survey-signal", default=None, metavar="NAME", help="which image of SURVEY_FILE")
    p.add_argument("--signal", default=None, metavar="NAME", help="which spectrum image (title or index)")
    p.add_argument("--pixel-size", type=float, default=None, metavar="METRES",
                   help="metres per spectrum-image pixel, for files without a length calibration")
    p.add_argument("--stride", type=int, default=None, help="survey pixels per grid step of the data set")
    p.add_argument("--axis", nargs=4, default=None, metavar=("NAME", "UNITS", "START", "STOP"),
                   help=".npy cubes: the signal axis")
    p.add_argument("--bias", type=Path, default=None, metavar="FILE.npy",
                   help="hysteresis loops (BEPS): the applied bias at each point of the signal axis, in V; the "
                        "loops are imported on the unfolded bias axis (USID files: taken from the file)")
    p.add_argument("--cycle", type=int, default=None, metavar="N",
                   help="of a bias waveform with several cycles, keep cycle N (0 = first from -V_max); "
                        "default: average them")
    p.add_argument("--no-register", action="store_true",
                   help="keep the paired image where the files place it (no phase-correlation refinement)")
    p.add_argument("--out", type=Path, default=None, help="data set to write (.npz, or .h5/.hdf5)")


def _cmd_import(args: argparse.Namespace) -> int:
    from ..griddata import save_grid
    from ..io.recordings import ImportOptions, RecordingError, import_recording, list_recording

    axis = None
    if args.axis is not None:
        name, units, start, stop = args.axis
        try:
            axis = (name, units, float(start), float(stop))
        except ValueError:
            raise RecordingError(f"--axis takes NAME UNITS START STOP with numbers, got {args.axis}") from None
    if args.list:
        print(list_recording(args.source, axis))
        return 0
    if args.out is None:
        raise RecordingError("aexp import needs --out data/x.npz (or --list to see what is inside)")
    opts = ImportOptions.from_mapping({
        "signal": args.signal, "survey": args.survey, "survey_signal": args.survey_signal,
        "survey_band": args.survey_band, "pixel_size": args.pixel_size, "stride": args.stride,
        "axis": axis, "register": not args.no_register, "bias": args.bias, "cycle": args.cycle,
    }, "aexp import")
    data = import_recording(args.source, opts)
    path = save_grid(args.out, data)
    r, q = data.spectra.shape[:2]
    meta = data.metadata
    backwards = " (reversed: the file ran backwards)" if meta["axis_reversed"] else ""
    print(f"{args.source} [{meta['source']['signal']}] -> {path}")
    if data.signal_axes:
        axes = ", ".join(f"{a.name} {a.start:g} .. {a.stop:g} {a.units}" for a in data.signal_axes)
        print(f"  grid {r} x {q} patterns of {' x '.join(str(a.n) for a in data.signal_axes)}, {axes}{backwards}")
    else:
        print(f"  grid {r} x {q} spectra of {data.spectra.shape[2]} values, {data.axis.name} {data.axis.start:g} .. "
              f"{data.axis.stop:g} {data.axis.units}{backwards}")
    if "loops" in meta:
        lp = meta["loops"]
        print(f"  loops: a bias waveform of {lp['waveform_points']} points ({lp['waveform_source']}), "
              f"{lp['cycles']} cycle(s) from {lp['start']}, {lp['v_min']:g} .. {lp['v_max']:g} V")
        print(f"  {lp['resampled']}")
    print(f"  pixel {data.transform.pixel_size * data.stride:.4g} m per grid step ({meta['calibration']})")
    print(f"  survey {data.survey.shape[1]} x {data.survey.shape[2]} px, stride {data.stride}: {data.survey_source}")
    if meta["nan_spectra"]:
        print(f"  {meta['nan_spectra']} spectra hold NaN: measuring there is a failed measurement")
    nan_px = int((~np.isfinite(data.survey)).sum())
    if nan_px:
        print(f"  {nan_px} survey pixels are NaN (outside the image or NaN spectra): their candidates are masked")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"import": _cmd_import}
