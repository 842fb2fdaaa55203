"""A test-only fault hook: SIGKILL this process right before its Nth write to the MLflow store.

Nothing happens unless one of these variables is set when :mod:`harness.tracking.store` is imported
(the kill-anywhere tests set them on the subprocesses they start; users never do):

- ``HARNESS_TEST_KILL_AT=N``: kill (SIGKILL, no cleanup) right before the Nth write of this
  process; ``HARNESS_TEST_KILL_AT=NAME:N`` right before its Nth call of ``MlflowClient.NAME``
  (``log_artifacts:2``, ``set_registered_model_alias:1``). ``HARNESS_TEST_KILL_SIGNAL=SIGINT``
  sends that signal instead (a Ctrl-C at that moment).
- ``HARNESS_TEST_WRITES=PATH``: append one line per write (``<n> <method> <unix time>``) to PATH, flushed at
  once, so that a test can measure an uninterrupted run and choose its kill moments.

A *write* is a call of a public ``MlflowClient`` method that changes the store (its name starts
with ``create_``, ``log_``, ``set_``, ``update_``, ``delete_``, ``finalize_``...); MLflow's fluent
API (``mlflow.pytorch.log_model``) goes through the same methods. Between two writes the store
does not change, so "right before write N" for every N covers every moment of a run as far as
the store can tell. Where ``harness run``'s side process makes the writes (:mod:`harness.backtest.aside`),
it counts them, and at the kill moment the run's own process raises the signal, before the write.
"""

from __future__ import annotations

import functools
import os
import signal
import time

from mlflow import MlflowClient

KILL_AT = "HARNESS_TEST_KILL_AT"
KILL_SIGNAL = "HARNESS_TEST_KILL_SIGNAL"
WRITES = "HARNESS_TEST_WRITES"
PREFIXES = ("create_", "log_", "set_", "update_", "delete_", "finalize_", "rename_", "restore_",
            "transition_", "copy_", "link_")

_counts: dict[str, int] = {}
_run_pid: int | None = None  # set where another process's writes are made here (redirect)


class Fault(KeyboardInterrupt):
    """A kill moment other than SIGKILL reached in a process that makes another's store writes
    (``harness run``'s side process, :mod:`harness.backtest.aside`): the write is not made, the call
    unwinds as under Ctrl-C, and the run's process raises ``signal`` itself."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal = signal_name


def redirect(run_pid: int) -> None:
    """Make the writes of process ``run_pid`` here: at a kill moment SIGKILL kills both processes,
    another signal raises :class:`Fault`."""
    global _run_pid
    _run_pid = run_pid


def install() -> None:
    """Wrap MlflowClient's write methods when a test asked for it (idempotent; else nothing)."""
    if not (os.environ.get(KILL_AT) or os.environ.get(WRITES)) or getattr(MlflowClient, "_harness_faults", False):
        return
    for name in dir(MlflowClient):
        method = getattr(MlflowClient, name)
        if name.startswith(PREFIXES) and callable(method):
            setattr(MlflowClient, name, _counted(name, method))
    MlflowClient._harness_faults = True


def _counted(name: str, method):
    @functools.wraps(method)
    def write(*args, **kwargs):
        total = _counts["*"] = _counts.get("*", 0) + 1
        mine = _counts[name] = _counts.get(name, 0) + 1
        at = os.environ.get(KILL_AT, "")
        if at in (str(total), f"{name}:{mine}"):
            name_of_signal = os.environ.get(KILL_SIGNAL) or "SIGKILL"
            if _run_pid is not None:
                if name_of_signal != "SIGKILL":
                    raise Fault(name_of_signal)
                os.kill(_run_pid, signal.SIGKILL)  # the run first, then this: nothing of either runs on
            # raise_signal runs a Python handler (Ctrl-C) before it returns, so before the write
            signal.raise_signal(getattr(signal, name_of_signal))
        path = os.environ.get(WRITES)
        if path:
            with open(path, "a") as file:
                file.write(f"{total} {name} {time.time():.3f}\n")
        return method(*args, **kwargs)

    return write
