"""Resume: a backtest killed at any moment continues where it stopped (design section 11).

A backtest is one MLflow parent run, opened before the first window trains. Its identity is the
tags :data:`IDENTITY` (config hash, data hash and code version); its owner is the process that
holds it (tags ``process.host``, ``process.pid``, ``process.started``). The parent goes through
these steps, each resumable, and stays RUNNING until the last one is done:

1. **training**: after each finished chunk the driver saves those windows' results into the
   parent's artifacts (``checkpoint/window_00007.pkl``; for chained boundary policies also
   ``checkpoint/state.pkl``, the members after the newest window, which the next window starts from);
2. **logging**: one nested run per schedule, each ended FINISHED only once all of it is logged,
   then the parent's tables and figures (:func:`harness.tracking.finish_backtest`, idempotent:
   a schedule with a FINISHED nested run is skipped, partial ones are trashed and logged anew);
3. **selection**: the selection report and figures, then its tags (``selected_schedule``, ...) in
   one write;
4. the parent is ended FINISHED: the one write that says the backtest is complete.

Started again, the same backtest finds its earlier parent run:

- FINISHED: nothing to do (``harness run --rerun`` starts a new one). A FINISHED parent without
  ``selected_schedule`` (written by an older version, killed during its selection) gets its
  selection logged now;
- KILLED, FAILED, or RUNNING in a process that no longer exists: it is taken over; its saved
  windows are loaded, not retrained, nested runs that are not complete are trashed, and the
  remaining steps run (complete schedule runs are kept, never logged twice). Runs left RUNNING by
  dead processes are ended KILLED;
- RUNNING in a live process (or on another host, which cannot be checked): an error says so.

Ctrl-C and ``kill`` (SIGTERM) under :func:`interrupts` raise KeyboardInterrupt *and* are
remembered: Python delivers the signal wherever the main thread is, and an interrupt raised
inside a finalizer (``Exception ignored in ...``) or turned into another error by C code would
otherwise be lost. :func:`check_interrupted` re-raises a remembered one between steps (after each
checkpoint, before the logging and the selection, before the parent is ended FINISHED), so an
interrupted run always ends KILLED with exit status 130, never FINISHED with 0.

Checkpoints are pickles written by this code into your own tracking store; trust the store as
you trust the code. A checkpoint file that does not load (cut short by a kill, or written by
another version) is ignored and its windows train again, which gives the same numbers.
"""

from __future__ import annotations

import logging
import pickle
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness import provenance
from harness.backtest.boundary import Boundary
from harness.backtest.sidecar import tracking  # harness.tracking, called in the side process when one runs
from harness.backtest.window import Fitted, WindowResult
from harness.config import Config
from harness.errors import HarnessError

log = logging.getLogger("harness.resume")

IDENTITY = ("config_hash", "data_hash", "harness_version", "git_commit")
CHECKPOINT = "checkpoint"
STATE_FILE = "state.pkl"
FORMAT = 1


@dataclass
class Checkpoint:
    """The finished windows of one backtest, kept in its parent run ``run_id`` as they come.

    ``done`` maps window index to its result (without fitted members). For a chained boundary
    policy ``state`` holds the fitted members after the newest saved window, which the next
    window starts from; the policy decides what a resumed run keeps (:meth:`Boundary.restore`).
    """

    store: Any
    run_id: str
    boundary: Boundary
    done: dict[int, WindowResult] = field(default_factory=dict)
    state: Fitted | None = None

    def save(self, results: list[WindowResult]) -> None:
        """Persist finished windows (the driver calls this after each job; workers never do).

        Window files go first, the chained state after: a kill in between leaves a state older
        than the newest window, and the policy then retrains from the state.
        """
        windows = tempfile.mkdtemp(prefix="harness-checkpoint-")
        saved = {result.index: replace(result, fitted=None) for result in results}
        for index, result in saved.items():
            _write(Path(windows) / window_file(index), {"result": result})

        def then(made: bool) -> None:
            shutil.rmtree(windows, ignore_errors=True)
            if made:
                self.done.update(saved)

        # saved by the side process while the next windows train (its answer is taken at the next call)
        tracking.defer(then, "save_files", self.store, self.run_id, windows, CHECKPOINT)
        if not self.boundary.chained:
            check_interrupted()
            return
        last = max(results, key=lambda result: result.index)
        with tempfile.TemporaryDirectory(prefix="harness-checkpoint-") as folder:
            _write(Path(folder) / STATE_FILE, {"index": last.index, "fitted": last.fitted})
            tracking.save_files(self.store, self.run_id, folder, CHECKPOINT)
        self.state = last.fitted
        check_interrupted()  # a Ctrl-C lost inside the training (see interrupts) stops the run here

    @classmethod
    def load(cls, store: Any, run_id: str, config: Config, boundary: Boundary) -> "Checkpoint":
        """The saved windows of run ``run_id`` that load and fit ``config`` (others are dropped),
        as far as the boundary policy can continue from them."""
        n_windows = len(boundary.windows)
        members = len(config.schedule_labels()) * config.training.seeds  # candidates x seeds
        labels = set(config.schedule_labels())
        done: dict[int, WindowResult] = {}
        state = None
        with tempfile.TemporaryDirectory(prefix="harness-checkpoint-") as tmp:
            folder = tracking.fetch_files(store, run_id, CHECKPOINT, tmp)
            for path in sorted(folder.glob("window_*.pkl")) if folder else []:
                result = (_read(path) or {}).get("result")
                if (isinstance(result, WindowResult) and 0 <= result.index < n_windows
                        and len(result.labels) == members and {label for label, _ in result.labels} == labels):
                    done[result.index] = result
            saved = _read(folder / STATE_FILE) if folder is not None else None
            if saved and isinstance(saved.get("fitted"), Fitted):
                state = (int(saved["index"]), saved["fitted"])
        kept, fitted = boundary.restore(done, state)
        return cls(store, run_id, boundary, kept, fitted)


def window_file(index: int) -> str:
    return f"window_{index:05d}.pkl"


def _write(path: Path, payload: dict[str, Any]) -> None:
    with path.open("wb") as file:
        pickle.dump({"format": FORMAT, **payload}, file, protocol=pickle.HIGHEST_PROTOCOL)


def _read(path: Path) -> dict[str, Any] | None:
    """A checkpoint file's payload, or None when it is missing, cut short or from another format."""
    if not path.is_file():
        return None
    try:
        with path.open("rb") as file:
            payload = pickle.load(file)
    except Exception as exc:  # truncated by a kill, or classes that changed: retrain that window
        log.warning("ignoring checkpoint %s (%s: %s); its windows train again", path.name, type(exc).__name__, exc)
        return None
    return payload if isinstance(payload, dict) and payload.get("format") == FORMAT else None


# --- earlier runs of the same backtest ---------------------------------------------------------


@dataclass
class Earlier:
    """What the store holds of this backtest already."""

    finished: str | None = None   # newest FINISHED parent run
    unselected: bool = False      # ... which lacks its selection (an older version killed during it)
    resumable: str | None = None  # newest unfinished parent run whose process is gone
    closed: list[str] = field(default_factory=list)  # left RUNNING by dead processes, now KILLED


def find_earlier(store: Any, experiment: str, tags: Mapping[str, str], *, rerun: bool = False) -> Earlier:
    """Classify the earlier parent runs with the same :data:`IDENTITY` tags, newest first.

    The newest decides (FINISHED, or unfinished and resumable); with ``rerun`` none does. A parent
    is FINISHED only once its schedules and its selection are logged; ``unselected`` marks one
    without ``selected_schedule`` (left by an older version), whose selection is logged now. Runs
    left RUNNING by dead processes on this host are ended KILLED on the way. A run RUNNING in a
    live process, or on another host, met before any decisive one is an error (``rerun`` skips
    the other-host ones).
    """
    identity = {"kind": "backtest", **{key: tags[key] for key in IDENTITY}}
    earlier = Earlier()
    decided = rerun
    for run in tracking.find_runs(store, experiment, identity).to_dict("records"):
        run_id, status = run["run_id"], run["status"]
        if status == "RUNNING":
            owner = _owner(run)
            if owner == "dead":
                tracking.end_run(store, run_id, "KILLED")
                earlier.closed.append(run_id)
                status = "KILLED"
            elif not decided and (owner == "live" or not rerun):
                raise _busy(experiment, run, owner)
        if decided or status == "RUNNING":
            continue
        if status == "FINISHED":
            earlier.finished = run_id
            earlier.unselected = not isinstance(run.get("tags.selected_schedule"), str)
        else:
            earlier.resumable = run_id
        decided = True
    return earlier


def begin(store: Any, config: Config, tags: Mapping[str, str], earlier: Earlier, boundary: Boundary, *,
          run_name: str) -> Checkpoint:
    """Open this session's parent run: take over ``earlier.resumable`` with its saved windows, or
    start a new one. Owner tags name this process."""
    owner = provenance.process_tags()
    if earlier.resumable is None:
        run_id = tracking.start_backtest(store, config.experiment, run_name=run_name,
                                         config=config.model_dump(mode="json"), tags={**tags, **owner})
        return Checkpoint(store, run_id, boundary)
    tracking.reopen_run(store, earlier.resumable, owner,
                        config=config.model_dump(mode="json"))  # the params a kill left out
    try:
        kept = tracking.prune_child_runs(store, earlier.resumable)  # partial ones trashed, complete ones kept
        if kept:
            log.info("run %s already holds %d complete schedule runs; they are not logged again",
                     earlier.resumable, len(kept))
        return Checkpoint.load(store, earlier.resumable, config, boundary)
    except BaseException as exc:
        tracking.end_run(store, earlier.resumable, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise


def _owner(run: Mapping[str, Any]) -> str:
    """``live``, ``dead`` or ``elsewhere`` (another host) for the process that holds ``run``."""
    host, pid = run.get("tags.process.host"), run.get("tags.process.pid")
    if not isinstance(host, str) or not isinstance(pid, str) or not pid.isdigit():
        return "dead"  # no owner recorded: nothing can still be writing it
    if host != provenance.hostname():
        return "elsewhere"
    started = run.get("tags.process.started")
    return "live" if provenance.is_running(int(pid), started if isinstance(started, str) else "") else "dead"


def _busy(experiment: str, run: Mapping[str, Any], owner: str) -> HarnessError:
    where = f"pid {run.get('tags.process.pid')} on {run.get('tags.process.host')}"
    if owner == "live":
        return HarnessError(
            f"this backtest is already running in experiment '{experiment}' as run {run['run_id']} ({where}); "
            "wait for it, or stop it and run this command again to resume it"
        )
    return HarnessError(
        f"this backtest is RUNNING in experiment '{experiment}' as run {run['run_id']} ({where}), which this "
        "host cannot check; wait for it, or pass --rerun to start a new run"
    )


# --- Ctrl-C and kill, never lost ----------------------------------------------------------------

_pending: list[int] = []  # signals received under interrupts() and not yet cleared


@contextmanager
def interrupts() -> Iterator[None]:
    """For the block, SIGINT (Ctrl-C) and SIGTERM (``kill PID``) raise KeyboardInterrupt and are
    remembered (:func:`interrupted`, :func:`check_interrupted`); the previous handlers come back
    after. Outside the main thread (where handlers cannot be set) it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    _pending.clear()
    for number in previous:
        signal.signal(number, _on_signal)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        _pending.clear()


def interrupted() -> bool:
    """Whether a Ctrl-C or SIGTERM came under :func:`interrupts` (even if its KeyboardInterrupt was lost)."""
    return bool(_pending)


def check_interrupted() -> None:
    """Raise KeyboardInterrupt if an interrupt came and was lost on the way (see :func:`interrupts`)."""
    if _pending:
        raise KeyboardInterrupt


def _on_signal(signum: int, frame: Any) -> None:
    _pending.append(signum)
    raise KeyboardInterrupt
