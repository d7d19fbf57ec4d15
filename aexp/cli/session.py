"""The ``aexp`` subcommands that work on a recorded session: ``replay``, ``resume``, ``export``,
``report``. :func:`add_parsers` adds them to the main parser; :data:`COMMANDS` maps each name to its
function ``(args) -> exit status``.

``replay --verify`` exits 0 when every decision is reproduced and 1 at the first divergence (the
message names the step, what the replay chose and what was recorded).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["add_parsers", "COMMANDS", "EXIT_DIVERGED"]

EXIT_DIVERGED = 1


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    replay = sub.add_parser("replay", help="re-run a session's decisions on its recorded measurements")
    replay.add_argument("folder", type=Path)
    replay.add_argument("--verify", action="store_true", help="check every decision against the record")
    replay.add_argument("--quiet", action="store_true")

    resume = sub.add_parser("resume", help="continue an interrupted session up to its recorded budget")
    resume.add_argument("folder", type=Path)
    resume.add_argument("--config", type=Path, default=None,
                        help="refuse to resume unless this config matches the recorded one")
    resume.add_argument("--quiet", action="store_true")

    export = sub.add_parser("export", help="write a session to one HDF5 file")
    export.add_argument("folder", type=Path)
    export.add_argument("--hdf5", type=Path, required=True, help="file to create")
    export.add_argument("--overwrite", action="store_true", help="replace an existing file")

    report = sub.add_parser("report", help="figures and one self-contained HTML page of a session")
    report.add_argument("folder", type=Path)
    report.add_argument("--out", type=Path, default=None,
                        help="folder for report.html and the PNGs (default: FOLDER-report, beside the session)")
    report.add_argument("--maps-at", default=None,
                        help="comma-separated steps at which to draw the model's maps (default: 3 steps)")


def _printer(quiet: bool, label: str):
    if quiet:
        return None

    def on_step(step, budget: int) -> None:
        target = f"{step.target:.4g}" if step.target is not None else "failed"
        print(f"{label} step {step.step + 1:>4}/{budget} idx {step.index:>6} target {target}", file=sys.stderr)

    return on_step


def _cmd_replay(args: argparse.Namespace) -> int:
    from ..session.replay import TOLERANCE, ReplayDivergence, verify_session

    if not args.verify:
        print("aexp replay: give --verify (a what-if run on recorded data is `aexp run` with the "
              "replay driver)", file=sys.stderr)
        return 2
    try:
        report = verify_session(args.folder, progress=False, on_step=_printer(args.quiet, "replay"))
    except ReplayDivergence as exc:
        print(f"aexp replay: DIVERGED: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    for line in report.dropped:
        print(f"aexp replay: reader: {line}", file=sys.stderr)
    for line in report.warnings:
        print(f"aexp replay: warning: {line}", file=sys.stderr)
    worst = max(report.max_deviation.values(), default=0.0)
    print(f"verified: {report.steps} steps reproduced (same candidate, phase and status; values "
          f"within rtol {TOLERANCE['rtol']:g}, atol {TOLERANCE['atol']:g}; largest relative "
          f"deviation {worst:.3g})")
    return 0


def _cmd_resume(args: argparse.Namespace) -> int:
    from ..session.replay import ReplayDivergence, resume_session

    try:
        out = resume_session(args.folder, config_path=args.config, progress=not args.quiet,
                             on_step=_printer(args.quiet, "resume"))
    except ReplayDivergence as exc:
        print(f"aexp resume: the recorded steps do not replay, nothing was written: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    for line in out.warnings:
        print(f"aexp resume: {line}", file=sys.stderr)
    print(f"session: {out.folder} ({out.replayed} recorded steps replayed, {out.new} new)")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from ..session.export import export_hdf5

    path = export_hdf5(args.folder, args.hdf5, overwrite=args.overwrite)
    print(f"exported: {path}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ..session.report import write_report

    steps = None
    if args.maps_at:
        try:
            steps = [int(s) for s in args.maps_at.split(",") if s.strip()]
        except ValueError:
            raise ValueError(f"--maps-at takes comma-separated step numbers, got {args.maps_at!r}") from None
    page = write_report(args.folder, args.out, map_steps=steps)
    print(f"report: {page}")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "replay": _cmd_replay,
    "resume": _cmd_resume,
    "export": _cmd_export,
    "report": _cmd_report,
}
