"""The ``aexp`` command line: ``run``, ``check``, ``bench`` (a campaign, run by :mod:`aexp.cli.bench`,
which also has ``bench-report``); ``replay``, ``resume``, ``export``,
``report`` (in :mod:`aexp.cli.session`); ``serve``, ``describe``, ``keys`` (in :mod:`aexp.cli.link`);
``import`` (in :mod:`aexp.cli.data`); ``watch``, ``control`` and ``run --live/--approve`` (in
:mod:`aexp.cli.live`).

Errors a user can act on (a bad config, an occupied output folder, an unknown instrument) print one
clear message and exit with status 2; Ctrl-C exits with 130 after the completed steps are on disk.
An instrument unreachable for longer than ``instrument.max_outage_s`` stops ``run`` or ``resume``
with status 3 and a line naming ``aexp resume`` (the session is interrupted, not completed).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "build_parser"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_OUTAGE = 3


def _parse_seeds(text: str) -> list[int]:
    """``0,1,5-9`` -> [0, 1, 5, 6, 7, 8, 9]: comma-separated seeds and inclusive ranges, in order,
    each seed once."""
    seeds: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            first, sep, last = part.partition("-")
            if sep and first.strip():  # a range "a-b" (a leading "-" would be a negative number)
                lo, hi = int(first), int(last)
                if hi < lo:
                    raise argparse.ArgumentTypeError(f"--seeds: range {part!r} runs backwards")
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--seeds takes comma-separated integers and ranges (0-63 or 0,1,5-9), got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("--seeds needs at least one seed")
    return list(dict.fromkeys(seeds))


def _positive(text: str) -> int:
    value = _nonnegative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a positive integer, got 0")
    return value


def _seed(text: str) -> int:
    from ..config import MAX_SEED

    value = _nonnegative(text)
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed is at most 2**63 - 1, got {text}")
    return value


def _nonnegative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def _shows_default(action: argparse.Action) -> bool:
    default = action.default  # by identity: a default of 0 is worth showing, False is not
    return not (default is None or default is False or default is argparse.SUPPRESS or default == [])


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default when it has one worth showing (not None, an off switch or [])."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return super()._get_help_string(action) if _shows_default(action) else action.help


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("aexp")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _policies_epilog() -> str:
    # the config's literal, not aexp.policies (which imports torch): --help and --version stay fast;
    # tests/aexp/cli/test_main.py checks that the two lists agree
    from ..config import KINDS

    kinds = ", ".join(KINDS["policy"].members)
    return f"policies (policy.kind in a config): {kinds}. Docs: docs/index.md"


def build_parser() -> argparse.ArgumentParser:
    """The ``aexp`` argument parser, every subcommand included (the docs check parses with it)."""
    return _parser()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aexp", description="Autonomous microscope experiments.",
                                formatter_class=_HelpFormatter, epilog=_policies_epilog())
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also print what the run does (the lines a session's aexp.log keeps)")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run an experiment into a session folder")
    run.add_argument("config", type=Path)
    run.add_argument("--out", type=Path, required=True, help="session folder to create")
    run.add_argument("--seed", type=_seed, default=None, help="overrides the config's seed")
    run.add_argument("--steps", type=_nonnegative, default=None, help="measurements after the initial ones")
    run.add_argument("--overwrite", action="store_true", help="replace an existing session folder")
    run.add_argument("--quiet", action="store_true", help="no progress output")

    from .live import add_run_options

    add_run_options(run)  # --live [--host --port --token], --approve [--approve-timeout S]

    check = sub.add_parser("check", help="validate a config (and the instrument it names) without running")
    check.add_argument("config", type=Path)

    config = sub.add_parser("config", help="the configuration's JSON Schema (or a config file, resolved)")
    what = config.add_mutually_exclusive_group(required=True)
    what.add_argument("--schema", action="store_true", help="print the JSON Schema of a config file")
    what.add_argument("file", type=Path, nargs="?", help="print this config with every default filled in")

    bench = sub.add_parser("bench", help="compare policies on a simulator with known truth (a campaign of "
                                         "config x seed x policy cells)")
    bench.add_argument("config", type=Path, nargs="+")
    bench.add_argument("--seeds", type=_parse_seeds, default=[0, 1, 2, 3, 4],
                       help="seeds and ranges: 0-63 or 0,1,5-9 (default 0-4)")
    bench.add_argument("--json", type=Path, default=None,
                       help="write the results here (one config: an object; several: a list of them)")
    bench.add_argument("--policies", default=None, help="comma-separated subset of the policies")
    bench.add_argument("--steps", type=_nonnegative, default=None)
    bench.add_argument("--top-fraction", type=float, default=0.01,
                       help="discovery counts the true top fraction of the candidates (default 0.01)")
    bench.add_argument("--out", type=Path, default=None,
                       help="campaign folder: cells.jsonl (one record per finished cell) and campaign.json")
    bench.add_argument("--resume", action="store_true", help="run only the cells --out does not hold yet")
    bench.add_argument("--workers", type=_positive, default=None,
                       help="local worker processes (default: every core; 1 runs in this process)")
    bench.add_argument("--scheduler", default=None,
                       help="a Dask scheduler address (tcp://HOST:8786) to run the cells on; needs aexp[cluster]")
    bench.add_argument("--realtime", action="store_true",
                       help="twins on the real clock; each pending config beside its sequential loop and each "
                            "drift config beside its run without re-registration (docs/realtime.md)")
    bench.add_argument("--quiet", action="store_true")

    from .bench import add_parsers as add_bench_parsers

    add_bench_parsers(sub)  # bench-report

    from .session import add_parsers

    add_parsers(sub)  # replay, resume, export, report

    from .link import add_subcommands

    add_subcommands(sub)  # serve, describe, keys

    from .data import add_parsers as add_data_parsers

    add_data_parsers(sub)  # import

    from .live import add_parsers as add_live_parsers

    add_live_parsers(sub)  # watch, control

    for name, command in sub.choices.items():
        command.formatter_class = _HelpFormatter
        for action in command._actions:  # argparse prints no default for an option without help
            if action.help is None and action.option_strings and _shows_default(action):
                action.help = "(default: %(default)s)"
        if name in ("run", "check", "bench") and command.epilog is None:
            command.epilog = p.epilog
    return p


def _load(path: Path, steps: int | None):
    from ..config import load_config

    cfg = load_config(path)
    if steps is not None:
        cfg = cfg.with_overrides(**{"stopping.max_steps": steps})
    return cfg


def _instrument(cfg, seed: int):
    from ..instrument import load_instrument

    return load_instrument(cfg.instrument.driver, cfg.instrument.options, seed=seed)


def _cmd_config(args: argparse.Namespace) -> int:
    import json

    from ..config import ExperimentConfig, load_config

    data = ExperimentConfig.model_json_schema() if args.schema else load_config(args.file).to_dict()
    print(json.dumps(data, indent=2))
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from ..config import check_against, n_grid_candidates
    from ..patches import probes_anywhere

    cfg = _load(args.config, None)
    desc = _instrument(cfg, cfg.seed).describe()
    check_against(cfg, desc, source=str(args.config))
    rows, cols = n_grid_candidates(desc.survey_shape[1:], cfg.candidates.stride)
    count = f"{rows * cols} candidates ({rows} x {cols})"
    if cfg.candidates.mode == "atoms":
        count = "one candidate per atom found in the survey"
    elif cfg.candidates.mode == "auto" and not probes_anywhere(desc):
        count = f"{count} (mode auto: a recorded grid keeps its grid)"
    elif cfg.candidates.mode == "auto":
        count = f"{count} on a grid, or one per atom found if the survey is periodic (mode auto)"
    print(
        f"{args.config}: ok — instrument {desc.name!r}, {count}, "
        f"budget {cfg.budget} ({cfg.policy.n_initial} initial + {cfg.stopping.max_steps}), "
        f"policy {cfg.policy.label}, embedder {cfg.embedder.kind}, "
        f"target {cfg.target.name}"
    )
    return 0


def _step_printer(quiet: bool):
    from tqdm.auto import tqdm

    if quiet:
        return None, None
    bar = tqdm(total=None, desc="measuring", unit="step", leave=False)

    def on_step(step, budget: int) -> None:
        bar.total = budget
        t = step.timings
        target = f"{step.target:.4g}" if step.target is not None else f"FAILED ({step.error})"
        best = f"{step.best_so_far:.4g}" if step.best_so_far is not None else "-"
        x, y = step.position
        tqdm.write(
            f"step {step.step:>4} {step.phase:<8} idx {step.index:>6} "
            f"at ({x * 1e9:7.2f}, {y * 1e9:7.2f}) nm  target {target}  best {best}  "
            f"fit {t.get('fit_s', 0):.2f}s select {t.get('select_s', 0):.2f}s"
        )
        bar.update(1)

    return on_step, bar


def _cmd_run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..live.channel import OperatorOptions
    from ..loop import run_experiment
    from ..session.store import SessionReader
    from .live import check_run_options, start_live

    # the options are checked against the file as written: what it sets, not what --steps re-validates
    cfg = check_run_options(args, load_config(args.config))
    if args.steps is not None:
        cfg = cfg.with_overrides(**{"stopping.max_steps": args.steps})
    seed = cfg.seed if args.seed is None else args.seed
    on_step, bar = _step_printer(args.quiet)
    instrument = _instrument(cfg, seed)
    server = start_live(args) if args.live else None
    options = OperatorOptions(live=args.live, approve=args.approve, approve_timeout_s=args.approve_timeout,
                              notify=lambda line: print(line, file=sys.stderr, flush=True))
    try:
        folder, result = run_experiment(
            cfg,
            instrument,
            args.out,
            seed=seed,
            overwrite=args.overwrite,
            progress=not args.quiet,
            on_step=on_step,
            operator=options,
        )
    finally:
        if bar is not None:
            bar.close()
        if server is not None:
            server.stop()
    best = result.best
    print(f"session: {folder}")
    mode = SessionReader(folder).manifest.features.get("candidates_mode")
    if mode:
        print(f"candidates: {mode['mode']} (mode auto: {mode['reason']})")
    if best is not None:
        print(f"best target {best.target:.4g} at candidate {best.index} (step {best.step})")
    if "figure" in result.extra:
        print(f"figure: {result.extra['figure']}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_campaign_command

    return run_campaign_command(args, _load)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.verbose:
        import logging

        logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from ..campaign import InstrumentOutage
    from ..errors import AexpError
    from ..instrument import InstrumentError
    from .bench import COMMANDS as BENCH_COMMANDS
    from .data import COMMANDS as DATA_COMMANDS
    from .link import COMMANDS as LINK_COMMANDS
    from .live import COMMANDS as LIVE_COMMANDS
    from .session import COMMANDS

    commands = {"run": _cmd_run, "check": _cmd_check, "config": _cmd_config, "bench": _cmd_bench, **COMMANDS}
    commands.update(LINK_COMMANDS)
    commands.update(BENCH_COMMANDS)
    commands.update(DATA_COMMANDS)
    commands.update(LIVE_COMMANDS)
    from ..drift import RegistrationWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", RegistrationWarning)  # the operator sees every failed one
            return commands[args.command](args)
    except InstrumentOutage as exc:
        folder = getattr(args, "out", None) or getattr(args, "folder", None)
        done = len(exc.result.steps) if exc.result is not None else 0
        print(f"aexp {args.command}: interrupted: {exc}; {done} completed steps are on disk; continue "
              f"with `aexp resume {folder}` once the instrument answers", file=sys.stderr)
        return EXIT_OUTAGE
    except InstrumentError as exc:  # e.g. no server at the configured address
        print(f"aexp {args.command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AexpError as exc:  # the input is at fault: one line (anything else is a bug: traceback, 1)
        print(f"aexp {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        folder = getattr(args, "out", None) if args.command == "run" else getattr(args, "folder", None)
        hint = f"; continue with `aexp resume {folder}`" if args.command in ("run", "resume") and folder else ""
        print(f"\naexp: interrupted; every completed step is on disk{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (``aexp config --schema | head``): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
