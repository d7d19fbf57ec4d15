"""ZeroMQ client driver: an :class:`~aexp.instrument.Instrument` served by ``aexp serve`` elsewhere.

Registered as ``zmq`` in the ``aexp.instruments`` entry-point group, so a config says::

    instrument:
      driver: zmq
      options: {address: "tcp://127.0.0.1:5555", timeout_s: 5}

Reliability, after the "lazy pirate" client of the pyzmq guide: every request waits on
``poll(deadline)`` (never a busy loop); when the deadline passes, the REQ socket is closed and a
fresh one connects. Idempotent requests (hello, describe, survey, status, ping, lease) are then
simply sent again, up to ``retries`` times. A ``measure`` is never re-sent blindly: the client first
asks ``status(command_id)``. ``done`` -> the re-sent command returns the server's stored result
without measuring; ``unknown`` -> it never ran (e.g. the server restarted mid-measurement) and is
sent again; ``lost`` -> it ran but its result died with the server, so it is reported as
:class:`~aexp.instrument.MeasurementFailed` instead of exposing the sample twice.

Deadlines: ``timeout_s`` for every call; ``measure`` waits ``timeout_s + 2 x`` the instrument's
declared ``measurement_time_s`` (from ``describe()``) unless ``measure_timeout_s`` is given.

No reply of any kind after all of that (not to the request, not to a ``status`` question) means
the server cannot be reached: :class:`~aexp.instrument.InstrumentUnreachable`, which says nothing
about the position; a server that answered that the measurement failed raises
:class:`~aexp.instrument.MeasurementFailed`, which does. A server that answers ``status`` but not
the measurement in time is an :class:`~aexp.instrument.InstrumentTimeout`.

The lease: the driver holds a secret token (its own random one, or the ``lease_token`` option);
the first command that drives the instrument takes the lease with it, every such command carries
it, and ``client_id`` is only the name others see when they are refused. Because the token is
the driver's own, taking the lease is idempotent (a lost reply is simply re-sent), a restarted
server's forgotten lease is taken again with the same token, and a run that records
:attr:`ZmqInstrument.lease_token` can hand it back through ``lease_token`` when resumed, to take
its lease back at once even when its killed predecessor's lease has not expired yet. Another
controller's lease surfaces as :class:`~aexp.link.wire.LeaseHeld`. :meth:`close` (also run at
interpreter exit) gives it back; a killed client's lease expires on the server after its ``lease_s``.

``describe()`` is asked once per driver and cached: the loop may call it several times per run.

Example:
    >>> inst = ZmqInstrument(address="tcp://127.0.0.1:5555", timeout_s=2.0)
    >>> inst.describe().name
    'plasmonic'
    >>> m = inst.measure((40e-9, 52e-9), command_id="run1-0")
"""

from __future__ import annotations

import atexit
import logging
import secrets
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, overload

import zmq
import zmq.auth
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aexp.instrument import InstrumentTimeout, InstrumentUnreachable, MeasurementFailed
from aexp.link.wire import (
    PROTOCOL_VERSION,
    LeaseRequired,
    Limits,
    MalformedMessage,
    Message,
    decode,
    description_from_wire,
    encode_request,
    measurement_from_wire,
    raise_remote_error,
    survey_from_wire,
)
from aexp.types import Bounds, InstrumentDescription, Measurement, Survey

__all__ = ["ZmqInstrument", "ZmqOptions"]

log = logging.getLogger("aexp.drivers.zmq")


class ZmqOptions(BaseModel):
    """Options of the ``zmq`` driver (the ``instrument.options`` of a config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str = Field("tcp://127.0.0.1:5555", description="the server's endpoint")
    timeout_s: float = Field(5.0, gt=0, description="deadline of every request")
    measure_timeout_s: float | None = Field(None, gt=0, description="deadline of measure; default from describe()")
    retries: int = Field(3, ge=0, description="re-sends after a deadline passes")
    keys: Path | None = Field(None, description="this client's secret key: a .key_secret file or its folder")
    server_key: Path | None = Field(None, description="the server's public key file (.key) for CURVE")
    client_id: str | None = Field(None, description="name shown with the lease; default: random per driver")
    lease_token: str | None = Field(
        None, min_length=22, max_length=200,
        description="the lease's secret token (a resumed run's recorded one); default: random per driver",
    )
    max_message_bytes: int = Field(256 * 2**20, ge=1024, description="largest reply accepted")


def _secret_key_file(path: Path) -> Path:
    if path.is_dir():
        found = sorted(path.glob("*.key_secret"))
        if len(found) != 1:
            raise ValueError(f"zmq: keys: expected one .key_secret file in {path}, found {len(found)}")
        return found[0]
    return path


class ZmqInstrument:
    """An instrument on the other end of a ZeroMQ link (implements ``aexp.instrument.Instrument``).

    Args:
        seed: ignored (the server's instrument owns its seed); accepted so that every driver is
            built alike by ``load_instrument``.
        **options: fields of :class:`ZmqOptions`.

    Raises:
        ValueError: an option is unknown or invalid, or CURVE keys are half given.
    """

    def __init__(self, seed: int = 0, **options: Any) -> None:
        try:
            self.options = ZmqOptions.model_validate(options)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(options)'}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"zmq: invalid option(s): {problems}") from None
        if (self.options.keys is None) != (self.options.server_key is None):
            raise ValueError("zmq: CURVE needs both 'keys' (this client's secret key) and 'server_key'")
        self.client_id = self.options.client_id or f"aexp-{uuid.uuid4().hex[:12]}"
        self._token = self.options.lease_token or secrets.token_urlsafe(32)
        self._replies = 0  # replies of any kind: tells "unreachable" from "too slow"
        self.limits = Limits(max_message_bytes=self.options.max_message_bytes)
        self._ctx: zmq.Context | None = None
        self._sock: zmq.Socket | None = None
        self._greeted = False
        self._leased = False
        self._description: InstrumentDescription | None = None

    @property
    def lease_token(self) -> str:
        """The lease's secret: record it with the run (not in logs) and pass it back as the
        ``lease_token`` option when resuming, to take the lease back at once."""
        return self._token

    @classmethod
    def from_options(cls, options: Mapping[str, Any], seed: int = 0) -> ZmqInstrument:
        """Factory used by ``aexp.instrument.load_instrument``."""
        return cls(seed=seed, **dict(options))

    # --- the socket (lazy pirate) ---

    def _connect(self) -> zmq.Socket:
        if self._ctx is None:
            self._ctx = zmq.Context()
        sock = self._ctx.socket(zmq.REQ)
        sock.linger = 0  # a request abandoned after its deadline must not keep the process alive
        sock.setsockopt(zmq.MAXMSGSIZE, self.options.max_message_bytes)
        keys, server_key = self.options.keys, self.options.server_key
        if keys is not None:
            if server_key is None:  # __init__ refuses this; options changed since
                raise ValueError("zmq: CURVE needs both 'keys' (this client's secret key) and 'server_key'")
            public, secret = zmq.auth.load_certificate(_secret_key_file(keys))
            server_public, _ = zmq.auth.load_certificate(server_key)
            sock.curve_secretkey, sock.curve_publickey, sock.curve_serverkey = secret, public, server_public
        sock.connect(self.options.address)
        return sock

    def _reset(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
        self._sock = None

    def _once(self, method: str, params: dict[str, Any], timeout_s: float) -> Message | None:
        """One request; the checked reply, or ``None`` when the deadline passed (socket rebuilt)."""
        if self._sock is None:
            self._sock = self._connect()
        msg_id = uuid.uuid4().hex
        t0 = time.perf_counter()
        try:
            # A REQ socket's send blocks while it has no ready peer (nothing listening, or a CURVE
            # handshake the server refused): wait for it within the same deadline, never forever.
            if not self._sock.poll(int(timeout_s * 1000), zmq.POLLOUT):
                log.warning("%s: %s took no request within %.2f s; reconnecting", method, self.options.address,
                            timeout_s)
                self._reset()
                return None
            self._sock.send_multipart(encode_request(msg_id, method, params), flags=zmq.NOBLOCK, copy=False)
            left = max(0.0, timeout_s - (time.perf_counter() - t0))
            if not self._sock.poll(int(left * 1000), zmq.POLLIN):
                log.warning("%s: no reply from %s within %.2f s; reconnecting", method, self.options.address, timeout_s)
                self._reset()
                return None
            frames = self._sock.recv_multipart(copy=False)
        except zmq.Again:  # the peer went away between the poll and the send
            log.warning("%s: %s took no request; reconnecting", method, self.options.address)
            self._reset()
            return None
        except BaseException:  # e.g. Ctrl-C while waiting: a REQ socket would stay owed a reply
            self._reset()
            raise
        self._replies += 1
        reply = decode(frames, self.limits)
        log.debug("%s: reply in %.3f ms", method, (time.perf_counter() - t0) * 1e3)
        if reply.id != msg_id and reply.error is None:
            raise MalformedMessage(f"{method}: reply to request {reply.id!r} arrived for {msg_id!r}")
        if reply.error is not None:
            raise_remote_error(reply.error)
        return reply

    def _call(self, method: str, params: dict[str, Any] | None = None, timeout_s: float | None = None) -> Message:
        """An idempotent request, re-sent on a fresh socket after each missed deadline."""
        if not self._greeted and method != "hello":
            self.hello()
        timeout_s = timeout_s or self.options.timeout_s
        for _ in range(1 + self.options.retries):
            reply = self._once(method, dict(params or {}), timeout_s)
            if reply is not None:
                return reply
        raise InstrumentUnreachable(
            f"{method}: no reply from {self.options.address} in {1 + self.options.retries} attempts of "
            f"{timeout_s:.3g} s; is 'aexp serve' running there?"
        )

    @overload
    def _drive(self, method: str, params: dict[str, Any], timeout_s: float | None = None,
               once: Literal[False] = False) -> Message: ...

    @overload
    def _drive(self, method: str, params: dict[str, Any], timeout_s: float | None = None, *,
               once: Literal[True]) -> Message | None: ...

    def _drive(self, method: str, params: dict[str, Any], timeout_s: float | None = None,
               once: bool = False) -> Message | None:
        """A command that drives the instrument: take the lease first; lease again if it was lost.

        ``once``: a single attempt that returns ``None`` on a missed deadline (for ``measure``,
        whose re-sending is decided by ``status``); otherwise re-sent like any idempotent call.
        """
        if not self._leased:
            self.lease()
        params = {**params, "lease": self._token}

        def send() -> Message | None:
            if once:
                return self._once(method, params, timeout_s or self.options.timeout_s)
            return self._call(method, params, timeout_s)

        try:
            return send()
        except LeaseRequired:  # the server restarted or our lease expired: nothing ran; lease and resend
            log.info("%s: lease lost on the server; leasing again", method)
            self.lease()
            return send()

    # --- protocol verbs ---

    def hello(self) -> dict[str, Any]:
        """Version handshake: fails with :class:`~aexp.link.wire.VersionMismatch` naming both versions."""
        result = self._call("hello", {"protocol_version": PROTOCOL_VERSION, "client": self.client_id}).result
        self._greeted = True
        return dict(result or {})

    def ping(self) -> float:
        """Round-trip time in seconds of a request that does not touch the instrument."""
        t0 = time.perf_counter()
        self._call("ping")
        return time.perf_counter() - t0

    def lease(self) -> float:
        """Take (or renew) the controller lease; returns its duration. Raises ``LeaseHeld``."""
        result = self._call("lease", {"client": self.client_id, "token": self._token}).result or {}
        if not self._leased:
            atexit.register(self.close)
        self._leased = True
        return float(result.get("lease_s", 0.0))

    def release(self) -> None:
        """Give the lease back (best effort: a dead server has no lease to give back)."""
        if self._leased:
            self._leased = False
            atexit.unregister(self.close)
            try:
                self._once("release", {"lease": self._token}, min(self.options.timeout_s, 1.0))
            except Exception as exc:  # closing must not fail because the link is gone
                log.info("release: %s", exc)

    def status(self, command_id: str) -> str:
        """``done`` | ``unknown`` | ``lost``: what the server knows of a measure command id."""
        return str((self._call("status", {"command_id": command_id}).result or {}).get("state"))

    def abort(self) -> bool:
        """Ask the instrument to stop what it is doing; whether it has an abort at all."""
        return bool((self._drive("abort", {}).result or {}).get("aborted"))

    def close(self) -> None:
        """Release the lease and close the socket; the driver reconnects if used again."""
        self.release()
        self._reset()
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
        self._greeted = False

    def __enter__(self) -> ZmqInstrument:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- the Instrument protocol ---

    @property
    def bounds(self) -> Bounds:
        return self.describe().bounds

    def describe(self) -> InstrumentDescription:
        """The server's instrument description (asked once, then cached)."""
        if self._description is None:
            self._description = description_from_wire(self._call("describe").result or {})
        return self._description

    def survey(self) -> Survey:
        reply = self._drive("survey", {})
        return survey_from_wire(reply.result or {}, reply.arrays)

    def _measure_timeout(self) -> float:
        if self.options.measure_timeout_s is not None:
            return self.options.measure_timeout_s
        return self.options.timeout_s + 2.0 * self.describe().measurement_time_s

    def measure(self, position: tuple[float, float], command_id: str = "") -> Measurement:
        """One spectrum at ``position``; at most one execution per ``command_id`` (see module doc).

        Raises:
            OutOfBounds, MeasurementFailed: from the instrument, unchanged.
            InstrumentUnreachable: no reply of any kind after ``retries`` re-sends and status checks;
                calling again with the same ``command_id`` once the server is back is safe.
            InstrumentTimeout: the server answered ``status`` but not the measurement in time.
        """
        cid = command_id or uuid.uuid4().hex
        replies = self._replies
        params = {"position": [float(position[0]), float(position[1])], "command_id": cid}
        timeout_s = self._measure_timeout()
        for attempt in range(1 + self.options.retries):
            if attempt > 0:
                state = self.status(cid)
                log.info("measure %s: no reply on attempt %d; server says %s", cid, attempt, state)
                if state == "lost":
                    raise MeasurementFailed(
                        f"command {cid!r} ran on the instrument but its result was lost when the server "
                        f"restarted; not measuring the same place twice"
                    )
            reply = self._drive("measure", params, timeout_s, once=True)
            if reply is not None:
                return measurement_from_wire(reply.result or {}, reply.arrays)
        heard = self._replies > replies
        raise (InstrumentTimeout if heard else InstrumentUnreachable)(
            f"measure {cid!r}: no reply from {self.options.address} in {1 + self.options.retries} attempts "
            f"of {timeout_s:.3g} s" + ("; the server answers, the measurement is late" if heard else "")
        )
