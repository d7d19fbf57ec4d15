"""``aexp control`` (steer a running session) and ``aexp watch`` (its live page); the ``--live``,
``--approve`` options of ``aexp run`` are added here too (:func:`add_run_options`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UsageError

__all__ = ["add_parsers", "add_run_options", "COMMANDS", "start_live"]


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return value


def _page_options(p: argparse.ArgumentParser, port: int) -> None:
    p.add_argument("--host", default="127.0.0.1", help="interface of the page; another than loopback needs --token")
    p.add_argument("--port", type=int, default=port, help="port of the page (0: any free one)")
    p.add_argument("--token", default=None, help="required by the page on every request; `new` makes a random one")


def add_run_options(run: argparse.ArgumentParser) -> None:
    run.add_argument("--live", action="store_true", help="serve the live page while the run goes (prints its URL)")
    _page_options(run, 0)
    run.add_argument("--approve", action="store_true",
                     help="hold each proposed point until the operator approves or replaces it")
    run.add_argument("--approve-timeout", type=_seconds, default=None, metavar="S",
                     help="with --approve: go on with the proposal after S seconds")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    watch = sub.add_parser("watch", help="the live page of a session, running or finished")
    watch.add_argument("folder", type=Path)
    _page_options(watch, 8765)

    control = sub.add_parser("control", help="steer a running session: pause, resume, stop, goto, exclude, set, "
                                             "approve (recorded in its actions.jsonl)")
    control.add_argument("folder", type=Path)
    control.add_argument("--session", default=None, help="refuse unless the folder is this session id")
    what = control.add_subparsers(dest="what", required=True)
    for name, text in (("pause", "hold before the next decision"), ("resume", "go on after a pause"),
                       ("stop", "end the run before the next decision"),
                       ("approve", "accept the proposal waiting in approve mode")):
        what.add_parser(name, help=text)
    goto = what.add_parser("goto", help="measure this candidate next (replaces a waiting proposal)")
    where = goto.add_mutually_exclusive_group(required=True)
    where.add_argument("--index", type=int, metavar="N", help="candidate index")
    where.add_argument("--xy", type=float, nargs=2, metavar=("X", "Y"), help="position in metres (nearest candidate)")
    exclude = what.add_parser("exclude", help="never measure the candidates in a box")
    exclude.add_argument("--box", type=float, nargs=4, required=True, metavar=("X0", "Y0", "X1", "Y1"),
                         help="corners in metres")
    setting = what.add_parser("set", help="change a policy setting from the next decision (beta)")
    setting.add_argument("name")
    setting.add_argument("value")


def _cmd_control(args: argparse.Namespace) -> int:
    from ..live.channel import Command, ControlError, send

    raw: dict = {"what": args.what}
    if args.what == "goto":
        raw.update({"index": args.index} if args.index is not None else {"xy": list(args.xy)})
    elif args.what == "exclude":
        raw["box"] = list(args.box)
    elif args.what == "set":
        try:
            value = float(args.value)
        except ValueError:
            raise ControlError(f"set {args.name}: expected a number, got {args.value!r}") from None
        raw.update(name=args.name, value=value)
    if args.session:
        raw["session_id"] = args.session
    cmd = send(args.folder, Command.from_dict(raw))
    print(f"{args.folder}: {cmd.what} queued (command {cmd.id}); it takes effect before the next decision "
          f"and is recorded in actions.jsonl")
    return 0


def _cmd_watch(args: argparse.Namespace) -> int:
    from ..live.app import check_bind, new_token, serve

    if not args.folder.is_dir():
        raise UsageError(f"{args.folder} is not a folder")
    token = new_token(args.token)
    check_bind(args.host, token)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"live page of {args.folder}: http://{host}:{args.port}/" + (f"?token={token}" if token else "")
          + "  (Ctrl-C ends it)", flush=True)
    serve(args.folder, args.host, args.port, token)
    return 0


def start_live(args: argparse.Namespace):
    """Start the page for ``run --live`` before the run (it waits for the session to appear)."""
    from ..live.app import LiveServer, new_token

    server = LiveServer(args.out, args.host, args.port, new_token(args.token)).start()
    print(f"live page: {server.url}", flush=True)
    return server


def check_run_options(args: argparse.Namespace, cfg):
    """The run's config for these options (approve mode measures, then decides), or a UsageError."""
    if args.approve_timeout is not None and not args.approve:
        raise UsageError("--approve-timeout needs --approve")
    if args.approve and cfg.policy.pending and "pending" not in cfg.policy.model_fields_set:
        # each proposal waits for the operator: there is no measurement to decide behind
        cfg = cfg.with_overrides(**{"policy.pending": False})
    if args.approve and (cfg.policy.batch > 1 or cfg.policy.pending):
        raise UsageError("--approve holds one proposal at a time: use policy.batch 1 and policy.pending false")
    if not args.live and (args.token or args.host != "127.0.0.1" or args.port):
        raise UsageError("--host, --port and --token are options of the live page: add --live")
    return cfg


COMMANDS = {"control": _cmd_control, "watch": _cmd_watch}
