"""``aexp bench`` (the campaign behind it) and ``aexp bench-report``.

:func:`add_parsers` adds ``bench-report`` to the main parser (``bench``'s own flags live with the
other commands in :mod:`aexp.cli.main`); :data:`COMMANDS` maps each name to ``(args) -> exit status``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import UsageError

__all__ = ["add_parsers", "COMMANDS", "run_campaign_command"]


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = sub.add_parser("bench-report", help="tables and figures of a benchmark campaign folder")
    report.add_argument("folder", type=Path, help="the --out folder of aexp bench")
    report.add_argument("--out", type=Path, default=None,
                        help="folder for report.md and the PNGs (default: FOLDER/report)")
    report.add_argument("--baseline", default="random",
                        help="the policy the table's ratio column divides by (default: random)")


def _check_devices(configs: list[Any], paths: list[Path]) -> None:
    """``device: cuda`` on a machine whose torch sees no GPU: say so before any worker starts."""
    from ..features import resolve_device

    for cfg, path in zip(configs, paths):
        try:
            resolve_device(cfg.device)
        except RuntimeError as exc:
            raise UsageError(f"{path}: {exc}") from None


def run_campaign_command(args: argparse.Namespace, load: Callable[[Path, int | None], Any]) -> int:
    """``aexp bench CONFIG... [--out DIR [--resume]] [--workers N | --scheduler ADDR]``."""
    from tqdm.auto import tqdm

    from ..bench import bench_policy_names, format_table
    from ..bench.campaign import Progress, bench_json, open_campaign, run_cells
    from ..bench.executors import ExecutorSpec, default_workers
    from ..bench.notes import add_notes

    configs = [load(p, args.steps) for p in args.config]
    paths = list(args.config)
    if getattr(args, "realtime", False):
        from ..bench.realtime import realtime_variants

        variants = [(v, p) for c, p in zip(configs, paths) for v in realtime_variants(c)]
        configs, paths = [v for v, _ in variants], [p for _, p in variants]
    policies = bench_policy_names(args.policies)
    if not 0 < args.top_fraction <= 1:
        raise UsageError(f"--top-fraction must be in (0, 1], got {args.top_fraction}")
    if args.resume and args.out is None:
        raise UsageError("--resume needs the --out folder of the campaign to finish")
    if args.scheduler is None:  # a Dask worker checks its own GPU; this machine may have none
        _check_devices(configs, paths)

    from ..bench.cells import config_digest, make_cells

    dicts = [c.to_dict() for c in configs]
    cells = list({c.key: c for c in make_cells(dicts, args.seeds, policies, args.top_fraction)}.values())
    gpu = args.scheduler is not None and any(c.device == "cuda" for c in configs)
    workers = args.workers or default_workers()
    spec = ExecutorSpec(workers=workers, scheduler=args.scheduler, resources=(("GPU", 1.0),) if gpu else ())

    store, todo, already = None, cells, []
    if args.out is not None:
        sources = {config_digest(d): str(path) for d, path in zip(dicts, paths)}
        store, todo = open_campaign(args.out, cells, args.resume, spec.describe(), sources)
        latest = store.latest()
        skip = {c.key for c in cells} - {c.key for c in todo}
        already = [latest[k].to_dict() for k in skip]
    if not args.scheduler:  # never more local processes than cells
        spec = ExecutorSpec(workers=max(1, min(workers, len(todo))))
    say = (lambda s: None) if args.quiet else (lambda s: tqdm.write(s, file=sys.stderr))
    say(f"{len(todo)} of {len(cells)} cells to run on {spec.describe()}"
        + (f"; {len(cells) - len(todo)} already in {args.out}" if len(todo) < len(cells) else ""))
    # each running cell's steps on a line under the bar: only where it redraws in place (a terminal)
    names = {c.key: c.name for c in todo} if sys.stderr.isatty() else None
    progress = Progress(len(todo), already, enabled=not args.quiet, names=names)

    def on_record(r: dict[str, Any]) -> None:
        progress(r)
        if r["status"] == "ok":
            say(f"{r['config_name']} seed {r['seed']}: {r['policy']:<10} discovery {r['discovery']:.3f} "
                f"({r['hits']}/{r['n_top']})  decision {r['decision_s']:.3f} s  cell {r['wall_s']:.1f} s")
        else:
            say(f"{r['config_name']} seed {r['seed']}: {r['policy']:<10} FAILED: {r['error']}")

    try:
        records = run_cells(todo, spec, store, on_record=on_record, on_step=progress.step if names else None)
    finally:
        progress.close()
    results = bench_json(already + records, cells)
    for result, cfg in zip(results, configs):
        add_notes(result, cfg)
        print(format_table(result))
    if getattr(args, "realtime", False):
        from ..bench.realtime import realtime_table

        print(realtime_table(already + records))
    failed = [r for r in records if r["status"] != "ok"]
    for r in failed:
        print(f"failed: {r['config_name']} seed {r['seed']} {r['policy']}: {r['error']}", file=sys.stderr)
    if args.json is not None:
        args.json.write_text(json.dumps(results[0] if len(results) == 1 else results, indent=2))
        print(f"results: {args.json}")
    if args.out is not None:
        print(f"campaign: {args.out} ({len(records)} cells run, {len(failed)} failed; "
              f"aexp bench-report {args.out})")
    return 0


def _cmd_bench_report(args: argparse.Namespace) -> int:
    from ..bench.report import write_bench_report

    paths = write_bench_report(args.folder, args.out, baseline=args.baseline)
    for path in paths:
        print(path)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "bench-report": _cmd_bench_report,
}
