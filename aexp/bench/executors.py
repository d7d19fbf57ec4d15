"""Where a campaign's cells run, behind one seam: :class:`concurrent.futures.Executor`.

- :class:`SerialExecutor`: in this process, one cell after another (``--workers 1``).
- :func:`process_pool`: local worker processes (``--workers N``; the default is every core). Workers
  are spawned (not forked: torch's thread pools do not survive a fork) and run torch with one thread.
- :class:`DaskExecutor`: a Dask distributed cluster (``--scheduler tcp://HOST:8786``), local or on
  SLURM/PBS/Kubernetes through dask-jobqueue / dask-kubernetes. Dask reschedules the tasks of a
  worker that died. It is the optional extra ``aexp[cluster]``.

A cell returns plain JSON data, so every executor carries the same result; see
:mod:`aexp.bench.cells` for why the result does not depend on the executor.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError

__all__ = ["DaskExecutor", "ExecutorSpec", "SerialExecutor", "default_workers", "process_pool", "worker_init"]


def default_workers() -> int:
    """Every core this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def worker_init(steps: Any = None) -> None:
    """Process-pool initialiser: one torch thread per worker (the cells also pin it while they run),
    and, given the campaign's ``steps`` queue, the worker's cells report their steps to it.

    Several workers at torch's default thread count fight for the same cores, and OpenMP threads
    spin-wait between the many small parallel regions of a fit (see the project's perf notes).
    """
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    _exit_with_parent(os.getppid())
    if steps is not None:
        from .cells import report_steps_to

        steps.cancel_join_thread()  # a worker's exit never waits on progress the parent did not read
        report_steps_to(steps.put_nowait)


def _exit_with_parent(parent: int, every_s: float = 1.0) -> None:
    """End this worker when the process that started it is gone (killed with SIGKILL, say): a pool
    worker is otherwise orphaned, idle, holding its memory and its parent's pipes."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        os._exit(1)

    threading.Thread(target=watch, name="aexp-parent-watch", daemon=True).start()


class SerialExecutor(Executor):
    """Runs each call at ``submit``, in this process; returns an already finished future.

    Example:
        >>> with SerialExecutor() as ex:
        ...     ex.submit(pow, 2, 10).result()
        1024
    """

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            if not isinstance(exc, Exception):  # Ctrl-C and exits stop the campaign
                raise
            future.set_exception(exc)
        return future


def process_pool(workers: int, steps: Any = None) -> ProcessPoolExecutor:
    """``workers`` spawned processes, each with one torch thread (:func:`worker_init`); ``steps``: a
    queue of :func:`step_queue` the workers' cells report their steps to."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=worker_init, initargs=(steps,))


def step_queue() -> Any:
    """A queue the pool's workers can inherit (the spawn context's): ``(cell key, done, budget)``."""
    return multiprocessing.get_context("spawn").Queue()


class DaskExecutor(Executor):
    """A Dask distributed cluster as an :class:`~concurrent.futures.Executor`.

    ``scheduler`` is an address (``tcp://HOST:8786``, ``inproc://...``) or a ``distributed.Client``;
    a client made here is closed at :meth:`shutdown`. ``resources`` (e.g. ``{"GPU": 1}``) sends every
    task to workers started with those resources (``dask worker --resources GPU=1``).

    Example:
        >>> from distributed import LocalCluster                      # doctest: +SKIP
        >>> with LocalCluster(n_workers=2, processes=False) as cluster:  # doctest: +SKIP
        ...     with DaskExecutor(cluster.scheduler_address) as ex:
        ...         ex.submit(pow, 2, 10).result()
        1024
    """

    def __init__(self, scheduler: Any, resources: dict[str, float] | None = None,
                 timeout_s: float = 30.0) -> None:
        try:
            from distributed import Client
        except ImportError as exc:
            raise ImportError("--scheduler needs Dask distributed: pip install 'aexp[cluster]'") from exc
        self._own = not isinstance(scheduler, Client)
        try:
            self.client = Client(scheduler, timeout=timeout_s) if self._own else scheduler
        except OSError as exc:  # no scheduler at that address (distributed raises OSError/TimeoutError)
            raise UsageError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        options: dict[str, Any] = {"pure": False}  # two cells with equal arguments still both run
        if resources:
            options["resources"] = dict(resources)
        self._inner = self.client.get_executor(**options)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        return self._inner.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._inner.shutdown(wait=wait and not cancel_futures)
        if self._own:
            self.client.close()


@dataclass(frozen=True)
class ExecutorSpec:
    """How to make the campaign's executor again (after a local worker died, the pool is rebuilt).

    ``scheduler`` set: Dask; else ``workers == 1``: serial; else a process pool of ``workers``.
    ``in_flight`` is how many cells to hand out at once: as many as there are local workers, so a
    dead worker takes at most those with it; a Dask scheduler gets them all and balances itself.
    """

    workers: int = 1
    scheduler: str | None = None
    resources: tuple[tuple[str, float], ...] = ()

    def make(self, steps: Any = None) -> Executor:
        """The executor; ``steps``: a :func:`step_queue` a process pool's workers report steps to
        (a serial run reports in this process, a Dask cluster's workers not at all)."""
        if self.scheduler:
            return DaskExecutor(self.scheduler, dict(self.resources) or None)
        if self.workers <= 1:
            return SerialExecutor()
        return process_pool(self.workers, steps)

    @property
    def in_flight(self) -> int | None:
        return None if self.scheduler else max(1, self.workers)

    def describe(self) -> str:
        if self.scheduler:
            extra = f", resources {dict(self.resources)}" if self.resources else ""
            return f"dask {self.scheduler}{extra}"
        return "serial (this process)" if self.workers <= 1 else f"process pool of {self.workers}"
