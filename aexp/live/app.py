"""The live page: one HTML page that watches a session folder and steers its run.

A small ASGI app (Starlette, served by uvicorn): ``GET /`` the page, ``GET /state`` the session as
JSON, ``GET /events`` server-sent events (one ``state`` event whenever a file of the session
changes, polled every 0.1 s and pushed at most every 0.25 s), ``GET /survey.png`` the survey,
``POST /control`` a command (checked and appended to ``control.jsonl`` exactly as ``aexp control``
does). Why this stack: the page only reads files the loop already writes, so a plain ASGI app with
SSE (one-way push, reconnects by itself in the browser) is all it needs; no dashboard framework, no
build step, and the same app serves a finished session.

It binds 127.0.0.1 by default; any other interface needs a token (sent as ``?token=`` or the
``X-Aexp-Token`` header), and :func:`serve` refuses a non-loopback bind without one.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import math
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ..errors import UsageError
from .channel import ACTIONS, CONTROL, MAPS, STATE, Command, ControlError, read_actions, read_state, send

__all__ = ["make_app", "serve", "LiveServer", "is_loopback", "session_state", "serve_child"]

_PAGE = Path(__file__).with_name("page.html")
_WATCHED = ("manifest.json", "steps.jsonl", ACTIONS, STATE, MAPS, "summary.json", CONTROL)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``127.0.0.1``, ``::1``, ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _signature(folder: Path) -> tuple:
    out: list[tuple[int, int] | None] = []
    for name in _WATCHED:
        try:
            st = (folder / name).stat()
            out.append((st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


def _finite(values: np.ndarray) -> list[float | None]:
    """``values`` to 6 decimals as a JSON-ready list, NaN and infinities as ``None``.

    Vectorised: the page's server shares the loop's process (and its GIL), and a Python loop over
    every candidate's value at every step showed up in the loop's decision time.
    """
    a = np.round(np.asarray(values, dtype=np.float64), 6)
    out: list[float | None] = a.tolist()
    for i in np.flatnonzero(~np.isfinite(a)).tolist():
        out[i] = None
    return out


class _Static:
    """What never changes in a session (candidates, the twin's ground truth): read once per session id."""

    def __init__(self) -> None:
        self.session_id: str | None = None
        self.data: dict[str, Any] = {}
        self.truth: np.ndarray | None = None

    def load(self, reader: Any) -> dict[str, Any]:
        if reader.manifest.session_id != self.session_id:
            from ..session.truth import session_truth

            positions = reader.array("candidates")
            self.data = {"candidates": reader.array("pixels").round(3).tolist(), "positions": positions.tolist()}
            notes: list[str] = []
            try:  # a simulator (or full-grid data) knows the truth: the page draws the discovery curve
                self.truth = session_truth(reader, positions, notes)
            except Exception:  # noqa: BLE001 - the curve is a nicety; the page works without it
                self.truth = None
            self.session_id = reader.manifest.session_id
        return self.data


def session_state(folder: Path, static: _Static | None = None, with_static: bool = True) -> dict[str, Any]:
    """Everything the page draws, as JSON-ready data (read-only; a half-written session is fine).

    ``with_static``: include the candidates' pixels and positions (the page needs them once)."""
    from ..session.figures import discovery_curve
    from ..session.store import SessionError, SessionReader

    try:
        reader = SessionReader(folder)
    except SessionError as exc:
        return {"ready": False, "message": str(exc)}
    static = static or _Static()
    fixed = static.load(reader)
    man = reader.manifest
    state = read_state(folder)
    actions = read_actions(folder)
    out: dict[str, Any] = {
        "ready": True, "session_id": man.session_id, "name": man.config.get("name"),
        "instrument": man.instrument.name, "budget": man.budget,
        "survey_shape": list(man.survey.shape[1:]),
        "steps": [{"step": s.step, "index": s.index, "phase": s.phase, "status": s.status,
                   "target": s.target, "best": s.best_so_far, "error": s.error, "pixel": list(s.pixel),
                   "position": list(s.position), "timings": s.timings, "pending": s.pending}
                  for s in reader.steps],
        "actions": [a.to_dict() | {"args": {k: v for k, v in a.args.items() if k != "indices"}} for a in actions],
        "excluded": sorted({i for a in actions if a.status == "applied" and a.what == "exclude"
                            for i in a.args.get("indices", [])}),
        "live": state if state.get("session_id") == man.session_id else {},
        "summary": reader.summary,
        "discovery": None if static.truth is None or not reader.steps
        else [round(float(v), 4) for v in discovery_curve(reader.steps, static.truth)],
    }
    if with_static:
        out.update(fixed)
    try:
        with np.load(folder / MAPS, allow_pickle=False) as z:
            out["maps"] = {"step": int(z["step"]), **{k: _finite(z[k]) for k in ("mean", "std", "acquisition")
                                                       if k in z}}
    except (OSError, ValueError, KeyError):
        out["maps"] = None
    return out


def _survey_png(folder: Path) -> bytes:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt

    image = np.load(folder / "survey.npy", allow_pickle=False)[0]
    buf = io.BytesIO()
    plt.imsave(buf, image, cmap="gray", format="png")
    return buf.getvalue()


def make_app(folder: str | Path, token: str | None = None, poll_s: float = 0.1, min_interval_s: float = 0.25):
    """The Starlette app for ``folder`` (``token``: required on every request when given).

    The session's files are looked at every ``poll_s``; a change is pushed to the page at most every
    ``min_interval_s`` (so within ``poll_s + min_interval_s`` of being written)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route

    folder = Path(folder)
    static = _Static()

    def allowed(request: Request) -> bool:
        if token is None:
            return True
        given = request.query_params.get("token") or request.headers.get("x-aexp-token") or ""
        return secrets.compare_digest(given.encode(), token.encode())

    def guard(handler):
        async def wrapped(request: Request) -> Response:
            if not allowed(request):
                return PlainTextResponse("a token is required (?token=...)", status_code=403)
            return await handler(request)
        return wrapped

    async def page(request: Request) -> Response:
        return HTMLResponse(_PAGE.read_text())

    async def state(request: Request) -> Response:
        return JSONResponse(await asyncio.to_thread(session_state, folder, static))

    async def survey(request: Request) -> Response:
        try:
            return Response(await asyncio.to_thread(_survey_png, folder), media_type="image/png")
        except OSError:
            return PlainTextResponse("no survey yet", status_code=404)

    async def events(request: Request) -> Response:
        async def stream():
            last, sent_static, sent_at = None, None, -math.inf
            while not await request.is_disconnected():
                sig = await asyncio.to_thread(_signature, folder)
                # at most one state per min_interval_s: steps of a fast loop coalesce into one update
                # instead of a redraw each (the page's CPU is taken from the instrument PC's cores)
                if sig != last and time.monotonic() - sent_at >= min_interval_s:
                    last, sent_at = sig, time.monotonic()
                    # the candidates go once per session: later events carry only what changed
                    data = await asyncio.to_thread(session_state, folder, static, sent_static != static.session_id)
                    if data.get("candidates") is not None:
                        sent_static = data.get("session_id")
                    yield f"event: state\ndata: {json.dumps(data)}\n\n"
                else:
                    yield ": keep-alive\n\n"  # also lets a closed connection be noticed
                await asyncio.sleep(poll_s)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    async def control(request: Request) -> Response:
        # another web site open in the operator's browser must not move the probe: a JSON content type
        # makes a cross-site POST need a CORS preflight (never granted), and a foreign Origin is refused
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return JSONResponse({"error": "send the command as application/json"}, status_code=415)
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
            return JSONResponse({"error": f"a command from {origin} is refused"}, status_code=403)
        body = await request.body()
        if len(body) > 4096:
            return JSONResponse({"error": "a command is at most 4096 bytes"}, status_code=413)
        try:
            raw = json.loads(body)
            if isinstance(raw, dict):
                raw = {k: v for k, v in raw.items() if k not in ("id", "sent")}  # the server stamps them
            cmd = await asyncio.to_thread(send, folder, Command.from_dict(raw))
        except (ValueError, ControlError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"queued": cmd.to_dict()})

    return Starlette(routes=[
        Route("/", guard(page)), Route("/state", guard(state)), Route("/events", guard(events)),
        Route("/survey.png", guard(survey)), Route("/control", guard(control), methods=["POST"]),
    ])


class LiveServer:
    """The page's server for ``aexp run --live``, in a child process of the run.

    Why a process and not a thread: the server rebuilds the page's state (maps over every candidate,
    as JSON) whenever the session changes; in a thread of the loop's process it held the loop's GIL
    for that time, which showed in the decision time (docs/live.md). The child (``python -m
    aexp.live FOLDER HOST PORT``, the token in its environment, not on its command line) binds the
    port, prints it, and serves until its standard input closes: :meth:`stop` closes it, and so
    does the run's death (kill -9 included), so a page never outlives its run.
    """

    def __init__(self, folder: str | Path, host: str = "127.0.0.1", port: int = 0, token: str | None = None) -> None:
        check_bind(host, token)
        self.folder, self.host, self.token, self.requested_port = Path(folder), host, token, port
        self.process: subprocess.Popen[str] | None = None
        self._port: int | None = None

    def start(self, timeout_s: float = 30.0) -> LiveServer:
        import aexp

        root = str(Path(aexp.__file__).resolve().parents[1])  # the child imports this aexp, not another
        env = dict(os.environ, AEXP_LIVE_TOKEN=self.token or "")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "aexp.live", str(self.folder), self.host, str(self.requested_port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(self.process.stdout.readline()),  # type: ignore[union-attr]
                                  daemon=True)
        reader.start()
        reader.join(timeout_s)
        line = lines[0].strip() if lines else ""
        if not line.startswith("port "):
            self.stop()
            why = line.removeprefix("error: ") or f"no answer within {timeout_s:g} s"
            raise UsageError(f"the live page could not start on {self.host}:{self.requested_port}: {why}")
        self._port = int(line.split()[1])
        return self

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the live page is not started")
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Close the child's input (it ends its server), and end it harder if it does not go."""
        proc, self.process = self.process, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)


def serve_child(argv: list[str]) -> int:
    """``python -m aexp.live FOLDER HOST PORT``: the child :class:`LiveServer` starts.

    Prints ``port N`` (or ``error: why``) on its first line, then serves until its standard input
    reaches its end."""
    import socket

    import uvicorn

    if len(argv) != 3:
        print("usage: python -m aexp.live FOLDER HOST PORT (the child of `aexp run --live`; "
              "to watch a session, use `aexp watch FOLDER`)", file=sys.stderr)
        return 2
    folder, host, port = argv
    token = os.environ.get("AEXP_LIVE_TOKEN") or None
    try:
        check_bind(host, token)
        family, kind, proto, _, address = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)  # a request that comes before the server runs waits in the backlog
    except (OSError, ValueError, UsageError) as exc:
        print(f"error: {exc}", flush=True)
        return 2
    print(f"port {sock.getsockname()[1]}", flush=True)
    os.dup2(2, 1)  # nothing more on the pipe the parent no longer reads
    # what the first state needs (the figures' discovery curve, a twin's truth) is imported now, while
    # the run surveys and embeds, rather than when the first step is already waiting to be shown
    from .. import instrument  # noqa: F401
    from ..session import figures, rebuild, truth  # noqa: F401
    server = uvicorn.Server(uvicorn.Config(make_app(folder, token), log_level="warning", lifespan="off"))

    def until_input_ends() -> None:
        sys.stdin.read()
        server.should_exit = True

    threading.Thread(target=until_input_ends, name="aexp-live-parent", daemon=True).start()
    server.run(sockets=[sock])
    return 0


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback interface without a token (anyone on the network could steer the probe)."""
    if not is_loopback(host) and not token:
        raise UsageError(f"--host {host} is reachable from other machines: give --token TOKEN (or --token new "
                         f"for a random one); the page is served on 127.0.0.1 without one")


def new_token(value: str | None) -> str | None:
    """``--token new`` -> a random token; any other value as given."""
    return secrets.token_urlsafe(16) if value == "new" else value


def serve(folder: str | Path, host: str = "127.0.0.1", port: int = 8765, token: str | None = None) -> None:
    """Serve the page of ``folder`` in the foreground until Ctrl-C (``aexp watch``)."""
    import uvicorn

    check_bind(host, token)
    uvicorn.run(make_app(folder, token), host=host, port=port, log_level="warning", lifespan="off")
