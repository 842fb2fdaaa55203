"""Where chunks of windows train: this process, a process pool, or Ray tasks (design section 11).

A worker gets the :class:`Work` of a backtest once (config, strategy, table and boundary policy)
and then :class:`~harness.backtest.boundary.Job` s — windows to train together, plus the previous
window's fitted members when the policy chains them — and returns their window results.
Workers never touch MLflow: only the driver logs, so a Ray cluster needs no shared filesystem, only
the same Python environment on every node.

Every executor runs the same jobs through the same function, so the numbers do not depend on the
executor. Pool and Ray workers use one torch thread each; ``local`` keeps the caller's threads (at
other thread counts torch may sum large matmuls in another order).

With ``process`` from your own script, guard the entry point with ``if __name__ == "__main__":``
(workers are spawned and import the main module), and define a custom strategy in an importable
module, not in the script or a notebook.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from harness.backtest.boundary import Boundary, Job
from harness.backtest.window import WindowResult, WindowTrainer
from harness.config import Config, ExecutionConfig
from harness.errors import HarnessError
from harness.provenance import reachable

EXECUTORS = ("local", "process", "ray")


@dataclass(frozen=True)
class Work:
    """What every job of one backtest shares; shipped to each worker once."""

    config: Config
    strategy: Any
    table: Any
    boundary: Boundary
    keep_fitted: bool = False

    def run(self, job: Job) -> list[WindowResult]:
        results = self.boundary.train(WindowTrainer(self.config, self.strategy, self.table), job)
        if not (self.keep_fitted or self.boundary.chained):  # fitted members stay in the worker
            for result in results:
                result.fitted = None
        return results


class Executor:
    """Runs jobs and yields each job's results as it finishes (in any order)."""

    name = "local"

    def __init__(self, work: Work) -> None:
        self.work = work

    def results(self, jobs: Sequence[Job]) -> Iterator[list[WindowResult]]:
        for job in jobs:
            yield self.work.run(job)

    def close(self) -> None:
        """Stop the workers; pending jobs are dropped."""


@contextmanager
def open_executor(execution: ExecutionConfig, work: Work, n_jobs: int | None = None) -> Iterator[Executor]:
    """The executor ``execution.executor`` names, closed (workers stopped) on exit.

    ``n_jobs`` caps the number of worker processes (no point starting more than there are jobs).
    """
    workers = max(1, min(execution.workers, n_jobs or execution.workers))
    if execution.executor == "process":
        executor: Executor = ProcessExecutor(work, workers)
    elif execution.executor == "ray":
        executor = RayExecutor(work, workers, execution.address)
    elif execution.executor == "local":
        executor = Executor(work)
    else:  # the config schema already refuses other names
        raise HarnessError(f"execution.executor: must be one of {', '.join(EXECUTORS)}, got {execution.executor!r}")
    try:
        yield executor
    finally:
        executor.close()


def check_execution(execution: ExecutionConfig) -> None:
    """Refuse, before any run is opened, an executor that cannot start: Ray missing or a cluster
    address nobody answers at."""
    if execution.executor == "ray":
        _import_ray()
        if execution.address:
            _check_reachable(execution.address)


# --- process pool ------------------------------------------------------------------------------

_WORK: Work | None = None  # a pool worker's share of the backtest, set once by _init_worker


class ProcessExecutor(Executor):
    """A pool of ``workers`` processes on this machine (spawned: no state inherited by fork)."""

    name = "process"

    def __init__(self, work: Work, workers: int) -> None:
        super().__init__(work)
        self.pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker, initargs=(work, os.getpid()),
        )
        self.futures: set[Future] = set()

    def results(self, jobs: Sequence[Job]) -> Iterator[list[WindowResult]]:
        self.futures = {self.pool.submit(_run_job, job) for job in jobs}
        while self.futures:
            done, self.futures = wait(self.futures, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()

    def close(self) -> None:
        for future in self.futures:
            future.cancel()
        # A job already running would hold up shutdown until it finishes: stop its process now.
        # (ProcessPoolExecutor only gains a public terminate_workers() in Python 3.14.)
        processes = list(getattr(self.pool, "_processes", {}).values())
        for process in processes:
            if process.is_alive():
                process.terminate()
        self.pool.shutdown(wait=True, cancel_futures=True)


def _init_worker(work: Work, driver_pid: int) -> None:
    """A pool worker: one torch thread, Ctrl-C left to the driver, and no life after the driver."""
    import torch

    global _WORK
    _WORK = work
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_driver, args=(driver_pid,), daemon=True).start()


def _exit_with_driver(driver_pid: int, every: float = 0.5) -> None:
    """A driver killed with SIGKILL cannot stop its workers; they notice they were orphaned."""
    import time

    while os.getppid() == driver_pid:
        time.sleep(every)
    os._exit(1)


def _run_job(job: Job) -> list[WindowResult]:
    if _WORK is None:  # pragma: no cover - the initializer always runs first
        raise RuntimeError("pool worker started without its work")
    return _WORK.run(job)


# --- Ray ---------------------------------------------------------------------------------------


class RayExecutor(Executor):
    """Ray Core tasks: on an existing cluster (``address``, e.g. ``auto``) or a local Ray started
    with ``workers`` CPUs. The work goes to the object store once; each job is one task."""

    name = "ray"

    def __init__(self, work: Work, workers: int, address: str | None) -> None:
        super().__init__(work)
        self.ray = _import_ray()
        self.started = _connect(self.ray, workers, address)
        self.pending: list[Any] = []
        self.work_ref = self.ray.put(work)
        self.task = self.ray.remote(num_cpus=1)(_ray_job)  # retried if a node dies

    def results(self, jobs: Sequence[Job]) -> Iterator[list[WindowResult]]:
        ray = self.ray
        self.pending = [self.task.remote(self.work_ref, job) for job in jobs]
        while self.pending:
            ready, self.pending = ray.wait(self.pending, num_returns=1)
            try:
                yield ray.get(ready[0])
            except ray.exceptions.RayTaskError as exc:  # re-raise what the task raised, not Ray's wrapper
                cause = getattr(exc, "cause", None)
                raise (cause if isinstance(cause, BaseException) else exc) from None

    def close(self) -> None:
        for ref in self.pending:
            self.ray.cancel(ref, force=True)
        self.pending = []
        if self.started:
            self.ray.shutdown()


def _ray_job(work: Work, job: Job) -> list[WindowResult]:
    import torch

    torch.set_num_threads(1)
    return work.run(job)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise HarnessError(
            "execution.executor: ray needs the Ray package; install it with pip install 'harness[ray]' "
            "(or pip install 'ray>=2.30'), or use executor: process"
        ) from None
    return ray


def _connect(ray: Any, workers: int, address: str | None) -> bool:
    """Join the cluster at ``address``, or start a local Ray with ``workers`` CPUs; True if this call
    connected (and so should disconnect). A Ray session the caller already opened is reused."""
    if ray.is_initialized():
        return False
    options = {"logging_level": logging.WARNING, "include_dashboard": False}
    if address:
        _check_reachable(address)
        try:
            ray.init(address=address, **options)
        except ConnectionError as exc:
            first = str(exc).split(". ")[0].strip().rstrip(".")
            raise HarnessError(
                f"execution.address: cannot join a Ray cluster at '{address}' ({first}); start one with "
                "`ray start --head` (if it uses token authentication, export RAY_AUTH_MODE=token here too), "
                "or leave execution.address empty to start a local Ray"
            ) from None
    else:
        ray.init(num_cpus=workers, **options)
    return True


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a ``host:port`` nobody listens on (Ray itself retries for minutes)."""
    if address == "auto" or address.startswith("local"):
        return
    host, _, port = address.split("://")[-1].rpartition(":")
    if not host or not port.isdigit():
        raise HarnessError(
            f"execution.address: '{address}' is not 'auto' or HOST:PORT (e.g. 10.0.0.5:6379); fix it"
        )
    error = reachable(host, int(port), timeout)
    if error is not None:
        raise HarnessError(
            f"execution.address: no Ray cluster answers at {host}:{port} ({error.strerror or error}); start one "
            "there with `ray start --head`, use address: auto on a cluster node, or leave it empty"
        )
