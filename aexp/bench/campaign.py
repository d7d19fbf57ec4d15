"""A benchmark campaign: every (config, seed, policy) cell, on an executor, into ``OUT/cells.jsonl``.

:func:`run_cells` hands cells to the executor, appends each finished record durably (at most the
cells in flight are lost when the campaign is killed) and goes on when a cell fails. A local worker
process that dies breaks its pool: the pool is rebuilt and the cells it held run again, each at most
``max_attempts`` times. :func:`open_campaign` refuses to mix a new campaign into an old folder unless
``resume`` is set, and then lists the cells still to run.
"""

from __future__ import annotations

import json
import queue as queues
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AexpError
from .cells import Cell, CellResult, CellStore, report_steps_to
from .executors import ExecutorSpec, step_queue

__all__ = ["CampaignError", "open_campaign", "run_cells", "bench_json", "Progress"]

CAMPAIGN_FILE = "campaign.json"
OnRecord = Callable[[dict[str, Any]], None]
#: ``on_step(cell key, steps done, budget)``: a running cell's progress (never recorded).
OnStep = Callable[[tuple[str, int, str], int, int], None]


class CampaignError(AexpError, ValueError):
    """The output folder holds another campaign, or a campaign file is unreadable."""


def _failed(cell: Cell, error: str) -> dict[str, Any]:
    return CellResult(config=cell.digest, config_name=str(cell.config.get("name", "experiment")),
                      seed=int(cell.seed), policy=cell.policy, status="failed",
                      top_fraction=cell.top_fraction, error=error,
                      finished=time.strftime("%Y-%m-%dT%H:%M:%S%z")).to_dict()


def run_cells(
    cells: Iterable[Cell],
    spec: ExecutorSpec,
    store: CellStore | None = None,
    on_record: OnRecord | None = None,
    max_attempts: int = 3,
    on_step: OnStep | None = None,
) -> list[dict[str, Any]]:
    """Run ``cells`` on executors made by ``spec``; return their records in the order they finished.

    Each record is appended to ``store`` (fsynced) before the next is collected. A cell whose worker
    process died runs again on a fresh pool, up to ``max_attempts`` times, then is recorded as failed.
    ``on_step`` hears each step of the cells running here or in a local pool (not on a Dask cluster).
    """
    with _steps_heard(spec, on_step) as steps:
        return _run_cells(cells, spec, store, on_record, max_attempts, steps)


@contextmanager
def _steps_heard(spec: ExecutorSpec, on_step: OnStep | None) -> Iterator[Any]:
    """Route the cells' steps to ``on_step``: directly when they run in this process; through a queue
    (yielded, for the pool) drained by a thread when a local pool runs them; not at all on Dask."""
    if on_step is None or spec.scheduler:
        yield None
        return
    if spec.workers <= 1:
        report_steps_to(lambda message: on_step(*message))
        try:
            yield None
        finally:
            report_steps_to(None)
        return
    steps, stop = step_queue(), threading.Event()

    def drain(wait_s: float | None) -> None:
        while not stop.is_set() or wait_s is None:
            try:
                key, done, budget = steps.get(timeout=wait_s) if wait_s else steps.get_nowait()
            except queues.Empty:
                if wait_s is None:
                    return
                continue
            except Exception:  # noqa: BLE001 - a worker killed mid-message: the display stops, not the campaign
                return
            on_step(tuple(key), int(done), int(budget))  # type: ignore[arg-type]

    reader = threading.Thread(target=drain, args=(0.1,), name="aexp-bench-steps", daemon=True)
    reader.start()
    try:
        yield steps
    finally:
        stop.set()
        reader.join(timeout=1.0)
        if not reader.is_alive():
            drain(None)  # what the last workers sent while their cells' records were collected
        steps.cancel_join_thread()
        steps.close()


def _run_cells(cells: Iterable[Cell], spec: ExecutorSpec, store: CellStore | None, on_record: OnRecord | None,
               max_attempts: int, steps: Any) -> list[dict[str, Any]]:
    from .cells import run_cell

    queue = list(cells)
    queue.reverse()  # pop() from the end hands cells out in their given order
    attempts: dict[tuple[str, int, str], int] = {}
    records: list[dict[str, Any]] = []

    def finish(record: dict[str, Any]) -> None:
        if store is not None:
            store.append(record)
        records.append(record)
        if on_record is not None:
            on_record(record)

    while queue:
        executor = spec.make(steps)
        limit = spec.in_flight or len(queue)
        running: dict[Future, Cell] = {}
        broken = False
        try:
            while queue or running:
                while queue and len(running) < limit and not broken:
                    cell = queue.pop()
                    try:
                        running[executor.submit(run_cell, cell)] = cell
                    except BrokenProcessPool:
                        queue.append(cell)
                        broken = True
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    cell = running.pop(future)
                    try:
                        finish(future.result())
                    except (BrokenProcessPool, CancelledError) as exc:
                        broken = True
                        n = attempts[cell.key] = attempts.get(cell.key, 0) + 1
                        if n >= max_attempts:
                            finish(_failed(cell, f"worker process died {n} times while running this cell "
                                                 f"({type(exc).__name__})"))
                        else:
                            queue.append(cell)
                    except Exception as exc:  # e.g. Dask's KilledWorker after its own retries
                        finish(_failed(cell, f"{type(exc).__name__}: {exc}"))
        except BaseException:  # Ctrl-C: drop what is queued, keep what is on disk
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        executor.shutdown(wait=True)  # nothing left in flight: let the workers exit
        if not broken:
            break
    return records


def open_campaign(out: Path, cells: list[Cell], resume: bool, executor: str,
                  sources: dict[str, str] | None = None) -> tuple[CellStore, list[Cell]]:
    """Open ``out`` for ``cells``; returns the store and the cells still to run.

    Without ``resume`` a folder that already holds cell records is refused (nothing recorded is ever
    replaced). With it, cells that have an ``ok`` record are skipped; failed ones run again.
    ``campaign.json`` keeps every config by digest and one entry per invocation.
    """
    store = CellStore(out)
    previous = store.read() if store.path.exists() else []
    if previous and not resume:
        raise CampaignError(f"{out} already holds a campaign ({len(previous)} cell records); pass --resume "
                            f"to run only the missing cells, or choose another --out")
    store.open()
    done = store.done()
    todo = [c for c in cells if c.key not in done]
    meta_path = out / CAMPAIGN_FILE
    meta: dict[str, Any] = {"format_version": 1, "configs": {}, "runs": []}
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise CampaignError(f"{meta_path}: not valid JSON ({exc})") from None
    for c in cells:
        entry = meta["configs"].setdefault(c.digest, {"name": c.config.get("name"), "config": c.config})
        if sources and c.digest in sources:
            entry["source"] = sources[c.digest]
    meta["runs"].append({
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "executor": executor,
        "resume": resume,
        "configs": sorted({c.digest for c in cells}),
        "seeds": sorted({c.seed for c in cells}),
        "policies": list(dict.fromkeys(c.policy for c in cells)),
        "top_fraction": cells[0].top_fraction if cells else None,
        "cells": len(cells),
        "to_run": len(todo),
    })
    from ..session.store import write_json

    write_json(meta_path, meta)
    return store, todo


def bench_json(records: Iterable[dict[str, Any]], cells: list[Cell]) -> list[dict[str, Any]]:
    """Today's ``aexp bench --json`` result, one per config of ``cells`` (in order): budget,
    n_candidates, top_fraction, seeds, config (its name), and per policy the discovery and median
    decision seconds of each seed (``null`` for a failed cell)."""
    latest = {(r["config"], int(r["seed"]), r["policy"]): r for r in records}
    out = []
    for digest in dict.fromkeys(c.digest for c in cells):
        mine = [c for c in cells if c.digest == digest]
        seeds = list(dict.fromkeys(c.seed for c in mine))
        policies = list(dict.fromkeys(c.policy for c in mine))
        ok = [latest[c.key] for c in mine if c.key in latest and latest[c.key]["status"] == "ok"]
        cfg = mine[0].config
        result: dict[str, Any] = {
            "budget": cfg["policy"]["n_initial"] + cfg["stopping"]["max_steps"],
            "n_candidates": ok[-1]["n_candidates"] if ok else None,
            "top_fraction": mine[0].top_fraction,
            "seeds": seeds,
            "config": cfg.get("name"),
            "policies": {p: {"discovery": [], "decision_s": []} for p in policies},
        }
        for p in policies:
            for s in seeds:
                r = latest.get((digest, s, p))
                good = r if r is not None and r["status"] == "ok" else None
                result["policies"][p]["discovery"].append(None if good is None else good["discovery"])
                result["policies"][p]["decision_s"].append(None if good is None else good["decision_s"])
        out.append(result)
    return out


class Progress:
    """One bar over the cells, its postfix the running mean discovery per policy (ok cells); with
    ``names`` (cell key -> name), a status line under it: each running cell's steps done of its budget
    (:meth:`step`, for a terminal: it redraws in place)."""

    def __init__(self, total: int, already: Iterable[dict[str, Any]] = (), enabled: bool = True,
                 names: dict[tuple[str, int, str], str] | None = None) -> None:
        from tqdm.auto import tqdm

        self.values: dict[str, list[float]] = {}
        self.failed = 0
        for r in already:
            self._add(r)
        self.bar = tqdm(total=total, desc="cells", unit="cell", disable=not enabled, dynamic_ncols=True)
        self.names = names or {}
        self.running: dict[tuple[str, int, str], tuple[int, int]] = {}
        self.finished: set[tuple[str, int, str]] = set()  # a late step never brings a cell back
        self.status = tqdm(total=0, bar_format="{desc}", position=1, leave=False, dynamic_ncols=True,
                           disable=not (enabled and names))
        self._lock = threading.Lock()  # steps arrive on the queue's reader thread
        self._postfix()

    def step(self, key: tuple[str, int, str], done: int, budget: int) -> None:
        """Cell ``key`` has recorded ``done`` of its ``budget`` steps."""
        with self._lock:
            if key not in self.finished:
                self.running[key] = (done, budget)
                self._show()

    def _show(self) -> None:
        cells = [f"{self.names.get(k, '/'.join(map(str, k[1:])))} {d}/{b}" for k, (d, b) in self.running.items()]
        self.status.set_description_str("steps: " + " · ".join(cells) if cells else "", refresh=True)

    def _add(self, record: dict[str, Any]) -> None:
        if record["status"] == "ok":
            self.values.setdefault(record["policy"], []).append(float(record["discovery"]))
        else:
            self.failed += 1

    def _postfix(self) -> None:
        post = {p: f"{np.mean(v):.3f}" for p, v in self.values.items()}
        if self.failed:
            post["failed"] = str(self.failed)
        self.bar.set_postfix(post, refresh=False)

    def __call__(self, record: dict[str, Any]) -> None:
        with self._lock:
            key = (record["config"], int(record["seed"]), record["policy"])
            self.finished.add(key)
            self.running.pop(key, None)
            self._show()
        self._add(record)
        self._postfix()
        self.bar.update(1)

    def close(self) -> None:
        self.status.close()
        self.bar.close()
