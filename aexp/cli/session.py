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

from ..errors import UsageError

__all__ = ["add_parsers", "COMMANDS", "EXIT_DIVERGED"]

EXIT_DIVERGED = 1


class _IntermixedParser(argparse.ArgumentParser):
    """A subcommand parser that takes its positionals between and after its options.

    argparse fills an optional positional (``nargs="?"``) together with the one before it, so in
    ``export FOLDER --format hspy OUT`` the ``OUT`` would be left over; intermixed parsing reads the
    options first and then every positional.
    """

    _parsing = False

    # typeshed overloads parse_known_args on the namespace's type; this one untyped override
    # serves every overload, which mypy cannot match one by one
    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        if self._parsing:  # parse_known_intermixed_args calls back in here
            return super().parse_known_args(args, namespace)
        self._parsing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._parsing = False


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

    export = sub.add_parser(
        "export", help="write a session as HDF5, HyperSpy (hspy, zspy) or NSID files",
        description="hspy/zspy write OUT (the spectra, a Signal1D over the steps) and OUT's sibling "
                    "<stem>_survey<suffix> (the survey, a calibrated Signal2D); hdf5 and nsid write OUT.")
    export.__class__ = _IntermixedParser  # subparsers are built by argparse; only their parsing changes
    export.add_argument("folder", type=Path)
    export.add_argument("out", type=Path, nargs="?", default=None, help="file to create")
    export.add_argument("--format", choices=["hdf5", "hspy", "zspy", "nsid"], default="hdf5",
                        help="file format (default hdf5: the whole session, docs/session-format.md)")
    export.add_argument("--hdf5", type=Path, default=None, help="file to create, as --format hdf5 OUT")
    export.add_argument("--overwrite", action="store_true", help="replace an existing regular file")

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
        print(f"{label} step {step.step:>4} (budget {budget}) idx {step.index:>6} target {target}", file=sys.stderr)

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
    for line in out.recovered:
        print(f"aexp resume: recovered: {line}", file=sys.stderr)
    replayed = f"steps 0-{out.replayed - 1} replayed from the record" if out.replayed else "nothing replayed"
    new = f"steps {out.replayed}-{out.replayed + out.new - 1} measured now" if out.new else "no new step"
    print(f"session: {out.folder} ({replayed}; {new})")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from ..session.export import export_session

    if (args.out is None) == (args.hdf5 is None):
        raise UsageError("give the file to create once: `export FOLDER OUT [--format F]` or `export FOLDER --hdf5 OUT`")
    if args.hdf5 is not None and args.format != "hdf5":
        raise UsageError(f"--hdf5 writes HDF5; for --format {args.format} give the file as OUT")
    for path in export_session(args.folder, args.out or args.hdf5, format=args.format, overwrite=args.overwrite):
        print(f"exported: {path}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ..session.report import write_report

    steps = None
    if args.maps_at:
        try:
            steps = [int(s) for s in args.maps_at.split(",") if s.strip()]
        except ValueError:
            raise UsageError(f"--maps-at takes comma-separated step numbers, got {args.maps_at!r}") from None
    page = write_report(args.folder, args.out, map_steps=steps, progress=sys.stderr.isatty())
    print(f"report: {page}")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "replay": _cmd_replay,
    "resume": _cmd_resume,
    "export": _cmd_export,
    "report": _cmd_report,
}
