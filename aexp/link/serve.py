"""The instrument server: exposes any :class:`~aexp.instrument.Instrument` over ZeroMQ.

One request, one reply (:mod:`aexp.link.wire` messages). The server socket is a ROUTER, so a request
can be answered, answered late or not at all (fault injection) without the strict send/receive
alternation of a REP socket; clients use REQ sockets (the "lazy pirate" client of the pyzmq guide).

Method table (nothing else is callable; there is no dispatch by arbitrary name):

==========  ======  ====================================================================
method      lease   what it does
==========  ======  ====================================================================
hello       no      version handshake; returns the server's protocol and instrument name
describe    no      the instrument's :class:`~aexp.types.InstrumentDescription`
ping        no      liveness; never touches the instrument
status      no      ``{state}`` of a measure command id: done | lost | unknown
lease       -       take or renew the single controller lease: ``client`` (a name shown to others),
                    optional ``token`` (the holder's secret, 22-200 characters); replies
                    ``{client, lease_s, token}``. Commands marked "yes" carry ``lease: TOKEN``
release     yes     give the lease back
survey      yes     the survey image (raw float32 frame)
measure     yes     one spectrum at ``position``; a repeated ``command_id`` returns the stored
                    result and measures nothing; ``metadata.server_wall_s`` is the instrument's
                    wall time
abort       yes     stop what the instrument is doing (``abort()`` if the instrument has one)
==========  ======  ====================================================================

Idempotent measure: every executed measure command is appended to the executed-command log with
its outcome (spectrum or error) before the reply leaves; a JSON-lines file, fsync'ed per line
(``log_fsync``), at ``executed_log`` or, when only ``state_dir`` is given, at
``state_dir/executed-<instrument>-<endpoint>.jsonl`` (``aexp serve`` always gives one: durable by
default). A repeated ``command_id`` is answered from the last ``results_kept`` outcomes and never
measured again; an older one (of the last ``ids_kept``) is refused (``MeasurementFailed``), and
``status`` says ``lost`` for it. A server restarted on the same log file answers for the commands
its predecessor ran, so a crash between measuring and replying costs no second exposure. The file
is compacted when it holds ``2 x results_kept`` outcomes. Without a file (the library's default,
for tests and in-process use), a crashed process forgets, and a client re-sends what it cannot
confirm.

Security: the default bind is ``tcp://127.0.0.1:5555``. Any address that is not loopback is
refused unless CURVE keys are given; with keys, a ZAP authenticator accepts only clients whose
public keys are in the allow-list directory.

Fault injection hooks in through :class:`ServerHooks` (decisions about replies: delay, drop,
restart); instrument-level faults wrap the instrument itself. ``aexp`` never imports
``simulators``: the CLI finds a fault plan through the ``aexp.faults`` entry-point group.

Example:
    >>> server = InstrumentServer(my_instrument, ServerConfig(bind="tcp://127.0.0.1:*"))
    >>> server.start()            # in a thread; server.address is the bound endpoint
    >>> ...; server.stop()
"""

from __future__ import annotations

import base64
import collections
import fcntl
import hmac
import ipaddress
import json
import logging
import math
import os
import re
import secrets
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import zmq
import zmq.auth
from pydantic import BaseModel, ConfigDict, Field

from ..errors import AexpError
from ..instrument import Instrument, InstrumentError, MeasurementFailed
from ..types import InstrumentDescription
from .wire import (
    PROTOCOL_VERSION,
    InvalidParams,
    LeaseHeld,
    LeaseRequired,
    Limits,
    Message,
    ProtocolError,
    RemoteError,
    UnknownMethod,
    best_effort_id,
    decode,
    encode_error,
    encode_result,
    error_payload,
    exception_from_payload,
    measurement_to_wire,
    survey_to_wire,
)

__all__ = [
    "ServerConfig",
    "ServerAction",
    "ServerHooks",
    "InstrumentServer",
    "InsecureBind",
    "is_loopback",
    "run_server",
    "secret_key_file",
    "ExecutedLogInUse",
    "executed_log_name",
    "default_state_dir",
    "FAULTS_ENTRY_POINT_GROUP",
]

log = logging.getLogger("aexp.link.serve")
FAULTS_ENTRY_POINT_GROUP = "aexp.faults"
_POLL_MS = 50  # how often the serving loop looks at its stop flag


class InsecureBind(AexpError, ValueError):
    """A non-loopback bind was asked for without CURVE keys, or keys without an allow-list."""


class ServerConfig(BaseModel):
    """How the server listens and what it remembers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bind: str = Field("tcp://127.0.0.1:5555", description="ZeroMQ endpoint; port '*' picks a free one")
    keys: Path | None = Field(None, description="server secret key: a .key_secret file or a folder holding one")
    allow: Path | None = Field(None, description="folder of client public keys (.key) accepted under CURVE")
    lease_s: float = Field(60.0, gt=0, description="a lease expires this long after its holder's last command")
    results_kept: int = Field(1024, ge=1, description="measure results kept by command id")
    max_message_bytes: int = Field(64 * 2**20, ge=1024, description="largest request accepted")
    linger_ms: int = Field(1000, ge=1, description="time to flush replies when closing (must be > 0)")
    executed_log: Path | None = Field(
        None, description="JSON-lines log of executed measure commands and results; survives a restart"
    )
    state_dir: Path | None = Field(
        None, description="folder for the executed log when executed_log is not given: one file per "
        "instrument and bound endpoint, so a server restarted on the same address finds its own",
    )
    ids_kept: int = Field(100_000, ge=1, description="executed command ids remembered (beyond results_kept)")
    log_fsync: bool = Field(
        True, description="fsync each log line (survives power loss); flushing alone survives a process crash"
    )


@dataclass(frozen=True)
class ServerAction:
    """What a hook wants done with one request. ``kind``: reply | delay | drop | restart."""

    kind: str = "reply"
    seconds: float = 0.0


class ServerHooks(Protocol):
    """Decides, per request, whether the reply goes out normally, late, never, or the server restarts.

    ``delay`` and ``drop`` apply after the method ran; ``restart`` happens before it runs: the
    server closes its socket (queued requests are lost), forgets the lease, and binds again after
    ``seconds``, as a crashed and restarted process would; its executed-command log, a file in
    that case, is kept.
    """

    def on_request(self, method: str, params: dict[str, Any]) -> ServerAction: ...


def is_loopback(endpoint: str) -> bool:
    """Whether a ZeroMQ endpoint can only be reached from this computer."""
    transport, _, rest = endpoint.partition("://")
    if transport in ("ipc", "inproc"):
        return True
    if transport != "tcp":
        return False
    host = rest.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # '*', an interface name or a host name: reachable from outside
        return False


def secret_key_file(path: Path) -> Path:
    """The ``.key_secret`` file at ``path``, or the only one inside the folder ``path``."""
    if path.is_dir():
        found = sorted(path.glob("*.key_secret"))
        if len(found) != 1:
            raise InsecureBind(f"{path}: expected exactly one .key_secret file, found {len(found)}")
        return found[0]
    if not path.is_file():
        raise InsecureBind(f"{path}: no such key file or folder")
    return path


class _Lease:
    """The single controller lease: a holder's name, a secret token, the holder's CURVE key (if
    any) and an expiry on the monotonic clock.

    The token is the credential; the name is only for people ("leased by controller 'lab-pc'").
    A controller proves it holds the lease by the token, which the server hands back only in the
    reply to the ``lease`` request that took it (or the controller chose it and sent it there);
    no error message or log line carries it. Under CURVE the lease is also bound to the public
    key that took it: the token alone, replayed from another key, does not work.
    """

    def __init__(self, duration_s: float) -> None:
        self.duration_s = duration_s
        self.holder: str | None = None
        self._token = ""
        self._key: str | None = None
        self.expires = 0.0

    def active_holder(self) -> str | None:
        return self.holder if self.holder is not None and time.monotonic() < self.expires else None

    def _proves(self, token: Any, key: str | None) -> bool:
        return (
            isinstance(token, str) and bool(self._token) and hmac.compare_digest(token.encode(), self._token.encode())
            and key == self._key
        )

    def take(self, client: str, token: str | None, key: str | None) -> str:
        """Take a free lease, or renew one this token (and key) already holds; returns the token."""
        holder = self.active_holder()
        if holder is not None and not self._proves(token, key):
            left = self.expires - time.monotonic()
            raise LeaseHeld(
                f"the instrument is leased by controller {holder!r} for another {left:.1f} s; it expires "
                f"{self.duration_s:g} s after its holder's last command"
            )
        if holder is None:
            self._token = token or secrets.token_urlsafe(32)
            self._key = key
        self.holder, self.expires = client, time.monotonic() + self.duration_s
        return self._token

    def check(self, token: Any, key: str | None) -> None:
        holder = self.active_holder()
        if holder is None or not self._proves(token, key):
            why = f"held by {holder!r}" if holder else "not held (expired, released or server restarted)"
            raise LeaseRequired(f"this command needs the lease's token; the lease is {why}: call 'lease' first")
        self.expires = time.monotonic() + self.duration_s

    def release(self) -> None:
        self.holder, self._token, self._key = None, "", None


def _pack(outcome: Any) -> dict[str, Any]:
    """A measure outcome as JSON: the reply's result and base64 arrays, or the error payload."""
    if isinstance(outcome, BaseException):
        return {"error": error_payload(outcome)}
    meta, arrays = outcome
    packed = {}
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        packed[name] = {"dtype": a.dtype.str, "shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode()}
    return {"result": meta, "arrays": packed}


def _unpack(record: dict[str, Any]) -> Any:
    if "error" in record:
        return exception_from_payload(record["error"])
    arrays = {
        name: np.frombuffer(base64.b64decode(a["data"]), dtype=np.dtype(a["dtype"])).reshape(a["shape"])
        for name, a in record["arrays"].items()
    }
    return record["result"], arrays


class ExecutedLogInUse(AexpError, RuntimeError):
    """Another server process already appends to this executed-command log."""


class _ExecutedLog:
    """Measure commands the instrument executed, with their outcomes: the server's memory that a
    restart does not erase when it is a file (JSON lines, one flushed -- and fsync'ed -- line per
    command, before the reply leaves).

    ``ids`` holds the last ``ids_kept`` executed ids (enough to say ``lost`` rather than run a
    command twice); ``recent`` the last ``keep`` outcomes, which a repeated command id is answered
    from. The file stays bounded: when it holds more than ``2 x keep`` outcomes it is rewritten
    (to a temporary file, fsync'ed, then renamed over the old one) with the ``keep`` recent
    outcomes in full and the other kept ids as one short line each. A lock file beside it keeps a
    second server from appending to the same log.
    """

    def __init__(self, path: Path | None, keep: int, fsync: bool = True, ids_kept: int = 100_000) -> None:
        self.path: Path | None = None
        self.fsync = fsync
        self.keep = keep
        self.ids_kept = max(ids_kept, keep)
        self.entries: list[dict[str, Any]] = []  # this run's, in order (the duplicate audit reads them)
        self.ids: dict[str, None] = {}  # insertion-ordered: the oldest are forgotten first
        self.recent: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._file: Any = None
        self._lock: Any = None
        self._full_lines = 0
        if path is not None:
            self.attach(path)

    def attach(self, path: Path) -> None:
        """Load what ``path`` remembers and append to it from now on (taking its lock)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = open(path.with_name(path.name + ".lock"), "a")
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            self._lock = None
            raise ExecutedLogInUse(
                f"executed-command log {path} is in use by another 'aexp serve'; give this server its own "
                f"--executed-log FILE or --state-dir DIR"
            ) from None
        self.path = path
        if path.exists():
            text = path.read_text()
            for line in text.splitlines():
                try:
                    self._index(json.loads(line))
                except (ValueError, KeyError, TypeError):
                    continue  # a torn last line from a crash
            torn = bool(text) and not text.endswith("\n")
        else:
            torn = False
        self._file = open(path, "a")
        if torn:  # end the torn line, or the next entry would be glued to it and lost
            self._file.write("\n")
            self._sync()
        self._compact_if_due()

    def _index(self, entry: dict[str, Any]) -> None:
        cid = entry["command_id"]
        if not isinstance(cid, str):
            raise TypeError("command_id")
        self.ids.pop(cid, None)
        self.ids[cid] = None
        while len(self.ids) > self.ids_kept:
            del self.ids[next(iter(self.ids))]
        if "result" in entry or "error" in entry:
            self._full_lines += 1
            self.recent[cid] = entry
            self.recent.move_to_end(cid)
            while len(self.recent) > self.keep:
                self.recent.popitem(last=False)

    def _sync(self) -> None:
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())

    def append(self, cid: str, position: tuple[float, float], outcome: Any) -> None:
        what = "ok" if not isinstance(outcome, BaseException) else f"{type(outcome).__name__}: {outcome}"
        entry = {"command_id": cid, "position": list(position), "outcome": what, "t": time.time(), **_pack(outcome)}
        log.info("executed measure %s at %s: %s", cid, entry["position"], what)
        if self._file is not None:  # on disk before the reply leaves
            self._file.write(json.dumps(entry) + "\n")
            self._sync()
        self.entries.append({k: entry[k] for k in ("command_id", "position", "outcome", "t")})
        self._index(entry)
        self._compact_if_due()

    def _compact_if_due(self) -> None:
        if self._file is None or self.path is None or self._full_lines <= 2 * self.keep:
            return
        tmp = self.path.with_name(self.path.name + ".compacting")
        with open(tmp, "w") as out:
            for cid in self.ids:
                if cid not in self.recent:
                    out.write(json.dumps({"command_id": cid}) + "\n")
            for entry in self.recent.values():
                out.write(json.dumps(entry) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a power loss
        finally:
            os.close(dir_fd)
        self._file.close()
        self._file = open(self.path, "a")
        self._full_lines = len(self.recent)
        log.info("compacted %s: %d outcomes, %d ids", self.path, len(self.recent), len(self.ids))

    def outcome(self, cid: str) -> tuple[tuple[float, float], Any] | None:
        entry = self.recent.get(cid)
        return None if entry is None else (tuple(entry["position"]), _unpack(entry))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._lock is not None:
            self._lock.close()  # closing releases the flock
            self._lock = None


def _position(params: dict[str, Any]) -> tuple[float, float]:
    p = params.get("position")
    # math.isfinite, not np.isfinite: a Python int too large for int64 is an object to numpy
    if not (isinstance(p, list) and len(p) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in p
    )):
        raise InvalidParams(f"'position' must be [x, y], two finite numbers in metres; got {p!r:.60}")
    return float(p[0]), float(p[1])


def _string(params: dict[str, Any], name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value or len(value) > 200:
        raise InvalidParams(f"'{name}' must be a non-empty string of at most 200 characters; got {value!r:.60}")
    return value


Reply = tuple[dict[str, Any], dict[str, np.ndarray]]


class InstrumentServer:
    """Serves one instrument on one endpoint. Build, then :meth:`serve` (blocking) or :meth:`start`."""

    def __init__(self, instrument: Instrument, config: ServerConfig = ServerConfig(),
                 hooks: ServerHooks | None = None) -> None:
        self.instrument = instrument
        self.config = config
        self.hooks = hooks
        self.limits = Limits(max_message_bytes=config.max_message_bytes)
        self.address: str | None = None
        self.executed = _ExecutedLog(config.executed_log, config.results_kept, config.log_fsync, config.ids_kept)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._desc: InstrumentDescription | None = None
        self._methods: dict[str, tuple[bool, Callable[[Message], Reply]]] = {
            "hello": (False, self._hello), "describe": (False, self._describe),
            "ping": (False, self._ping), "status": (False, self._status),
            "lease": (False, self._lease_take), "release": (True, self._release),
            "survey": (True, self._survey), "measure": (True, self._measure),
            "abort": (True, self._abort),
        }
        self._reset_memory()

    # --- lifecycle ---

    def _reset_memory(self) -> None:
        """What a process loses when it dies: the lease (the executed log models the disk)."""
        self._lease = _Lease(self.config.lease_s)

    def _check_security(self) -> None:
        if self.config.keys is None and not is_loopback(self.config.bind):
            raise InsecureBind(
                f"refusing to bind {self.config.bind} without CURVE keys: anyone on the network could "
                f"drive the instrument. Bind tcp://127.0.0.1 and use an SSH tunnel, or make keys with "
                f"'aexp keys new DIR' and pass --keys DIR --allow CLIENT_KEYS_DIR"
            )
        if self.config.keys is not None and self.config.allow is None:
            raise InsecureBind("--keys needs --allow DIR: the folder of client public keys to accept")
        if self.config.allow is not None and not self.config.allow.is_dir():
            raise InsecureBind(f"--allow {self.config.allow}: not a folder of client public keys")

    def _open(self, ctx: zmq.Context, endpoint: str) -> zmq.Socket:
        keys = zmq.auth.load_certificate(secret_key_file(self.config.keys)) if self.config.keys else None
        sock = ctx.socket(zmq.ROUTER)
        sock.linger = self.config.linger_ms  # a positive linger: a reply sent just before close still leaves
        sock.setsockopt(zmq.MAXMSGSIZE, self.config.max_message_bytes)  # larger frames: peer dropped
        if keys is not None:
            sock.curve_publickey, sock.curve_secretkey = keys
            sock.curve_server = True
        try:
            sock.bind(endpoint)
        except zmq.ZMQError:
            sock.close(linger=0)  # an open socket would block the context's termination
            raise
        return sock

    def serve(self, stop: threading.Event | None = None, on_ready: Callable[[str], None] | None = None) -> None:
        """Serve until :meth:`stop` (or ``stop`` is set); ``on_ready`` gets the bound address.

        Raises:
            InsecureBind: before binding, for a non-loopback address without keys.
            zmq.ZMQError: the address cannot be bound (in use, malformed).
        """
        self._check_security()
        stop = stop or self._stop
        ctx = zmq.Context()
        auth, sock = None, None
        try:
            if self.config.keys is not None:
                from zmq.auth.thread import ThreadAuthenticator

                auth = ThreadAuthenticator(ctx)
                auth.start()
                auth.configure_curve(domain="*", location=str(self.config.allow))
            sock = self._open(ctx, self.config.bind)
            self.address = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            if self.executed.path is None and self.config.state_dir is not None:
                self.executed.attach(self.config.state_dir / executed_log_name(self._description().name, self.address))
            log.info("serving %s on %s; executed-command log: %s", type(self.instrument).__name__, self.address,
                     self.executed.path or "in memory only (a restarted server forgets)")
            self._ready.set()
            if on_ready is not None:
                on_ready(self.address)
            while not stop.is_set():
                if sock.poll(_POLL_MS, zmq.POLLIN):
                    sock = self._handle_safely(ctx, sock, sock.recv_multipart(copy=False))
        finally:
            if sock is not None:
                sock.close()
            if auth is not None:
                auth.stop()
            ctx.term()
            self.executed.close()
            log.info("server on %s stopped", self.address)

    def start(self, timeout_s: float = 10.0) -> str:
        """Serve in a background thread; returns the bound address once listening."""
        self._thread = threading.Thread(target=self.serve, name="aexp-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError("server did not start listening in time")
        return str(self.address)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)

    # --- one request ---

    def _handle_safely(self, ctx: zmq.Context, sock: zmq.Socket, frames: list[Any]) -> zmq.Socket:
        """One request; nothing it does, however malformed, ends the serving loop."""
        try:
            return self._handle(ctx, sock, frames)
        except Exception:  # a bug on our side for one message must not take the instrument offline
            log.exception("a request failed outside any method; the server goes on")
            if len(frames) >= 3:
                try:
                    error = RemoteError("the server could not handle this request; see its log")
                    sock.send_multipart([frames[0].bytes, b"", *encode_error(None, error)], copy=False)
                except Exception:
                    log.exception("could not answer the failed request")
            return sock

    def _handle(self, ctx: zmq.Context, sock: zmq.Socket, frames: list[Any]) -> zmq.Socket:
        # ROUTER envelope from a REQ peer: [identity, b"", header, arrays...]
        if len(frames) < 3 or len(frames[1].bytes) != 0:
            log.warning("dropped a message without a REQ envelope (%d frames)", len(frames))
            return sock
        envelope, body = [frames[0].bytes, b""], frames[2:]
        try:
            msg = decode(body, self.limits)
        except ProtocolError as exc:  # decode raises nothing else
            log.warning("refused a malformed request: %s", exc)
            sock.send_multipart(envelope + encode_error(best_effort_id(body, self.limits), exc), copy=False)
            return sock
        action = self.hooks.on_request(msg.method or "", msg.params) if self.hooks else ServerAction()
        if action.kind == "restart":
            return self._restart(ctx, sock, action.seconds)
        reply = self._execute(msg, _curve_key(body[0]))
        if action.kind == "drop":
            log.info("fault: dropped the reply to %s %s", msg.method, msg.id)
            return sock
        if action.kind == "delay":
            log.info("fault: delaying the reply to %s %s by %.2f s", msg.method, msg.id, action.seconds)
            time.sleep(action.seconds)
        sock.send_multipart(envelope + reply, copy=False)
        return sock

    def _execute(self, msg: Message, key: str | None = None) -> list[Any]:
        """Run one decoded request; ``key``: the sender's CURVE public key (Z85), if CURVE is on."""
        try:
            entry = self._methods.get(msg.method or "")
            if entry is None:
                raise UnknownMethod(f"unknown method {msg.method!r}; methods: {', '.join(sorted(self._methods))}")
            needs_lease, method = entry
            if needs_lease:
                self._lease.check(msg.params.get("lease"), key)
            if method == self._lease_take:
                return encode_result(msg.id, *self._lease_take(msg, key))
            return encode_result(msg.id, *method(msg))
        except Exception as exc:  # every failure becomes a structured reply; the server goes on
            if not isinstance(exc, InstrumentError):
                log.exception("method %s failed", msg.method)
            return encode_error(msg.id, exc)

    def _restart(self, ctx: zmq.Context, sock: zmq.Socket, down_s: float) -> zmq.Socket:
        log.warning("fault: server restart (down %.2f s); the lease and queued requests are lost", down_s)
        sock.close(linger=0)
        self._reset_memory()
        time.sleep(down_s)
        return self._open(ctx, str(self.address))

    # --- the method table ---

    def _hello(self, msg: Message) -> Reply:
        return {"protocol_version": PROTOCOL_VERSION, "instrument": self._description().name}, {}

    def _description(self) -> InstrumentDescription:
        if self._desc is None:  # asked once: a description does not change while serving
            self._desc = self.instrument.describe()
        return self._desc

    def _describe(self, msg: Message) -> Reply:
        return self._description().to_dict(), {}

    def _ping(self, msg: Message) -> Reply:
        return {"pong": True}, {}

    def _status(self, msg: Message) -> Reply:
        cid = _string(msg.params, "command_id")
        if cid in self.executed.recent:
            state = "done"
        elif cid in self.executed.ids:
            state = "lost"  # it ran, but the result is no longer here (restart or evicted)
        else:
            state = "unknown"
        return {"command_id": cid, "state": state}, {}

    def _lease_take(self, msg: Message, key: str | None = None) -> Reply:
        client = _string(msg.params, "client")
        token = msg.params.get("token")
        if token is not None and (not isinstance(token, str) or not 22 <= len(token) <= 200):
            raise InvalidParams("'token' must be a secret string of 22 to 200 characters (or left out)")
        token = self._lease.take(client, token, key)
        log.info("lease taken or renewed by controller %r", client)
        # the token travels only in this reply, to the controller that holds the lease
        return {"client": client, "lease_s": self._lease.duration_s, "token": token}, {}

    def _release(self, msg: Message) -> Reply:
        self._lease.release()
        return {"released": True}, {}

    def _survey(self, msg: Message) -> Reply:
        return survey_to_wire(self.instrument.survey())

    def _abort(self, msg: Message) -> Reply:
        abort = getattr(self.instrument, "abort", None)
        if callable(abort):
            abort()
        return {"aborted": callable(abort)}, {}

    def _measure(self, msg: Message) -> Reply:
        position, cid = _position(msg.params), _string(msg.params, "command_id")
        stored = self.executed.outcome(cid)
        if stored is None and cid in self.executed.ids:
            raise MeasurementFailed(f"command {cid!r} already ran but its result is no longer kept; not measuring twice")
        if stored is not None:
            stored_at, stored_outcome = stored
            if stored_at != position:
                raise InvalidParams(f"command id {cid!r} was already used for position {list(stored_at)}")
            log.info("repeated measure %s: stored result returned, nothing measured", cid)
            if isinstance(stored_outcome, BaseException):
                raise stored_outcome
            return stored_outcome
        try:
            t0 = time.perf_counter()
            meta, arrays = measurement_to_wire(self.instrument.measure(position, command_id=cid))
            # the instrument's own wall time, so a client can tell link time from instrument time
            meta["metadata"] = {**meta["metadata"], "server_wall_s": time.perf_counter() - t0}
            outcome: Any = (meta, arrays)
        except InstrumentError as exc:
            outcome = exc
        self._remember(cid, position, outcome)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _remember(self, cid: str, position: tuple[float, float], outcome: Any) -> None:
        self.executed.append(cid, position, outcome)


def executed_log_name(instrument: str, endpoint: str) -> str:
    """File name of the executed log of ``instrument`` served on ``endpoint`` (a bound address)."""
    return "executed-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{instrument}-{endpoint.partition('://')[2]}") + ".jsonl"


def default_state_dir(environ: Mapping[str, str]) -> Path:
    """Where ``aexp serve`` keeps its state: ``$XDG_STATE_HOME/aexp/serve`` (``~/.local/state/...``)."""
    base = environ.get("XDG_STATE_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".local" / "state")
    return Path(base) / "aexp" / "serve"


def _curve_key(frame: Any) -> str | None:
    """The sender's CURVE public key (Z85) as the ZAP handler authenticated it; None without CURVE."""
    try:
        return frame.get("User-Id") or None
    except (zmq.ZMQError, AttributeError, TypeError):  # no ZAP on this socket, or bytes in tests
        return None


def run_server(instrument: Instrument, config: ServerConfig, hooks: ServerHooks | None = None,
               announce: Callable[[str], None] = print) -> None:
    """Serve in the foreground until SIGINT or SIGTERM; ``announce`` gets the bound address.

    The entry point of a served instrument, so its executed-command log is durable by default:
    with neither ``executed_log`` nor ``state_dir`` in ``config``, it goes to
    :func:`default_state_dir` (``$XDG_STATE_HOME/aexp/serve``).
    """
    if config.executed_log is None and config.state_dir is None:
        config = config.model_copy(update={"state_dir": default_state_dir(os.environ)})
    server = InstrumentServer(instrument, config, hooks)
    stop = threading.Event()

    def _on_signal(signum: int, frame: Any) -> None:
        log.info("signal %s: shutting down", signal.Signals(signum).name)
        stop.set()  # the serving loop sees it within one poll interval and closes cleanly

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.serve(stop, on_ready=lambda address: announce(f"serving on {address}"))
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
