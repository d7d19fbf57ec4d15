"""The operator's channel to a running campaign, and the record of what the operator did.

Two append-only files in the session folder:

- ``control.jsonl``: commands in. ``aexp control`` and the live page append one JSON line per
  command (``O_APPEND``, one ``write`` of a line under ``PIPE_BUF``, then ``fsync``), after checking
  it against the session as recorded. The running loop reads new complete lines from its last
  offset before each decision. Why a file and not a socket: it needs no server in the loop, any
  number of senders can append, and it survives a crash of either side: a command queued and not
  yet applied when the run died is applied when ``aexp resume`` continues (its id is not in the
  record yet).
- ``actions.jsonl``: what was done, one :class:`Action` per line (who, what, when, at which
  decision ``step``, applied or refused and why), durable before the decision it affects. ``replay
  --verify`` and ``resume`` re-apply the applied actions at the same steps (:class:`RecordedOperator`),
  so a replay never depends on when a command arrived.

``live.json`` (the loop's state for the page: running, paused, awaiting approval, stagnation) and
``maps.npz`` (the last decision's mean / std / acquisition over the candidates) are written
atomically for the page (:mod:`aexp.live.app`); neither is needed to replay.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import AexpError
from ..session.durable import append_line
from ..session.manifest import SessionError
from ..session.store import SessionReader, writer_running
from ..types import Directive, Step
from .stagnation import Stagnation, StagnationRule, find_stagnation

if TYPE_CHECKING:
    from ..policies import Decision

__all__ = [
    "ACTIONS",
    "COMMANDS",
    "CONTROL",
    "MAPS",
    "STATE",
    "Action",
    "Command",
    "ControlError",
    "LiveOperator",
    "OperatorOptions",
    "RecordedOperator",
    "ResumedOperator",
    "SessionView",
    "read_actions",
    "resolve",
    "send",
]

CONTROL = "control.jsonl"
ACTIONS = "actions.jsonl"
STATE = "live.json"
MAPS = "maps.npz"
COMMANDS = ("pause", "resume", "stop", "goto", "exclude", "set", "approve")
#: Policy settings an operator may change, and which policies have them.
SETTINGS = {"beta": "UCB exploration weight, mu + sqrt(beta) * sigma (>= 0)"}
_MAX_LINE = 4096  # a command is a few dozen bytes; anything longer is refused unread


class ControlError(AexpError, ValueError):
    """A command that cannot be applied (malformed, not running, out of bounds, already measured):
    nothing was changed."""


@dataclass(frozen=True)
class Command:
    """One operator command as it travels in ``control.jsonl``.

    Attributes:
        what: one of :data:`COMMANDS`.
        index: ``goto``: a candidate index.
        xy: ``goto``: a position ``(x, y)`` in metres (the nearest candidate is meant).
        box: ``exclude``: ``(x0, y0, x1, y1)`` in metres.
        name, value: ``set``: a setting of :data:`SETTINGS` and its new value.
        id: unique per command; session_id: the session it was sent to; sent: when (ISO time).
    """

    what: str
    index: int | None = None
    xy: tuple[float, float] | None = None
    box: tuple[float, float, float, float] | None = None
    name: str | None = None
    value: float | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    session_id: str = ""
    sent: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, raw: Any) -> Command:
        """Parse an untrusted command (from a file or the page); raises :class:`ControlError`."""
        if not isinstance(raw, dict):
            raise ControlError(f"a command is a JSON object, got {type(raw).__name__}")
        what = raw.get("what")
        if what not in COMMANDS:
            raise ControlError(f"unknown command {what!r}; known: {', '.join(COMMANDS)}")
        unknown = set(raw) - {"what", "index", "xy", "box", "name", "value", "id", "session_id", "sent"}
        if unknown:
            raise ControlError(f"command {what!r}: unknown fields {sorted(unknown)}")
        kw: dict[str, Any] = {"what": what}
        for key in ("id", "session_id", "sent"):
            if key in raw:
                if not isinstance(raw[key], str) or len(raw[key]) > 64:
                    raise ControlError(f"command {what!r}: {key} must be a short string")
                kw[key] = raw[key]
        if what == "goto":
            if ("index" in raw) == ("xy" in raw):
                raise ControlError("goto takes either index N or xy [X, Y] (metres)")
            if "index" in raw:
                if not isinstance(raw["index"], int) or isinstance(raw["index"], bool):
                    raise ControlError(f"goto: index must be an integer, got {raw['index']!r}")
                kw["index"] = raw["index"]
            else:
                kw["xy"] = _numbers(raw["xy"], 2, "goto: xy")
        elif what == "exclude":
            kw["box"] = _numbers(raw.get("box"), 4, "exclude: box")
        elif what == "set":
            name = raw.get("name")
            if name not in SETTINGS:
                raise ControlError(f"set: unknown setting {name!r}; known: {', '.join(SETTINGS)}")
            value = _numbers([raw.get("value")], 1, f"set {name}")[0]
            if value < 0:
                raise ControlError(f"set {name}: must be >= 0, got {value:g}")
            kw.update(name=name, value=value)
        elif any(k in raw for k in ("index", "xy", "box", "name", "value")):
            raise ControlError(f"{what} takes no arguments")
        return cls(**kw)


def _numbers(raw: Any, n: int, what: str) -> tuple[float, ...]:
    if not isinstance(raw, list | tuple) or len(raw) != n:
        raise ControlError(f"{what}: expected {n} numbers, got {raw!r}")
    out = []
    for v in raw:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(float(v)):
            raise ControlError(f"{what}: expected finite numbers, got {raw!r}")
        out.append(float(v))
    return tuple(out)


@dataclass
class Action:
    """One line of ``actions.jsonl``: what was done, by whom, and at which decision.

    Attributes:
        who: ``"operator"`` (a command) or ``"aexp"`` (the loop itself: an approval timeout, a
            stagnation stop, maps turned on).
        what: the command (``goto``, ``exclude``, ...), or ``replace`` (a proposal replaced in
            approve mode), ``approve-timeout``, ``maps``.
        step: the decision it took effect at (the step the operator's point became, for a goto).
        at: ``"decision"`` (before the decision) or ``"review"`` (on the policy's proposal).
        status: ``"applied"`` or ``"refused"`` (then ``error`` says why; nothing changed).
        args: the resolved arguments: ``index``, ``indices`` (an exclusion), ``name``/``value``,
            ``proposed`` (what a replace replaced), ``reason`` (a stop).
        id, sent, when: the command's id and send time; when it was applied (ISO time).
    """

    who: str
    what: str
    step: int
    status: str = "applied"
    at: str = "decision"
    args: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    id: str = ""
    sent: str = ""
    when: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Action:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in raw.items() if k in known})


def read_actions(folder: str | Path) -> list[Action]:
    """The complete lines of ``actions.jsonl`` (a torn last line, from a crash, is ignored)."""
    path = Path(folder) / ACTIONS
    if not path.is_file():
        return []
    lines = path.read_bytes().split(b"\n")[:-1]
    out = []
    for n, line in enumerate(lines, start=1):
        try:
            out.append(Action.from_dict(json.loads(line)))
        except (ValueError, TypeError) as exc:
            raise SessionError(f"{path}: line {n} is not a valid action record: {exc}") from None
    return out


def _append_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line durably; one ``write`` with ``O_APPEND`` so concurrent senders never interleave."""
    append_line(path, (json.dumps(record, allow_nan=False) + "\n").encode())


# --- checking a command against a session --------------------------------------------------------


@dataclass
class SessionView:
    """What a command is checked against.

    Attributes:
        positions: ``M x 2`` candidate positions, metres.
        blocked: bool ``M``: measured, failed, pending, outside the bounds or excluded.
        bounds: ``(xmin, xmax, ymin, ymax)`` of the instrument, metres.
        policy: ``policy.kind`` and ``policy.acquisition`` of the session.
        awaiting: the proposal waiting for approval (``{"step", "index"}``), or ``None``.
    """

    positions: np.ndarray
    blocked: np.ndarray
    bounds: tuple[float, float, float, float]
    policy: dict[str, Any]
    awaiting: dict[str, Any] | None = None

    @classmethod
    def from_folder(cls, reader: SessionReader) -> SessionView:
        """The view ``aexp control`` and the page check with: the recorded steps and actions."""
        man = reader.manifest
        positions = reader.array("candidates")
        b = man.instrument.bounds
        blocked = ~b.contains(positions)
        blocked[[s.index for s in reader.steps]] = True
        for a in read_actions(reader.folder):
            if a.status == "applied" and a.what == "exclude":
                blocked[a.args.get("indices", [])] = True
        state = read_state(reader.folder)
        return cls(positions, blocked, (b.xmin, b.xmax, b.ymin, b.ymax), dict(man.config.get("policy", {})),
                   state.get("awaiting") if state.get("session_id") == man.session_id else None)


def resolve(cmd: Command, view: SessionView) -> dict[str, Any]:
    """The resolved arguments of ``cmd`` on ``view`` (``index``, ``indices``, ``name``/``value``);
    raises :class:`ControlError` when it cannot apply."""
    xmin, xmax, ymin, ymax = view.bounds
    m = len(view.positions)
    if cmd.what == "goto":
        if cmd.xy is not None:
            x, y = cmd.xy
            if not (xmin <= x <= xmax and ymin <= y <= ymax):
                raise ControlError(f"goto: ({x:.6g}, {y:.6g}) m is outside the instrument's bounds "
                                   f"x [{xmin:.6g}, {xmax:.6g}], y [{ymin:.6g}, {ymax:.6g}] m")
            index = int(np.argmin(np.linalg.norm(view.positions - np.asarray(cmd.xy), axis=1)))
        else:
            index = int(cmd.index)  # type: ignore[arg-type]
            if not 0 <= index < m:
                raise ControlError(f"goto: candidate {index} does not exist (the session has {m}: 0..{m - 1})")
        if view.blocked[index]:
            x, y = view.positions[index]
            raise ControlError(f"goto: candidate {index} at ({x:.6g}, {y:.6g}) m is already measured, "
                               f"pending, excluded or outside the bounds")
        return {"index": index}
    if cmd.what == "exclude":
        x0, y0, x1, y1 = cmd.box  # type: ignore[misc]
        lo, hi = np.minimum([x0, y0], [x1, y1]), np.maximum([x0, y0], [x1, y1])
        inside = np.all((view.positions >= lo) & (view.positions <= hi), axis=1)
        indices = np.flatnonzero(inside & ~view.blocked)
        if not inside.any():
            raise ControlError(f"exclude: no candidate lies in the box x [{lo[0]:.6g}, {hi[0]:.6g}], "
                               f"y [{lo[1]:.6g}, {hi[1]:.6g}] m")
        return {"indices": [int(i) for i in indices], "box": [float(v) for v in (*lo, *hi)]}
    if cmd.what == "set":
        kind, acq = view.policy.get("kind", "dkl"), view.policy.get("acquisition", "ucb")
        if isinstance(acq, dict):  # a config's acquisition section ({kind: ucb, beta: 4.0})
            acq = acq.get("kind", "ucb")
        if kind not in ("dkl", "gp-xy") or acq != "ucb":
            raise ControlError(f"set {cmd.name}: the policy {kind}/{acq} has no {cmd.name} "
                               f"(it is the UCB weight of dkl and gp-xy)")
        return {"name": cmd.name, "value": cmd.value}
    if cmd.what == "approve" and view.awaiting is None:
        raise ControlError("approve: no proposal is waiting (the run is not in approve mode, or the "
                           "proposal was already decided)")
    return {}


def _replace(path: Path, write: Callable[[Any], Any]) -> None:
    """Replace ``path`` atomically (a temporary file, then a rename), without ``fsync``.

    For ``live.json`` and ``maps.npz``, which only the page reads: a reader never sees half a
    file, and a crash loses nothing recorded (both are rewritten at the next decision). Written
    durably they cost two ``fsync`` each (file and folder) inside every decision's time.
    """
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        write(fh)
    os.replace(tmp, path)


def read_state(folder: str | Path) -> dict[str, Any]:
    """``live.json`` (``{}`` when absent or being replaced)."""
    try:
        raw = json.loads((Path(folder) / STATE).read_text())
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def send(folder: str | Path, cmd: Command) -> Command:
    """Check ``cmd`` against the running session in ``folder`` and append it to ``control.jsonl``.

    Raises:
        ControlError: the folder is not a session, no run is writing it (finished or crashed), or
            the command does not apply (see :func:`resolve`); nothing is written then.
    """
    folder = Path(folder)
    try:
        reader = SessionReader(folder)
    except SessionError as exc:
        raise ControlError(f"control: {exc}") from None
    sid = reader.manifest.session_id
    if cmd.session_id and cmd.session_id != sid:
        raise ControlError(f"{folder} is session {sid}, not {cmd.session_id}: a command goes to the session it names")
    if not writer_running(folder):
        status = (reader.summary or {}).get("status")
        ended = f"it has ended ({status})" if status else "no run is writing it (it crashed or never ran live)"
        raise ControlError(f"{folder}: {ended}; a control reaches only a running session "
                           f"(`aexp resume {folder}` continues an interrupted one)")
    resolve(cmd, SessionView.from_folder(reader))
    cmd = Command(**{**asdict(cmd), "session_id": sid})
    _append_line(folder / CONTROL, cmd.to_dict())
    return cmd


# --- the operators the campaign consults ---------------------------------------------------------


@dataclass
class OperatorOptions:
    """How a run meets its operator (``aexp run --live --approve --approve-timeout S``).

    Attributes:
        live: publish the state and the model's maps for the page (and check stagnation).
        approve: hold each proposal until the operator approves or replaces it.
        approve_timeout_s: go on alone after this long (``None``: wait).
        notify: gets one line for the terminal (stagnation, refused commands).
    """

    live: bool = False
    approve: bool = False
    approve_timeout_s: float | None = None
    notify: Callable[[str], None] | None = None


class LiveOperator:
    """The running loop's end of the channel (an :class:`~aexp.campaign.Operator`).

    Before each decision it reads new commands, applies pause / resume / stop / goto / exclude /
    set, records each in ``actions.jsonl`` and blocks while paused; in approve mode it holds each
    proposal until the operator approves or replaces it (or ``approve_timeout_s`` passes).
    Gotos queue: each decision takes the first one still possible.

    Args:
        folder: the session folder; session_id: its id (commands naming another are refused).
        policy: ``{"kind", "acquisition"}`` of the config (which settings exist).
        approve: hold each single policy proposal for the operator.
        approve_timeout_s: go on with the proposal after this long (``None``: wait).
        want_maps: have the policy return its maps with every decision (the page shows them).
        stagnation: when to call the campaign stagnant (``None``: never checked).
        notify: gets one line for the terminal (stagnation, refused commands).
        poll_s: how often the channel is read while paused or awaiting approval.
        publish: write ``live.json`` at every decision (the page, approve mode); otherwise only
            once a command has arrived.
    """

    def __init__(self, folder: str | Path, session_id: str, *, policy: dict[str, Any] | None = None,
                 approve: bool = False, approve_timeout_s: float | None = None, want_maps: bool = False,
                 stagnation: StagnationRule | None = None, notify: Callable[[str], None] | None = None,
                 poll_s: float = 0.05, publish: bool = False) -> None:
        self.folder = Path(folder)
        self.session_id = session_id
        self.policy = dict(policy or {})
        self.approve = approve
        self.approve_timeout_s = approve_timeout_s
        self.want_maps = want_maps
        self.rule = stagnation
        self.notify = notify
        self.poll_s = poll_s
        self.offset = 0
        self.seen = {a.id for a in read_actions(self.folder) if a.id}
        self.gotos: deque[tuple[Command, dict[str, Any]]] = deque()
        self.paused = False
        self.stagnant: Stagnation | None = None
        self.awaiting: dict[str, Any] | None = None
        self.settings: dict[str, float] = {}
        self.step = 0
        self.maps: dict[str, np.ndarray] | None = None
        self.started = False
        self.publish = publish
        self._positions = np.zeros((0, 2))
        self._bounds = (-math.inf, math.inf, -math.inf, math.inf)

    # the channel

    def _commands(self) -> list[Command]:
        """New complete lines of ``control.jsonl``; malformed ones are recorded as refused."""
        path = self.folder / CONTROL
        try:
            with open(path, "rb") as fh:
                fh.seek(self.offset)
                raw = fh.read()
        except FileNotFoundError:
            return []
        end = raw.rfind(b"\n") + 1
        self.offset += end
        out = []
        for line in raw[:end].split(b"\n")[:-1]:
            try:
                if len(line) > _MAX_LINE:
                    raise ControlError(f"a command line of {len(line)} bytes (at most {_MAX_LINE})")
                cmd = Command.from_dict(json.loads(line))
            except (ValueError, UnicodeDecodeError) as exc:
                self._record(Action("operator", "malformed", self.step, "refused", error=str(exc)[:300]))
                continue
            if cmd.id in self.seen:
                continue
            self.seen.add(cmd.id)
            if cmd.session_id and cmd.session_id != self.session_id:
                self._refuse(cmd, f"sent to session {cmd.session_id}, this is {self.session_id}")
                continue
            out.append(cmd)
        return out

    def _record(self, action: Action) -> Action:
        _append_line(self.folder / ACTIONS, action.to_dict())
        return action

    def _act(self, cmd: Command, at: str = "decision", what: str | None = None, **args: Any) -> None:
        self._record(Action("operator", what or cmd.what, self.step, "applied", at, args, None, cmd.id, cmd.sent))

    def _refuse(self, cmd: Command, error: str) -> None:
        self._record(Action("operator", cmd.what, self.step, "refused", error=error, id=cmd.id, sent=cmd.sent))
        if self.notify is not None:
            self.notify(f"operator: {cmd.what} refused: {error}")

    def _view(self, excluded: np.ndarray, positions: np.ndarray | None = None) -> SessionView:
        return SessionView(self._positions if positions is None else positions, excluded, self._bounds,
                           self.policy, self.awaiting)

    # the Operator protocol

    def before_decision(self, step: int, excluded: np.ndarray, steps: Sequence[Step]) -> Directive:
        self.step = step
        self._start()
        excluded = excluded.copy()
        directive = Directive()
        if self.rule is not None:
            self._check_stagnation(step, excluded, steps)
            if self.stagnant is not None and self.rule.stop:
                self._record(Action("aexp", "stop", step, args={"reason": "stagnation"}))
                return Directive(stop=True, stop_reason="stagnation")
        while True:
            for cmd in self._commands():
                if cmd.what == "stop":
                    self._act(cmd)
                    self._write_state("stopping")
                    return Directive(stop=True, stop_reason="operator")
                self._apply(cmd, excluded, directive)
            if not self.paused:
                break
            self._write_state("paused")
            time.sleep(self.poll_s)
        while self.gotos and directive.goto is None:
            cmd, args = self.gotos.popleft()
            if excluded[args["index"]]:
                self._refuse(cmd, f"candidate {args['index']} was measured or excluded before its turn")
                continue
            self._act(cmd, **args)
            directive.goto = args["index"]
        self._write_state("running")
        return directive

    def _apply(self, cmd: Command, excluded: np.ndarray, directive: Directive) -> None:
        if cmd.what in ("pause", "resume"):
            self.paused = cmd.what == "pause"
            self._act(cmd)
            return
        try:
            args = resolve(cmd, self._view(excluded))
        except ControlError as exc:
            self._refuse(cmd, str(exc))
            return
        if cmd.what == "goto":
            self.gotos.append((cmd, args))
        elif cmd.what == "exclude":
            directive.exclude.extend(args["indices"])
            excluded[args["indices"]] = True
            self._act(cmd, **args)
        elif cmd.what == "set":
            directive.settings[args["name"]] = args["value"]
            self.settings[args["name"]] = args["value"]
            self._act(cmd, **args)

    def review(self, step: int, proposed: int, excluded: np.ndarray) -> Directive:
        if not self.approve:
            return Directive()
        self.awaiting = {"step": step, "index": int(proposed),
                         "position": [float(v) for v in self._positions[proposed]]}
        began = time.monotonic()
        try:
            while True:
                self._write_state("awaiting approval")
                for cmd in self._commands():
                    if cmd.what == "approve":
                        self._act(cmd, at="review", index=int(proposed))
                        return Directive()
                    if cmd.what == "stop":
                        self._act(cmd, at="review")
                        return Directive(stop=True, stop_reason="operator")
                    if cmd.what == "goto":
                        try:
                            args = resolve(cmd, self._view(excluded))
                        except ControlError as exc:
                            self._refuse(cmd, str(exc))
                            continue
                        self._act(cmd, at="review", what="replace", proposed=int(proposed), **args)
                        return Directive(goto=args["index"])
                    if cmd.what in ("pause", "resume"):
                        self.paused = cmd.what == "pause"
                        self._act(cmd, at="review")
                        continue
                    self._refuse(cmd, "approve or replace the waiting proposal first")
                if self.approve_timeout_s is not None and time.monotonic() - began >= self.approve_timeout_s:
                    self._record(Action("aexp", "approve-timeout", step, at="review",
                                        args={"index": int(proposed), "after_s": self.approve_timeout_s}))
                    return Directive()
                time.sleep(self.poll_s)
        finally:
            self.awaiting = None

    def decided(self, step: int, decisions: Sequence[Decision]) -> None:
        maps = decisions[-1].maps if decisions else None
        if maps is None:
            return
        self.maps = maps
        arrays: dict[str, Any] = {k: np.asarray(v, dtype=np.float32) for k, v in maps.items()}
        _replace(self.folder / MAPS, lambda fh: np.savez(fh, step=np.int64(step), **arrays))

    # state for the page and the terminal

    def attach(self, positions: np.ndarray, bounds: tuple[float, float, float, float]) -> LiveOperator:
        """The candidates and bounds the session's commands are checked against."""
        self._positions = np.asarray(positions, dtype=np.float64)
        self._bounds = bounds
        return self

    def _start(self) -> None:
        if self.started:
            return
        self.started = True
        if self.want_maps and not any(a.what == "maps" for a in read_actions(self.folder)):
            self._record(Action("aexp", "maps", self.step))

    def _check_stagnation(self, step: int, excluded: np.ndarray, steps: Sequence[Step]) -> None:
        found = find_stagnation(steps, self.maps, ~excluded, self.rule) if self.rule else None
        if found is not None and self.stagnant is None and self.notify is not None:
            self.notify(f"stagnation: {found.message}")
        self.stagnant = found

    def _write_state(self, state: str) -> None:
        if not (self.publish or self.seen):
            return  # nobody is watching: no file, no fsync per decision
        _replace(self.folder / STATE, lambda fh: fh.write(json.dumps({
            "session_id": self.session_id, "state": state, "step": self.step, "paused": self.paused,
            "approve": self.approve, "awaiting": self.awaiting, "settings": self.settings,
            "queued_gotos": [a["index"] for _, a in self.gotos],
            "stagnation": None if self.stagnant is None else asdict(self.stagnant),
            "updated": time.time(), "pid": os.getpid(),
        }, indent=2).encode()))

    def close(self, state: str = "ended") -> None:
        """Say on the page that the run has ended."""
        self._write_state(state)


class RecordedOperator:
    """The operator of a recorded session: re-applies ``actions.jsonl`` at the recorded steps."""

    def __init__(self, actions: Sequence[Action]) -> None:
        self.actions = [a for a in actions if a.status == "applied"]
        self.want_maps = any(a.what == "maps" for a in self.actions)

    @classmethod
    def of(cls, folder: str | Path) -> RecordedOperator:
        return cls(read_actions(folder))

    def _at(self, step: int, at: str) -> list[Action]:
        return [a for a in self.actions if a.step == step and a.at == at]

    def before_decision(self, step: int, excluded: np.ndarray, steps: Sequence[Step]) -> Directive:
        d = Directive()
        for a in self._at(step, "decision"):
            if a.what == "stop":
                return Directive(stop=True, stop_reason=a.args.get("reason", "operator"))
            if a.what == "goto":
                d.goto = int(a.args["index"])
            elif a.what == "exclude":
                d.exclude.extend(int(i) for i in a.args.get("indices", []))
            elif a.what == "set":
                d.settings[str(a.args["name"])] = float(a.args["value"])
        return d

    def review(self, step: int, proposed: int, excluded: np.ndarray) -> Directive:
        for a in self._at(step, "review"):
            if a.what == "stop":
                return Directive(stop=True, stop_reason="operator")
            if a.what == "replace":
                return Directive(goto=int(a.args["index"]))
        return Directive()

    def decided(self, step: int, decisions: Sequence[Decision]) -> None:
        pass


class ResumedOperator:
    """The recorded actions for the first ``replayed`` decisions, then the live channel (``resume``)."""

    def __init__(self, recorded: RecordedOperator, live: LiveOperator, replayed: int) -> None:
        self.recorded, self.live, self.replayed = recorded, live, replayed
        self.want_maps = recorded.want_maps
        live.want_maps = recorded.want_maps

    def _pick(self, step: int) -> Any:
        return self.recorded if step < self.replayed else self.live

    def before_decision(self, step: int, excluded: np.ndarray, steps: Sequence[Step]) -> Directive:
        return self._pick(step).before_decision(step, excluded, steps)

    def review(self, step: int, proposed: int, excluded: np.ndarray) -> Directive:
        return self._pick(step).review(step, proposed, excluded)

    def decided(self, step: int, decisions: Sequence[Decision]) -> None:
        self._pick(step).decided(step, decisions)
