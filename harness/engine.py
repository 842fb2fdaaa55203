"""The walk-forward loop: config → prices → table → windows → batched training → tidy results.

``harness.window_run`` does one window's work (fitted on its train rows only); this module plans
the windows, groups them into chunks, runs the chunks and assembles the tidy frames
(``docs/ARCHITECTURE.md``), then scores and logs them.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from harness.config import Config
from harness.errors import HarnessError
from harness.window_run import Chunk, Window, WindowResult, churn_frame, steps_per_window
from harness.windows import WalkForward

if TYPE_CHECKING:
    from harness.resume import Checkpoint

log = logging.getLogger("harness.engine")


@dataclass
class Plan:
    """What a backtest will do: the data, the table and the windows (no training)."""

    config: Config
    prices: pd.DataFrame
    table: Any
    windows: list[Window]
    data_hash: str

    def render(self) -> str:
        table_dates = pd.DatetimeIndex(self.table.dates)
        members = len(self.config.schedules) * self.config.training.seeds
        lines = [
            f"data      {self.config.data.source} {self._data_name()}: {len(self.prices)} rows "
            f"{self.prices.index[0]:%Y-%m-%d} .. {self.prices.index[-1]:%Y-%m-%d} (hash {self.data_hash})",
            f"strategy  {self.config.strategy.name}: {len(self.table.X)} rows x {self.table.X.shape[1]} features, "
            f"horizon {self.table.horizon}",
            f"windows   {len(self.windows)} {self.config.windows.mode} windows; members per window "
            f"{members} ({len(self.config.schedules)} schedules x {self.config.training.seeds} seeds)",
            "",
            f"{'k':>4}  {'train from':>10}  {'train to':>10}  {'test from':>10}  {'test to':>10}  {'n_train':>7}  {'n_test':>6}",
        ]
        for window in _ends_of(self.windows):
            if window is None:
                lines.append(f"{'...':>4}")
                continue
            tr, te = window.train_rows, window.test_rows
            lines.append(
                f"{window.index:>4}  {table_dates[tr[0]]:%Y-%m-%d}  {table_dates[tr[-1]]:%Y-%m-%d}  "
                f"{table_dates[te[0]]:%Y-%m-%d}  {table_dates[te[-1]]:%Y-%m-%d}  {len(tr):>7}  {len(te):>6}"
            )
        return "\n".join(lines)

    def _data_name(self) -> str:
        data = self.config.data
        if data.source in ("csv", "parquet"):
            return data.path
        if data.source == "yfinance":
            return ",".join(data.tickers)
        return str(data.synthetic.get("model", "gbm"))


def _ends_of(windows: list[Window], keep: int = 3) -> list[Window | None]:
    if len(windows) <= 2 * keep + 1:
        return list(windows)
    return [*windows[:keep], None, *windows[-keep:]]


def load_data(config: Config) -> pd.DataFrame:
    """Prices for the config's data section (the data module validates and repairs)."""
    from harness.data import load_prices

    data = config.data
    return load_prices(
        data.source,
        path=data.path,
        tickers=data.tickers,
        start=data.start,
        end=data.end,
        interval=data.interval,
        cache_dir=data.cache_dir,
        synthetic=data.synthetic,
        repair=data.repair,
    )


def plan(config: Config, prices: pd.DataFrame | None = None) -> Plan:
    """Load data, build the strategy table and cut the windows; raise on anything unusable."""
    from harness.data import fingerprint
    from strategies import get_strategy

    prices = load_data(config) if prices is None else prices
    strategy = get_strategy(config.strategy.name, config.strategy.params)
    table = strategy.build(prices)
    _check_purge(config, table.horizon)
    _check_sequences(config, pd.DatetimeIndex(table.dates))
    windows = cut_windows(config, pd.DatetimeIndex(table.dates))
    return Plan(config=config, prices=prices, table=table, windows=windows, data_hash=fingerprint(prices))


def _check_sequences(config: Config, dates: pd.DatetimeIndex) -> None:
    """A recurrent model reads each row's preceding rows as a time series: one row per date."""
    if config.model.recurrent and not dates.is_unique:
        raise HarnessError(
            f"model.type: {config.model.type} reads the preceding table rows as a time series, but strategy "
            f"'{config.strategy.name}' has several rows per date; use model.type: mlp for it"
        )


def _check_purge(config: Config, horizon: int) -> None:
    purge = config.windows.purge
    if purge >= horizon:
        return
    message = (
        f"windows.purge: {purge} is shorter than the label horizon {horizon} of strategy "
        f"'{config.strategy.name}', so train labels overlap the test slice; set windows.purge >= {horizon}"
    )
    if config.windows.short_purge == "error":
        raise HarnessError(message + " (or windows.short_purge: warn to accept it)")
    log.warning(message)


def cut_windows(config: Config, row_dates: pd.DatetimeIndex) -> list[Window]:
    """Windows over the table's unique dates, mapped back to row positions.

    Several rows may share a date (option chains): a date is never split between train and test.
    """
    dates = pd.DatetimeIndex(np.unique(row_dates.values))
    spec = config.windows
    splitter = WalkForward(
        train=spec.train, test=spec.test, step=spec.step, purge=spec.purge,
        embargo=spec.embargo, mode=spec.mode, dates=dates,
    )
    date_pos = np.searchsorted(dates.values, row_dates.values)
    return [
        Window(k, np.flatnonzero(np.isin(date_pos, train)), np.flatnonzero(np.isin(date_pos, test)))
        for k, (train, test) in enumerate(splitter.split(np.arange(len(dates))))
    ]


def chunk_windows(config: Config, windows: list[Window], *, n_features: int = 32,
                  memory_budget: int | None = None) -> list[Chunk]:
    """Jobs of windows, each a self-contained :class:`Chunk` for ``run_chunk``.

    ``fresh``: every window is independent, so consecutive windows share a chunk, trained in one
    stack, as many as fit ``memory_budget`` bytes (default
    :data:`harness.window_run.STACK_MEMORY_BUDGET`) by :func:`harness.trainer.training_bytes`
    (model, batch size, ``n_features`` and each window's rows); every window when they fit, and
    at least one window per chunk. Chained boundary policies need the previous window's weights,
    so they form one sequence.
    """
    from harness.trainer import training_bytes
    from harness.window_run import STACK_MEMORY_BUDGET

    following = {a.index: b.test_rows for a, b in zip(windows, windows[1:])}
    if config.training.boundary != "fresh":
        return [Chunk(list(windows), following)]
    budget = STACK_MEMORY_BUDGET if memory_budget is None else memory_budget
    members = len(config.schedules) * config.training.seeds
    model, batch_size = config.model.network(), config.training.batch_size
    row_shape = (config.model.sequence, n_features) if config.model.recurrent else (n_features,)
    needs: dict[int, int] = {}  # by train length: expanding windows differ, rolling ones share one
    groups: list[list[Window]] = []
    used = 0
    for window in windows:
        n_rows = len(window.train_rows)
        if n_rows not in needs:
            needs[n_rows] = training_bytes(model, row_shape, batch_size, n_rows, members)
        need = needs[n_rows]
        if not groups or used + need > budget:
            groups.append([])
            used = 0
        groups[-1].append(window)
        used += need
    return [Chunk(group, {w.index: following[w.index] for w in group if w.index in following}) for group in groups]


@dataclass
class BacktestResult:
    """A finished backtest as tidy frames (docs/ARCHITECTURE.md) plus what made them."""

    config: Config
    data_hash: str
    predictions: pd.DataFrame
    training: pd.DataFrame
    churn: pd.DataFrame
    lr_curves: dict[str, np.ndarray]
    n_windows: int
    seconds: float
    strategy: Any = field(repr=False, default=None)
    table: Any = field(repr=False, default=None)
    windows: list[WindowResult] = field(repr=False, default_factory=list)


def run_backtest(config: Config, *, prices: pd.DataFrame | None = None, progress: bool = True,
                 keep_fitted: bool = False) -> BacktestResult:
    """Retrain every member in every window, predict each test slice, and collect the frames."""
    return run_plan(plan(config, prices), progress=progress, keep_fitted=keep_fitted)


def run_plan(the_plan: Plan, *, progress: bool = True, keep_fitted: bool = False,
             checkpoint: Checkpoint | None = None) -> BacktestResult:
    """Train the plan's windows on ``execution.executor`` and collect the frames.

    Windows already in ``checkpoint`` are taken from it, not retrained; each newly finished chunk
    is saved to it before the next result is awaited (only this driver process writes).
    """
    from harness.executors import Work, open_executor
    from strategies import get_strategy

    started = time.perf_counter()
    config = the_plan.config
    strategy = get_strategy(config.strategy.name, config.strategy.params)
    done: dict[int, WindowResult] = dict(checkpoint.done) if checkpoint else {}
    work = Work(config, strategy, the_plan.table, steps_per_window(config, the_plan.windows), keep_fitted)
    chunks = _pending_chunks(config, chunk_windows(config, the_plan.windows, n_features=the_plan.table.X.shape[1]),
                             done)
    chained = config.training.boundary != "fresh"
    with _progress_bar(config, len(the_plan.windows), progress, initial=len(done)) as bar, \
            open_executor(config.execution, work, n_jobs=1 if chained else len(chunks)) as executor:
        for results in _chunk_results(config, chunks, executor, checkpoint):
            if checkpoint is not None:
                checkpoint.save(results)
            for result in results:
                if not keep_fitted:
                    result.fitted = None
                done[result.index] = result
            bar.update(len(results))
            bar.set_postfix(members=len(done) * _members(config))
    return assemble(config, the_plan, strategy, list(done.values()), time.perf_counter() - started)


JOB_WINDOWS = 8  # the most windows per job: what a kill can lose, and load balance across workers


def _pending_chunks(config: Config, chunks: list[Chunk], done: dict[int, WindowResult]) -> list[Chunk]:
    """The jobs still to run: the chunks' windows not in ``done``, cut into pieces.

    A member trains to the same bits whichever windows share its stack, so cutting changes no
    number. Independent (``fresh``) windows go at most :data:`JOB_WINDOWS` to a job and at least
    two jobs per worker when there are windows enough; chained windows go one per job, in order.
    """
    todo = [_restrict(chunk, [w for w in chunk.windows if w.index not in done]) for chunk in chunks]
    todo = [chunk for chunk in todo if chunk.windows]
    size = 1
    if config.training.boundary == "fresh":
        n_windows, workers = sum(len(chunk.windows) for chunk in todo), config.execution.workers
        size = max(1, min(JOB_WINDOWS, -(-n_windows // (2 * workers)) if workers > 1 else JOB_WINDOWS))
    return [_restrict(chunk, chunk.windows[i:i + size]) for chunk in todo for i in range(0, len(chunk.windows), size)]


def _restrict(chunk: Chunk, windows: list[Window]) -> Chunk:
    """``chunk`` narrowed to ``windows`` (a subset of its own)."""
    return Chunk(windows, {w.index: chunk.next_test_rows[w.index] for w in windows if w.index in chunk.next_test_rows})


def _chunk_results(config: Config, chunks: list[Chunk], executor: Any,
                   checkpoint: Checkpoint | None) -> Iterator[list[WindowResult]]:
    """Each job's results as it finishes. Independent chunks all go out at once; chained windows
    go one at a time, each starting from the previous window's members (the checkpoint's after a
    resume), so every window is saved, with its members, as soon as it is done."""
    from harness.executors import Job

    if config.training.boundary == "fresh":
        yield from executor.results([Job(chunk) for chunk in chunks])
        return
    previous = checkpoint.state if checkpoint is not None else None
    for alone in chunks:
        for results in executor.results([Job(alone, previous)]):
            previous = results[-1].fitted
            yield results


def assemble(config: Config, the_plan: Plan, strategy: Any, done: list[WindowResult], seconds: float) -> BacktestResult:
    """The tidy frames of a backtest from its windows' results (in any order)."""
    done = sorted(done, key=lambda w: w.index)
    churn = [churn_frame(b.index, b.labels, a.next_predictions, _member_predictions(b))
             for a, b in zip(done, done[1:]) if a.next_predictions is not None and b.index == a.index + 1]
    return BacktestResult(
        config=config,
        data_hash=the_plan.data_hash,
        predictions=pd.concat([w.predictions for w in done], ignore_index=True),
        training=pd.concat([w.training for w in done], ignore_index=True),
        churn=_concat_or_empty(churn),
        lr_curves=_lr_curves(config, done),
        n_windows=len(done),
        seconds=seconds,
        strategy=strategy,
        table=the_plan.table,
        windows=done,
    )


def _member_predictions(result: WindowResult) -> np.ndarray:
    """A window's predictions as ``[members, n_test]`` (members in label order)."""
    return result.predictions["prediction"].to_numpy().reshape(len(result.labels), -1)


def _lr_curves(config: Config, done: list[WindowResult]) -> dict[str, np.ndarray]:
    """Each schedule's LR per step for its first seed: window 0, or all windows when chained."""
    labels = config.schedule_labels()
    seeds = config.training.seeds
    windows = done if config.training.boundary == "warm_continue" else done[:1]
    return {label: np.concatenate([w.lr[i * seeds] for w in windows]) for i, label in enumerate(labels)}


def _concat_or_empty(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["window", "schedule", "seed", "prev_prediction", "prediction"])


def _members(config: Config) -> int:
    return len(config.schedules) * config.training.seeds


def _progress_bar(config: Config, n_windows: int, enabled: bool, initial: int = 0):
    from tqdm.auto import tqdm

    return tqdm(total=n_windows, initial=initial, unit="window", desc=f"{config.experiment}",
                disable=not enabled, dynamic_ncols=True, mininterval=0.5)


@dataclass
class Scores:
    """Metrics derived from a backtest's frames (harness.metrics defines every key)."""

    metrics: pd.DataFrame          # window, schedule, seed, metric, value
    seed_mean_metrics: pd.DataFrame  # window, schedule, metric, value (seed-mean predictions)
    aggregates: pd.DataFrame       # schedule, metric, value
    summary: pd.DataFrame          # ranking table, best first


def score(result: BacktestResult) -> Scores:
    """Per-window, seed-mean and aggregate metrics and the ranking table of a backtest."""
    from harness import metrics as M

    strategy, table, metric = result.strategy, result.table, result.config.selection.metric
    per_member = M.window_metrics(result.predictions, strategy, table=table, training=result.training)
    means = M.seed_mean(result.predictions, result.training).assign(seed=-1)
    per_window = M.window_metrics(means, strategy, table=table).drop(columns="seed")
    aggregates = M.aggregate_metrics(result.predictions, per_member, result.training, strategy, metric=metric,
                                     churn_preds=result.churn, table=table)
    return Scores(per_member, per_window, aggregates, M.ranking_table(aggregates, metric=metric, strategy=strategy))


@dataclass
class Outcome:
    """What ``harness run`` did: the backtest, its scores, and where MLflow has them.

    ``result`` and ``scores`` are None when the same backtest (config, data and code) had already
    finished in the store as ``parent_run_id``; ``resumed`` counts windows taken from an
    interrupted run instead of retrained.
    """

    result: BacktestResult | None
    scores: Scores | None
    store: Any
    log: Any
    config: Config | None = None
    parent_run_id: str = ""
    resumed: int = 0
    selection: str = ""

    def render(self) -> str:
        ui = f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --backend-store-uri {self.store.tracking_uri}"
        if self.result is None or self.scores is None:
            return "\n".join([
                f"{self.config.experiment}: this backtest (same config, data and code) already finished as run "
                f"{self.parent_run_id}; nothing to do (pass --rerun to run it again)",
                f"see its results: {ui}",
            ])
        config = self.result.config
        with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.5g}".format):
            table = self.scores.summary.to_string(index=False)
        resumed = (f"resumed run {self.parent_run_id}: {self.resumed} windows loaded from the interrupted run, "
                   f"{self.result.n_windows - self.resumed} trained now" if self.resumed else None)
        lines = [
            f"{config.experiment}: {self.result.n_windows} windows x {len(config.schedules)} schedules x "
            f"{config.training.seeds} seeds in {self.result.seconds:.1f} s (MLflow logging {self.log.seconds:.1f} s)",
            *([resumed] if resumed else []),
            "",
            f"ranking by pooled {config.selection.metric} (seed-mean predictions over all out-of-sample windows):",
            table,
            "",
            f"logged to experiment '{config.experiment}', parent run {self.log.parent_run_id}",
            f"compare schedules: {ui}",
            *(["", self.selection] if self.selection else []),
        ]
        return "\n".join(lines)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during ``harness run``: the parent run is ended KILLED; finished windows stay saved."""

    def __init__(self, saved: int, total: int, run_id: str) -> None:
        super().__init__(f"interrupted: {saved} of {total} windows are saved in run {run_id}; "
                         "run the same command again to resume")
        self.saved, self.total, self.run_id = saved, total, run_id


def batch_summary(outcomes: list[Outcome]) -> str:
    """One line per backtest of a batch: its best schedule by pooled metric and its parent run."""
    rows = []
    for outcome in outcomes:
        if outcome.result is None or outcome.scores is None:  # already finished earlier: nothing new to rank
            rows.append({"experiment": outcome.config.experiment, "best schedule": "(already finished)",
                         "parent run": outcome.parent_run_id})
            continue
        config, summary = outcome.result.config, outcome.scores.summary
        metric = f"pooled_{config.selection.metric}"
        best = summary.iloc[0]
        rows.append({"experiment": config.experiment, "windows": outcome.result.n_windows,
                     "best schedule": best["schedule"], metric: best.get(metric, np.nan),
                     "parent run": outcome.log.parent_run_id})
    with pd.option_context("display.width", 200, "display.float_format", "{:.5g}".format):
        return f"batch of {len(outcomes)} backtests:\n" + pd.DataFrame(rows).to_string(index=False)


def tracking_uri(config: Config) -> str | None:
    """The config's tracking.uri when the user set it, else None (then $MLFLOW_TRACKING_URI, else ./mlruns)."""
    return config.tracking.uri if "uri" in config.tracking.model_fields_set else None


def run_and_log(config: Config, *, progress: bool = True, prices: pd.DataFrame | None = None,
                rerun: bool = False) -> Outcome:
    """``harness run``: the backtest, its scores, and one MLflow parent run with a child per schedule.

    Resumable (``harness.resume``): the parent run opens before training, finished windows are
    saved into it as they come, and an interrupted run of the same backtest is taken over. If the
    same backtest already finished, nothing runs (``rerun=True`` starts a new one). The parent
    ends FINISHED, FAILED on an error, or KILLED on Ctrl-C (raised as :class:`Interrupted`).
    """
    from harness import resume, tracking
    from harness.executors import check_execution

    store = tracking.resolve_store(tracking_uri(config))
    tracking.check_server(store)
    tracking.ensure_experiment(store, config.experiment)  # before any work: a bad store fails fast
    the_plan = plan(config, prices)
    steps_per_window(config, the_plan.windows)  # refused before any run exists: a window too small to fit,
    check_execution(config.execution)           # an executor that cannot start
    tags = run_tags(config, the_plan.data_hash)
    earlier = resume.find_earlier(store, config.experiment, tags, rerun=rerun)
    if earlier.finished:
        return Outcome(None, None, store, None, config=config, parent_run_id=earlier.finished)
    checkpoint = resume.begin(store, config, tags, earlier, n_windows=len(the_plan.windows),
                              run_name=f"{config.strategy.name}-{config.fingerprint()[:8]}")
    resumed = len(checkpoint.done)
    try:
        result = run_plan(the_plan, progress=progress, checkpoint=checkpoint)
        scores = score(result)
        with tempfile.TemporaryDirectory(prefix="harness-figures-") as folder:
            log_result = tracking.finish_backtest(store, checkpoint.run_id, tags=tags,
                                                  extra_artifacts=_strategy_figures(result, folder),
                                                  **_log_payload(config, result, scores))
    except KeyboardInterrupt:
        tracking.end_run(store, checkpoint.run_id, "KILLED")
        raise Interrupted(len(checkpoint.done), len(the_plan.windows), checkpoint.run_id) from None
    except BaseException:
        tracking.end_run(store, checkpoint.run_id, "FAILED")
        raise
    return Outcome(result, scores, store, log_result, config=config, parent_run_id=checkpoint.run_id,
                   resumed=resumed, selection=select_and_log(store, result, scores, checkpoint.run_id))


def select_and_log(store: Any, result: BacktestResult, scores: Scores, run_id: str) -> str:
    """The selection of ``harness select`` on a finished backtest: its report and figures logged to
    the parent run (tag ``selected_schedule``), its summary returned for the end of ``harness run``.

    The backtest is already FINISHED and saved; a selection that cannot be made (say, too few
    out-of-sample rows for the tests) is reported as a line, not raised.
    """
    from harness.selection import select_from_result, selection_summary
    from harness.selection_plots import log_report

    try:
        report = select_from_result(result, scores, run_id=run_id)
        log_report(store, report)
    except HarnessError as error:
        return f"selection: not made ({error}); the backtest itself is complete"
    return (f"{selection_summary(report)}\n"
            f"full report (DM tests, confidence set, intervals, PBO): harness select {result.config.experiment}")


def _strategy_figures(result: BacktestResult, folder: str) -> dict[str, str]:
    """The strategy's own figures for the parent run: ``equity.png`` when it has a trading view."""
    from harness.figures import plot_equity

    curves = equity_curves(result)
    return {"equity.png": str(plot_equity(curves, Path(folder) / "equity.png"))} if curves else {}


def equity_curves(result: BacktestResult) -> dict[str, pd.Series]:
    """Each schedule's equity curve over all out-of-sample windows, from its seed-mean predictions,
    for strategies with a trading view (an ``equity(pred, test)`` method); else empty."""
    from harness import metrics as M

    if not callable(getattr(result.strategy, "equity", None)):
        return {}
    mean = M.seed_mean(result.predictions, result.training)
    return {label: result.strategy.equity(rows["prediction"].to_numpy(), M.test_table(result.table, rows))
            for label, rows in mean.groupby("schedule", sort=False)}


def _log_payload(config: Config, result: BacktestResult, scores: Scores) -> dict[str, Any]:
    """The keyword arguments of ``tracking.finish_backtest`` / ``log_backtest`` for a backtest."""
    from harness.schedules import get_schedule

    specs = {get_schedule(spec).label: {"name": get_schedule(spec).name, **get_schedule(spec).params}
             for spec in config.schedules}
    return dict(
        config=config.model_dump(mode="json"), schedule_params=specs, metrics=scores.metrics,
        seed_mean_metrics=scores.seed_mean_metrics, aggregates=scores.aggregates, predictions=result.predictions,
        training=result.training, lr_curves=result.lr_curves, summary=scores.summary,
    )


def run_tags(config: Config, data_hash: str) -> dict[str, str]:
    """Tags that name what a run is (resume matches on config_hash)."""
    from harness import __version__

    return {
        "strategy": config.strategy.name, "data_hash": data_hash, "config_hash": config.fingerprint(),
        "harness_version": __version__, "git_commit": _git_commit(), "boundary": config.training.boundary,
    }


def _git_commit() -> str:
    import subprocess
    from pathlib import Path

    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                              capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 else "unknown"
