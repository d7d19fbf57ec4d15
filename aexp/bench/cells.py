"""One benchmark cell = (config, seed, policy): how to run it anywhere, and where its result lives.

A cell is self-contained: it carries the config as plain data (no torch state, nothing that only one
process understands), so a process pool or a Dask worker on another machine runs it from scratch and
gets the decisions the serial run gets. It runs with one torch thread and deterministic algorithms
(:func:`aexp.repro.torch_settings`): the thread count is the one setting that could otherwise shift
the last bits of a fit between executors.

Cells of the same (config, seed) share the candidates, the truth and the embedding through a small
in-process cache; a worker that never saw the seed builds them again from the seed, so the cache
changes the time a cell takes, never its result. Nothing is shared between processes.

The campaign's results are one JSON object per finished cell, appended and fsynced to
``OUT/cells.jsonl`` (:class:`CellStore`), failed cells included with their error text.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UsageError

if TYPE_CHECKING:
    from ..types import Step

__all__ = [
    "Cell",
    "CellResult",
    "CellStore",
    "OUTCOME_KEYS",
    "config_digest",
    "make_cells",
    "report_steps_to",
    "run_cell",
]

# The keys of a cell record that the decisions determine: equal on every executor for the same cell.
# (Times, host and process id are what differ.)
OUTCOME_KEYS = ("config", "seed", "policy", "status", "discovery", "hits", "n_top", "n_candidates",
                "budget", "top_fraction", "discovery_curve", "indices", "best_target")

_CACHE_SIZE = 4  # (config, seed) preparations kept per process: candidates + truth + embeddings
_cache: OrderedDict[tuple[str, int], dict[str, Any]] = OrderedDict()
# One cell at a time per process: torch's global RNG (seeded inside the models through fork_rng)
# and its thread count are process-wide, so two cells in threads of one process (a threaded Dask
# worker) could draw each other's random numbers.
_cell_lock = threading.Lock()


def config_digest(config: dict[str, Any]) -> str:
    """SHA-256 of the config as canonical JSON (sorted keys): the campaign's name for a config.

    Example:
        >>> config_digest({"b": 1, "a": [2.0]}) == config_digest({"a": [2.0], "b": 1})
        True
    """
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Cell:
    """What to run: the config (as ``ExperimentConfig.to_dict()``), a seed, a benchmark policy name."""

    config: dict[str, Any]
    seed: int
    policy: str
    top_fraction: float = 0.01

    @property
    def digest(self) -> str:
        return config_digest(self.config)

    @property
    def key(self) -> tuple[str, int, str]:
        """(config digest, seed, policy): what ``--resume`` matches finished records by."""
        return (self.digest, int(self.seed), self.policy)

    @property
    def name(self) -> str:
        return f"{self.config.get('name', 'experiment')}/seed {self.seed}/{self.policy}"


def make_cells(configs: list[dict[str, Any]], seeds: list[int], policies: list[str],
               top_fraction: float = 0.01) -> list[Cell]:
    """Every (config, seed, policy), config-major then seed then policy: the cells of one seed are
    neighbours, so a worker that takes them in order reuses the seed's embedding."""
    return [Cell(c, int(s), p, top_fraction) for c in configs for s in seeds for p in policies]


@dataclass
class CellResult:
    """The record of one finished cell (a line of ``cells.jsonl``).

    ``discovery`` = |top ∩ measured| / |top|, the top being the ``ceil(top_fraction * M)`` best of the
    M candidates by the instrument's noiseless truth; ``discovery_curve[k]`` is the same after
    measurement ``k + 1`` (length ``budget``). ``decision_times_s`` are the policy steps' seconds from
    a measurement received to the next position chosen; ``decision_s`` is their median (the number
    ``aexp bench --json`` reports). ``status`` is ``"ok"`` or ``"failed"`` (then ``error`` says why).
    """

    config: str
    config_name: str
    seed: int
    policy: str
    status: str
    top_fraction: float
    discovery: float | None = None
    hits: int | None = None
    n_top: int | None = None
    n_candidates: int | None = None
    budget: int | None = None
    discovery_curve: list[float] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    best_target: float | None = None
    decision_times_s: list[float] = field(default_factory=list)
    decision_s: float | None = None
    prepare_s: float = 0.0
    wall_s: float = 0.0
    prepared_here: bool = True  # False when the seed's candidates/embedding came from this process's cache
    # the instrument's pace (docs/realtime.md): meaningful on a twin with clock: real
    instrument_idle_fraction: float | None = None
    travel_m: float | None = None
    campaign_wall_s: float | None = None
    # drift: |sample point really probed - candidate chosen| in survey pixels (the twin's truth)
    position_error_px: float | None = None
    position_error_max_px: float | None = None
    # the same per measurement, in the order the twin took them, and the twin's clock at each (seconds)
    position_error_curve_px: list[float] = field(default_factory=list)
    probe_times_s: list[float] = field(default_factory=list)
    registrations: int | None = None
    registrations_failed: int | None = None
    registration_steps: list[int] = field(default_factory=list)  # each taken before this step was decided
    error: str | None = None
    traceback: str | None = None
    host: str = ""
    pid: int = 0
    torch: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    finished: str = ""

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.config, int(self.seed), self.policy)

    def outcome(self) -> dict[str, Any]:
        """The part the decisions determine (:data:`OUTCOME_KEYS`): equal on every executor."""
        d = asdict(self)
        return {k: d[k] for k in OUTCOME_KEYS}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CellResult:
        known = set(cls.__dataclass_fields__)
        missing = {"config", "seed", "policy", "status"} - set(d)
        if missing:
            raise KeyError(f"missing {sorted(missing)}")
        return cls(**{k: v for k, v in d.items() if k in known})


def _prepared(cell: Cell, cfg: Any) -> tuple[dict[str, Any], bool]:
    """The seed's candidates and noiseless truth (cached per process by (config digest, seed))."""
    from ..config import check_against
    from ..instrument import load_instrument
    from ..loop import survey_candidates
    from ..session.truth import require_ground_truth

    key = (cell.digest, int(cell.seed))
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key], False
    probe = load_instrument(cfg.instrument.driver, cfg.instrument.options, seed=cell.seed)
    oracle = require_ground_truth(probe, cfg.instrument.driver)
    check_against(cfg, probe.describe())
    surveyed = survey_candidates(cfg, probe)
    candidates = surveyed.candidates
    truth = np.asarray(oracle.truth(candidates.positions, cfg.target.build()))
    entry = {"candidates": candidates, "truth": truth, "features": {}, "period_px": surveyed.atoms_period_px}
    _cache[key] = entry
    while len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return entry, True


def _features(entry: dict[str, Any], cell: Cell, cfg: Any, embedder: str | None, device: str):
    """The embedding a policy reads (``None``: no columns, for policies that ignore features) and
    its features record (which columns are which input group)."""
    import torch

    from ..config import with_kind
    from ..features import surrogate_inputs

    feats = entry["features"]
    infos = entry.setdefault("feature_info", {})
    if embedder not in feats:
        n = len(entry["candidates"])
        if embedder is None:
            feats[None], infos[None] = torch.zeros((n, 0), dtype=torch.float64, device=device), {}
        else:
            emb_cfg = with_kind(cfg.embedder, embedder)
            x, infos[embedder] = surrogate_inputs(entry["candidates"], cfg, cell.seed, device, False,
                                                  embedder=emb_cfg, period_px=entry["period_px"])
            feats[embedder] = torch.as_tensor(x, dtype=torch.float64, device=device)
    return feats[embedder], infos[embedder]


#: Where a running cell reports its steps, ``((config digest, seed, policy), steps done, budget)``:
#: set per process by :func:`report_steps_to` (a pool's initializer, or the campaign itself when it
#: runs cells in its own process); ``None``: nobody is listening. Progress only, never recorded.
_step_sink: Callable[[tuple[tuple[str, int, str], int, int]], None] | None = None


def report_steps_to(sink: Callable[[tuple[tuple[str, int, str], int, int]], None] | None) -> None:
    """Send this process's cells' steps to ``sink`` from now on (``None``: stop)."""
    global _step_sink
    _step_sink = sink


def _step_reporter(cell: Cell) -> Callable[[Step, int], None] | None:
    sink = _step_sink
    if sink is None:
        return None

    def on_step(step: Step, budget: int) -> None:
        try:
            sink((cell.key, int(step.step) + 1, int(budget)))
        except Exception:  # noqa: BLE001 - a progress display never fails a cell
            pass

    return on_step


def _measure_cell(cell: Cell, record: CellResult) -> None:
    from ..config import parse_config
    from ..features import resolve_device
    from . import BENCH_POLICIES, run_policy, top_indices

    cfg = parse_config(cell.config, source=f"cell {cell.name}")
    if cell.policy not in BENCH_POLICIES:
        raise UsageError(f"unknown benchmark policy {cell.policy!r}; known: {list(BENCH_POLICIES)}")
    entry = BENCH_POLICIES[cell.policy]
    device = resolve_device(cfg.device)  # here, on the worker: a GPU worker resolves auto to cuda
    record.torch["device"] = device
    t0 = time.perf_counter()
    prep, record.prepared_here = _prepared(cell, cfg)
    features, columns = _features(prep, cell, cfg, entry.embedder, device)
    record.prepare_s = time.perf_counter() - t0
    run = run_policy(cfg, cell.seed, prep["candidates"], features, entry.kind, device, columns=columns,
                     on_step=_step_reporter(cell))

    top = set(top_indices(prep["truth"], cell.top_fraction).tolist())
    indices = [int(s.index) for s in run.steps]
    hits = np.cumsum([i in top for i in indices]) if indices else np.zeros(0, dtype=int)
    decisions = [float(s.timings["decision_s"]) for s in run.steps if s.phase == "policy"]
    best = run.best
    record.n_candidates, record.budget = len(prep["candidates"]), cfg.budget
    record.n_top, record.indices = len(top), indices
    record.hits = len(top & set(indices))
    record.discovery = record.hits / len(top)
    record.discovery_curve = [float(h) / len(top) for h in hits]
    best_target = None if best is None else best.target
    record.best_target = None if best_target is None or not math.isfinite(best_target) else float(best_target)
    record.decision_times_s = decisions
    record.decision_s = float(np.median(decisions)) if decisions else 0.0
    record.instrument_idle_fraction = run.extra.get("instrument_idle_fraction")
    record.travel_m = run.extra.get("travel_m")
    record.campaign_wall_s = run.extra.get("wall_s")
    errors = run.extra.get("position_errors_px")
    if errors:
        record.position_error_px, record.position_error_max_px = float(np.mean(errors)), float(np.max(errors))
        record.position_error_curve_px = [float(e) for e in errors]
        record.probe_times_s = [float(t) for t in run.extra.get("probe_times_s", [])]
    if "registrations" in run.extra:
        record.registrations = len(run.extra["registrations"])
        record.registrations_failed = sum(not r["ok"] for r in run.extra["registrations"])
        record.registration_steps = [int(r["step"]) for r in run.extra["registrations"]]


def run_cell(cell: Cell) -> dict[str, Any]:
    """Run one cell in this process and return its record (:class:`CellResult` as a dict).

    Never raises for a failure of the cell itself: the record then has ``status: "failed"`` and the
    error text, and the campaign goes on. Returns plain JSON data so any executor can carry it.
    """
    import torch

    from ..repro import torch_settings, versions

    start = time.perf_counter()
    record = CellResult(config=cell.digest, config_name=str(cell.config.get("name", "experiment")),
                        seed=int(cell.seed), policy=cell.policy, status="failed",
                        top_fraction=cell.top_fraction, host=socket.gethostname(), pid=os.getpid())
    with _cell_lock, torch_settings(num_threads=1) as settings:
        record.torch = {**settings, "version": torch.__version__}
        try:
            _measure_cell(cell, record)
            record.status = "ok"
        except Exception as exc:  # a failed cell is recorded and the campaign goes on
            record.error = f"{type(exc).__name__}: {exc}"
            record.traceback = traceback.format_exc(limit=20)
    record.versions = versions()
    record.wall_s = time.perf_counter() - start
    record.finished = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return record.to_dict()


class CellStore:
    """``OUT/cells.jsonl``: one JSON line per finished cell, appended and fsynced before the next.

    A torn last line (the campaign was killed mid-write) is moved aside to ``recovered-<n>.bin`` on
    opening for append and named in :attr:`dropped`; a malformed complete line is an error naming
    the file and the line. When a cell has several records (a failed one, then a retry under
    ``--resume``), the last one counts.
    """

    FILE = "cells.jsonl"

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / self.FILE
        self.dropped: list[str] = []

    def read(self) -> list[CellResult]:
        """Every complete record, in file order."""
        from ..session.store import SessionError

        raw = self.path.read_bytes() if self.path.exists() else b""
        lines = raw.split(b"\n")
        tail = lines.pop()
        if tail:
            note = f"{self.FILE}: torn last record ({len(tail)} bytes) ignored"
            if note not in self.dropped:
                self.dropped.append(note)
        out = []
        for n, line in enumerate(lines, start=1):
            try:
                out.append(CellResult.from_dict(json.loads(line)))
            except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
                raise SessionError(f"{self.path}: line {n} is not a valid cell record: {exc}") from None
        return out

    def latest(self) -> dict[tuple[str, int, str], CellResult]:
        """The last record of each cell, by (config digest, seed, policy)."""
        return {r.key: r for r in self.read()}

    def done(self) -> set[tuple[str, int, str]]:
        """Cells with an ``ok`` record: what ``--resume`` skips (failed cells run again)."""
        return {k for k, r in self.latest().items() if r.status == "ok"}

    def open(self) -> CellStore:
        """Create the folder; set aside a torn last line so the next record starts on its own line."""
        from ..session.store import _set_aside

        self.folder.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            raw = self.path.read_bytes()
            end = raw.rfind(b"\n") + 1
            if end < len(raw):
                aside = _set_aside(self.path, end)
                self.dropped.append(f"{self.FILE}: torn last record ({len(raw) - end} bytes) moved to {aside.name}")
        return self

    def append(self, record: dict[str, Any]) -> None:
        """Append one record and fsync it: on disk before the campaign goes on."""
        line = json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n"
        with open(self.path, "ab") as fh:
            fh.write(line.encode())
            fh.flush()
            os.fsync(fh.fileno())
