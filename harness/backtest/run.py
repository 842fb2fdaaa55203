"""``harness run``: the walk-forward loop, top to bottom, and the backtest logged to MLflow.

config → :func:`~harness.backtest.planning.plan` (data, strategy table, windows) → the boundary
policy's jobs → an executor trains them → :func:`~harness.backtest.result.assemble` (tidy frames
and scores) → figures → :mod:`harness.tracking` → the selection.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd

import harness.training.loop  # noqa: F401 - torch, which the run needs: imported with it, not inside its timing
from harness import __version__, provenance
from harness.backtest import resume, sidecar
from harness.backtest.boundary import policy
from harness.backtest.executors import Work, check_execution, open_executor
from harness.backtest.planning import Plan, plan
from harness.backtest.result import Backtest, assemble
from harness.backtest.sidecar import tracking, tracking_uri
from harness.backtest.window import WindowResult, steps_per_window
from harness.config import Config
from harness.errors import HarnessError
from harness.evaluation.selection import SelectionReport


def run_backtest(config: Config, *, prices: pd.DataFrame | None = None, progress: bool = True) -> Backtest:
    """Retrain every member in every window, predict each test slice, and score them (no MLflow)."""
    the_plan = plan(config, prices)
    return assemble(the_plan, policy(config, the_plan.windows), run_windows(the_plan, progress=progress))


def run_windows(the_plan: Plan, *, progress: bool = True, keep_fitted: bool = False,
                checkpoint: resume.Checkpoint | None = None) -> list[WindowResult]:
    """Train the plan's windows on ``execution.executor``, as the boundary policy groups and chains them.

    Windows already in ``checkpoint`` are taken from it, not retrained; each newly finished job
    is saved to it before the next result is awaited (only this driver process writes).
    ``keep_fitted`` keeps each window's trained members on its result.
    """
    config = the_plan.config
    boundary = checkpoint.boundary if checkpoint else policy(config, the_plan.windows)
    done = dict(checkpoint.done) if checkpoint else {}
    todo = [w for w in the_plan.windows if w.index not in done]
    jobs = boundary.jobs(todo, n_features=the_plan.table.X.shape[1])
    work = Work(config, the_plan.strategy, the_plan.table, boundary, keep_fitted)
    members = len(config.schedule_labels()) * config.training.seeds  # candidates x seeds
    with _progress_bar(config, len(the_plan.windows), progress, initial=len(done)) as bar, \
            open_executor(config.execution, work, n_jobs=boundary.workers(len(jobs))) as executor:
        for results in boundary.run(executor, jobs, checkpoint.state if checkpoint else None):
            if checkpoint is not None:
                checkpoint.save(results)
            for result in results:
                result.fitted = result.fitted if keep_fitted else None
                done[result.index] = result
            bar.update(len(results))
            bar.set_postfix(members=len(done) * members)
    return [done[k] for k in sorted(done)]


@dataclass
class Outcome:
    """What ``harness run`` did: the backtest (trained now, or read back when the same backtest had
    already finished), where MLflow has it, and its selection."""

    backtest: Backtest
    store: Any
    run_id: str
    trained: bool = True
    resumed: int = 0
    seconds: float = 0.0
    log_seconds: float = 0.0
    train_seconds: float = 0.0  # of ``seconds``: the trainer's (summed over workers); the rest is the windows' other work
    store_seconds: float = 0.0  # not in ``seconds``: waiting for a new store the side process creates (_Opening)
    selection: SelectionReport | None = None
    selection_error: str = ""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during ``harness run``: the parent run is ended KILLED; finished windows stay saved."""

    def __init__(self, saved: int, total: int, run_id: str | None) -> None:
        if run_id is None:  # before the first window's save into a new store (run_and_log)
            super().__init__(f"interrupted before any of {total} windows was saved (no run was opened); "
                             "run the same command again to start")
        else:
            super().__init__(f"interrupted: {saved} of {total} windows are saved in run {run_id}; "
                             "run the same command again to resume")
        self.saved, self.total, self.run_id = saved, total, run_id


def run_and_log(config: Config, *, progress: bool = True, prices: pd.DataFrame | None = None,
                rerun: bool = False) -> Outcome:
    """``harness run``: the backtest, one MLflow parent run with a child per schedule, the selection.

    Resumable at every step (:mod:`harness.backtest.resume`): the parent run opens before the
    first window is saved, finished windows are saved into it as they come, then the schedule runs
    are logged (a schedule logged by an interrupted session is kept, not logged twice), then the
    selection; the parent ends FINISHED only after all of it. An interrupted run of the same
    backtest is taken over and its missing steps done. If the same backtest already finished, it
    is read back, not run (``rerun=True`` starts a new one). The parent ends FINISHED, FAILED on an
    error, or KILLED on Ctrl-C (:class:`Interrupted`), also when the Ctrl-C was lost on the way
    (:func:`resume.interrupts`).

    Into a new local store, which the side process creates meanwhile (:func:`sidecar.new_store`),
    the first windows train before the store's first call: nothing there can be resumed, and the
    calls are the same, in the same order, only made later (:class:`_Opening`). Stopped or failed
    before then, it leaves no run (nothing was saved).
    """
    sidecar.start(config)  # the store, figures and selection off the critical path, beside the training
    if sidecar.new_store(config):
        try:
            return _run_and_log(config, progress, prices, rerun, opening=True)
        except _NotNew:  # the store holds this backtest after all (made meanwhile): the usual way
            pass
    return _run_and_log(config, progress, prices, rerun, opening=False)


def _run_and_log(config: Config, progress: bool, prices: pd.DataFrame | None, rerun: bool, *,
                 opening: bool) -> Outcome:
    store = None if opening else _open_store(config)  # before any work: a bad store fails fast
    the_plan = plan(config, prices)
    steps_per_window(config, the_plan.windows)  # refused before any run exists: a window too small to fit,
    check_execution(config.execution)           # an executor that cannot start
    tags = run_tags(config, the_plan.data_hash)
    boundary = policy(config, the_plan.windows)
    if store is None:
        checkpoint: Any = _Opening(lambda: _begin(config, tags, boundary, rerun, None), boundary)
    else:
        checkpoint = _begin(config, tags, boundary, rerun, store)
        if isinstance(checkpoint, Outcome):  # the same backtest had finished: read back
            return checkpoint
    resumed = len(checkpoint.done)
    sidecar.warm_up()  # the side process imports the drawing while this trains
    started = time.perf_counter()
    try:
        loaded = set(checkpoint.done)
        results = run_windows(the_plan, progress=progress, checkpoint=checkpoint)
        early = checkpoint if isinstance(checkpoint, _Opening) else None  # trained before the store's calls
        checkpoint = early.opened() if early is not None else checkpoint
        backtest = assemble(the_plan, checkpoint.boundary, results)
        trained = time.perf_counter() - started
        waited = early.seconds if early is not None else 0.0
        resume.check_interrupted()
        log_backtest(checkpoint.store, checkpoint.run_id, backtest, tags)  # the schedule runs; the parent stays RUNNING
        outcome = Outcome(backtest, checkpoint.store, checkpoint.run_id, resumed=resumed, seconds=trained - waited,
                          log_seconds=time.perf_counter() - started - trained, store_seconds=waited,
                          train_seconds=sum(r.train_seconds for r in results if r.index not in loaded))
        resume.check_interrupted()
        select_and_log(outcome)  # its tags are the last thing logged
        resume.check_interrupted()
        tracking.end_run(checkpoint.store, checkpoint.run_id, "FINISHED")  # complete: a rerun has nothing to do
    except BaseException as exc:
        # a Ctrl-C also when C code turned its KeyboardInterrupt into another error (resume.interrupts)
        stopped = isinstance(exc, KeyboardInterrupt) or resume.interrupted()
        opened = checkpoint.checkpoint if isinstance(checkpoint, _Opening) else checkpoint
        if opened is None:  # before the store's first call (or _NotNew from it, re-raised): no run to end
            if stopped:
                raise Interrupted(0, len(the_plan.windows), None) from None
            raise
        tracking.end_run(opened.store, opened.run_id, "KILLED" if stopped else "FAILED")
        if stopped:
            raise Interrupted(len(opened.done), len(the_plan.windows), opened.run_id) from None
        raise
    return outcome


def _open_store(config: Config) -> Any:
    """The config's store, checked: a server that answers, the experiment there and not deleted."""
    store = tracking.resolve_store(tracking_uri(config))
    tracking.check_server(store)
    tracking.ensure_experiment(store, config.experiment)
    return store


def _begin(config: Config, tags: dict[str, str], boundary: Any, rerun: bool,
           store: Any) -> resume.Checkpoint | Outcome:
    """This session's parent run and its saved windows (:func:`resume.begin`), or the outcome of the
    same backtest finished earlier. ``store`` None: a new store (:class:`_Opening`), opened here;
    one that holds this backtest already raises :class:`_NotNew`."""
    new = store is None
    store = _open_store(config) if store is None else store
    earlier = resume.find_earlier(store, config.experiment, tags, rerun=rerun)
    if new and (earlier.finished or earlier.resumable):
        raise _NotNew
    if earlier.finished:
        outcome = Outcome(tracking.load_backtest(store, earlier.finished), store, earlier.finished, trained=False)
        if earlier.unselected:
            select_and_log(outcome)  # an older version's kill during the selection: log it now
        else:
            _select(outcome)
        return outcome
    return resume.begin(store, config, tags, earlier, boundary,
                        run_name=f"{config.strategy.name}-{config.fingerprint()[:8]}")


class _NotNew(Exception):
    """A store taken for new held this backtest when its first call was made."""


class _Opening:
    """The checkpoint of a backtest into a new store the side process is still opening: nothing to
    resume (no windows done, no state), so :func:`run_windows` trains the first windows at once; the
    store's calls (:func:`_begin`: the store checked, the experiment made, the earlier runs looked up,
    the parent run opened) are made before the first save, as the run makes them otherwise first."""

    def __init__(self, begin: Any, boundary: Any) -> None:
        self.begin, self.boundary, self.checkpoint = begin, boundary, None
        self.state = None
        self.seconds = 0.0  # in the store's calls: waiting for the side process to have the store open

    @property
    def done(self) -> dict[int, WindowResult]:
        return self.checkpoint.done if self.checkpoint is not None else {}

    def opened(self) -> resume.Checkpoint:
        if self.checkpoint is None:
            started = time.perf_counter()
            self.checkpoint = self.begin()
            self.seconds = time.perf_counter() - started
        return self.checkpoint

    def save(self, results: list[WindowResult]) -> None:
        self.opened().save(results)


def log_backtest(store: Any, run_id: str, backtest: Backtest, tags: dict[str, str]) -> None:
    """Draw the backtest's figures and log it into its open parent run ``run_id``, which stays RUNNING
    (:func:`run_and_log` ends it after the selection); schedules an interrupted session logged are kept.

    The figures (:func:`sidecar.draw_backtest`) are drawn by the side process when one runs, which
    then starts the selection too (:func:`select_and_log` collects it), else here."""
    backtest.run_id = run_id
    with tempfile.TemporaryDirectory(prefix="harness-figures-") as folder:
        parent_files, schedule_files = sidecar.figures(backtest, folder)  # equity.png, training_curve(s).png too
        tracking.finish_backtest(store, run_id, backtest, tags=tags, parent_files=parent_files,
                                 schedule_files=schedule_files, finish=False)


def select_and_log(outcome: Outcome) -> None:
    """The selection of ``harness select`` on a just-finished backtest, its report and figures logged
    to the parent run (tag ``selected_schedule``). The backtest is already saved: a
    selection that cannot be made (say, too few out-of-sample rows for the tests) is kept as a
    line on the outcome, not raised. Made, and its figures drawn, by the side process when
    :func:`log_backtest` handed it the backtest, else here."""
    report = _select(outcome)
    if report is None:
        return
    with tempfile.TemporaryDirectory(prefix="harness-selection-") as folder:
        tracking.log_selection(outcome.store, outcome.run_id, sidecar.selection_files(report, folder), report.tags())


def _select(outcome: Outcome) -> SelectionReport | None:
    """The selection of the outcome's backtest, kept on the outcome (or why it could not be made)."""
    try:
        outcome.selection = sidecar.select(outcome.backtest)
    except HarnessError as error:
        outcome.selection_error = str(error)
    return outcome.selection


def run_tags(config: Config, data_hash: str) -> dict[str, str]:
    """Tags that name what a run is (resume matches on config_hash)."""
    return {
        "strategy": config.strategy.name, "data_hash": data_hash, "config_hash": config.fingerprint(),
        "harness_version": __version__, "git_commit": provenance.git_commit(), "boundary": config.training.boundary,
    }


def _progress_bar(config: Config, n_windows: int, enabled: bool, initial: int = 0):
    from tqdm.auto import tqdm

    return tqdm(total=n_windows, initial=initial, unit="window", desc=f"{config.experiment}",
                disable=not enabled, dynamic_ncols=True, mininterval=0.5)
