"""Resume: a backtest killed at any moment continues where it stopped (design section 11).

A backtest is one MLflow parent run, opened before the first window trains. Its identity is the
tags :data:`IDENTITY` (config hash, data hash and code version); its owner is the process that
holds it (tags ``process.host``, ``process.pid``, ``process.started``). After each finished chunk the
driver saves those windows' results into the parent's artifacts (``checkpoint/window_00007.pkl``;
for chained boundary policies also ``checkpoint/state.pkl``, the members after the newest window,
which the next window starts from). Nothing else is written until the end, when the schedules are
logged as nested runs in one go.

Started again, the same backtest finds its earlier parent run:

- FINISHED: nothing to do (``harness run --rerun`` starts a new one);
- KILLED, FAILED, or RUNNING in a process that no longer exists: it is taken over; its saved
  windows are loaded, not retrained, nested runs left by a kill during the final logging are
  deleted, and the rest runs. Runs left RUNNING by dead processes are ended KILLED;
- RUNNING in a live process (or on another host, which cannot be checked): an error says so.

Checkpoints are pickles written by this code into your own tracking store; trust the store as
you trust the code. A checkpoint file that does not load (cut short by a kill, or written by
another version) is ignored and its windows train again, which gives the same numbers.
"""

from __future__ import annotations

import logging
import pickle
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness import provenance, tracking
from harness.backtest.boundary import Boundary
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
        with tempfile.TemporaryDirectory(prefix="harness-checkpoint-") as folder:
            for result in results:
                _write(Path(folder) / window_file(result.index), {"result": replace(result, fitted=None)})
            tracking.save_files(self.store, self.run_id, folder, CHECKPOINT)
        self.done.update({result.index: replace(result, fitted=None) for result in results})
        if not self.boundary.chained:
            return
        last = max(results, key=lambda result: result.index)
        with tempfile.TemporaryDirectory(prefix="harness-checkpoint-") as folder:
            _write(Path(folder) / STATE_FILE, {"index": last.index, "fitted": last.fitted})
            tracking.save_files(self.store, self.run_id, folder, CHECKPOINT)
        self.state = last.fitted

    @classmethod
    def load(cls, store: Any, run_id: str, config: Config, boundary: Boundary) -> "Checkpoint":
        """The saved windows of run ``run_id`` that load and fit ``config`` (others are dropped),
        as far as the boundary policy can continue from them."""
        n_windows = len(boundary.windows)
        members = len(config.schedules) * config.training.seeds
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
    resumable: str | None = None  # newest unfinished parent run whose process is gone
    closed: list[str] = field(default_factory=list)  # left RUNNING by dead processes, now KILLED


def find_earlier(store: Any, experiment: str, tags: Mapping[str, str], *, rerun: bool = False) -> Earlier:
    """Classify the earlier parent runs with the same :data:`IDENTITY` tags, newest first.

    The newest decides (FINISHED, or unfinished and resumable); with ``rerun`` none does. Runs
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
    tracking.reopen_run(store, earlier.resumable, owner)
    try:
        removed = tracking.delete_child_runs(store, earlier.resumable)  # left by a kill during final logging
        if removed:
            log.info("deleted %d partial schedule runs of %s", len(removed), earlier.resumable)
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
