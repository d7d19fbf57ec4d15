"""The instrument-link commands of the CLI: ``aexp serve``, ``aexp describe``, ``aexp keys new``.

``aexp serve --sim NAME`` builds the instrument registered as ``NAME`` in ``aexp.instruments``
(a simulator, or a lab's own instrument) and serves it with :mod:`aexp.link.serve`; ``--faults`` wraps it
in the fault plan found through the ``aexp.faults`` entry-point group. ``aexp describe ADDR`` asks
a server through the ``zmq`` driver, also found by entry point: ``aexp`` imports neither
``drivers`` nor ``simulators``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import yaml

from ..errors import UsageError

__all__ = ["add_subcommands", "COMMANDS"]


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--option takes KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    """Add ``serve``, ``describe`` and ``keys`` to the ``aexp`` parser."""
    serve = sub.add_parser("serve", help="serve an instrument (e.g. a simulator) over ZeroMQ")
    serve.add_argument("--sim", required=True, metavar="NAME", help="instrument name in aexp.instruments")
    serve.add_argument("--bind", default="tcp://127.0.0.1:5555", metavar="ADDR")
    serve.add_argument("--seed", type=int, default=0)
    serve.add_argument("--faults", type=Path, default=None, metavar="FAULTS.yaml", help="inject seeded faults")
    serve.add_argument("--option", "-o", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                       help="instrument option (YAML value), e.g. -o survey_pixels=64; repeatable")
    serve.add_argument("--keys", type=Path, default=None, metavar="DIR", help="server secret key (CURVE)")
    serve.add_argument("--allow", type=Path, default=None, metavar="DIR", help="client public keys accepted")
    serve.add_argument("--lease-s", type=float, default=60.0, help="lease expiry after the last command")
    serve.add_argument("--executed-log", type=Path, default=None, metavar="FILE",
                       help="append executed measure commands and results here (JSON lines); default: a file "
                            "per instrument and address in --state-dir")
    serve.add_argument("--state-dir", type=Path, default=None, metavar="DIR",
                       help="where the server keeps its executed-command log (default: $XDG_STATE_HOME/aexp/serve, "
                            "else ~/.local/state/aexp/serve)")
    serve.add_argument("--no-executed-log", action="store_true",
                       help="keep executed commands in memory only: a restarted server forgets them and may "
                            "measure a retried command twice (for benchmarks of the log's cost)")
    serve.add_argument("--log-no-fsync", action="store_true",
                       help="flush the executed log without fsync (survives a crash of the server, not of the computer)")

    describe = sub.add_parser("describe", help="print what the instrument at ADDR can do")
    describe.add_argument("address", metavar="ADDR")
    describe.add_argument("--timeout-s", type=float, default=5.0)
    describe.add_argument("--keys", type=Path, default=None, metavar="DIR", help="client secret key (CURVE)")
    describe.add_argument("--server-key", type=Path, default=None, metavar="FILE", help="server public key")

    keys = sub.add_parser("keys", help="CURVE key pairs for the instrument link")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    new = keys_sub.add_parser("new", help="make a key pair NAME.key (public) + NAME.key_secret in DIR")
    new.add_argument("dir", type=Path, metavar="DIR")
    new.add_argument("--name", default="aexp", help="file name stem (default: aexp)")


def _faulty(instrument: Any, path: Path, seed: int) -> tuple[Any, Any]:
    from ..link.serve import FAULTS_ENTRY_POINT_GROUP

    found = [ep for ep in entry_points(group=FAULTS_ENTRY_POINT_GROUP) if ep.name == "yaml"]
    if not found:
        raise UsageError("--faults: no fault injector registered (entry point 'yaml' in group 'aexp.faults')")
    return found[0].load()(instrument, path, seed=seed)


def cmd_serve(args: argparse.Namespace) -> int:
    from ..instrument import load_instrument
    from ..link.serve import ServerConfig, default_state_dir, run_server

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    instrument = load_instrument(args.sim, dict(args.option), seed=args.seed)
    hooks = None
    if args.faults is not None:
        instrument, hooks = _faulty(instrument, args.faults, args.seed)
    state_dir = args.state_dir if args.state_dir is not None else default_state_dir(os.environ)
    if args.no_executed_log:
        if args.executed_log is not None:
            raise UsageError("--no-executed-log and --executed-log exclude each other")
        state_dir = None
    config = ServerConfig(bind=args.bind, keys=args.keys, allow=args.allow, lease_s=args.lease_s,
                          executed_log=args.executed_log, state_dir=state_dir, log_fsync=not args.log_no_fsync)
    import zmq

    from ..link.serve import ExecutedLogInUse

    try:
        run_server(instrument, config, hooks, announce=lambda line: print(line, flush=True))
    except zmq.ZMQError as exc:
        raise UsageError(f"cannot serve on {args.bind}: {exc}") from None
    except ExecutedLogInUse as exc:
        raise UsageError(str(exc)) from None
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    from ..instrument import LinkClient, load_instrument

    options: dict[str, Any] = {"address": args.address, "timeout_s": args.timeout_s, "retries": 1}
    if args.keys is not None or args.server_key is not None:
        options.update(keys=args.keys, server_key=args.server_key)
    client = load_instrument("zmq", options)
    if not isinstance(client, LinkClient):
        raise UsageError(f"the installed 'zmq' instrument ({type(client).__name__}) is not a link client "
                         "(it has no hello() and close())")
    try:
        hello = client.hello()
        desc = client.describe()
    finally:
        client.close()
    print(json.dumps({"address": args.address, "protocol_version": hello.get("protocol_version"),
                      **desc.to_dict()}, indent=2))
    return 0


# a plain file stem: no separators, no leading dot, so the key files land inside DIR
_KEY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


def cmd_keys(args: argparse.Namespace) -> int:
    import zmq.auth

    if not _KEY_NAME.fullmatch(args.name) or ".." in args.name:
        raise UsageError(
            f"keys new: --name {args.name!r} must be a plain file name (letters, digits, '_', '-', '.'; "
            f"at most 64 characters, no path separators, no leading '.'), so the keys stay inside {args.dir}"
        )
    public, secret = args.dir / f"{args.name}.key", args.dir / f"{args.name}.key_secret"
    existing = [str(p) for p in (public, secret) if p.exists()]
    if existing:
        raise UsageError(f"keys new: {', '.join(existing)} already exist; choose another --name or DIR")
    args.dir.mkdir(parents=True, exist_ok=True)
    zmq.auth.create_certificates(str(args.dir), args.name)
    secret.chmod(0o600)
    print(f"public key: {public}  (give this to the other side)")
    print(f"secret key: {secret}  (keep private)")
    return 0


COMMANDS = {"serve": cmd_serve, "describe": cmd_describe, "keys": cmd_keys}
