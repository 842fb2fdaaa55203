"""MLflow tracking: the store, the experiment, and a backtest logged as runs (design section 9).

The only package that imports mlflow at module level. It only moves bytes to and from MLflow:
callers hand it tables and figures already drawn (:mod:`harness.figures` draws; tracking never
imports it, nor matplotlib). MLflow is reached through an explicit :class:`mlflow.MlflowClient`
per store, never through the global tracking URI, so two stores in one process do not interfere.

- :mod:`~harness.tracking.store`: :class:`Store`, :func:`resolve_store`, :func:`ensure_experiment`,
  :func:`check_server`; one client per store, the file lock, writability checks;
- :mod:`~harness.tracking.runs`: a backtest's runs (:func:`start_backtest`,
  :func:`finish_backtest`, :func:`load_backtest`, :func:`find_runs`, ...);
- :mod:`~harness.tracking.batch` (runs that always end, ``log_batch``, params and tags, searches)
  and :mod:`~harness.tracking.artifacts` (the payload checked, tables written and read back);
- :mod:`~harness.tracking.registry`: the selection report and the model registry;
- :mod:`~harness.tracking.links`: deep links into the MLflow UI (:func:`compare_link`: the
  comparison of a backtest's schedule runs, model-training view).

Layout of one backtest in its experiment:

- a **parent run** (tag ``kind=backtest``): the config flattened to dotted params and as
  ``config.yaml``; the caller's tags (strategy, data_hash, config_hash, ...); ``summary.csv``;
  the caller's parent files (``comparison.png``: the headline metric per window for every
  schedule, and every LR curve; ``errors.png``: cumulative squared error vs the baseline; ...).
- a **nested run per schedule** (tags ``kind=schedule``, ``schedule=<label>``,
  ``mlflow.parentRunId``): the config params plus ``schedule.*`` params; the per-window metrics of
  the seed-mean predictions under their plain names (``rmse``, ``mae``, ...) with
  ``step = window index``, so selecting the schedule runs and pressing *Compare* overlays them;
  the aggregate metrics (``pooled_rmse``, ``window_std_rmse``, ...) as single values; artifacts
  ``lr_curve.npy``, ``window_metrics.parquet`` (per-seed rows, and seed-mean rows with seed =
  <NA>), ``predictions.parquet`` and ``training.parquet``, plus the caller's schedule files
  (``lr_curve.png``, ``window_metrics.png`` with the seed band).

Per-seed metrics are not MLflow metrics (they would triple the charts in the UI); they live in
``window_metrics.parquet``. Metrics and params go in one ``log_batch`` per run (the client splits
it within MLflow's limits); a run that fails is ended FAILED (KILLED on Ctrl-C), never RUNNING.
"""

from typing import TYPE_CHECKING

from harness.lazy import lazy_exports

# Imported on first use: the values (Store, Comparison, BacktestLog) without MLflow, so that a process whose MLflow work
# is done by another (the run's side process, harness.backtest.sidecar) can read them without importing it.
_LAZY = {
    **dict.fromkeys(("DEFAULT_HOST", "DEFAULT_PORT", "compare_link", "find_comparison", "ui_base"), "links"),
    **dict.fromkeys(("BacktestLog", "Comparison", "DEFAULT_FOLDER", "Store", "compare_url"), "values"),
    **dict.fromkeys(("CHAMPION", "RegisteredModel", "check_model_name", "load_registered_model", "log_selection",
                     "register_model"), "registry"),
    **dict.fromkeys(("delete_child_runs", "end_run", "fetch_files", "find_runs", "finish_backtest",
                     "load_backtest", "logged_schedules", "prune_child_runs", "reopen_run", "save_files",
                     "start_backtest"), "runs"),
    **dict.fromkeys(("check_server", "ensure_experiment", "resolve_store"), "store"),
}

if TYPE_CHECKING:
    from harness.tracking.links import (
        DEFAULT_HOST,
        DEFAULT_PORT,
        compare_link,
        find_comparison,
        ui_base,
    )
    from harness.tracking.registry import (
        CHAMPION,
        RegisteredModel,
        check_model_name,
        load_registered_model,
        log_selection,
        register_model,
    )
    from harness.tracking.runs import (
        delete_child_runs,
        end_run,
        fetch_files,
        find_runs,
        finish_backtest,
        load_backtest,
        logged_schedules,
        prune_child_runs,
        reopen_run,
        save_files,
        start_backtest,
    )
    from harness.tracking.store import (
        check_server,
        ensure_experiment,
        resolve_store,
    )
    from harness.tracking.values import (
        DEFAULT_FOLDER,
        BacktestLog,
        Comparison,
        Store,
        compare_url,
    )

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "CHAMPION", "DEFAULT_FOLDER", "DEFAULT_HOST", "DEFAULT_PORT", "BacktestLog", "Comparison", "RegisteredModel",
    "Store", "check_model_name", "check_server", "compare_link", "compare_url", "delete_child_runs", "end_run",
    "ensure_experiment", "fetch_files", "find_comparison", "find_runs", "finish_backtest", "load_backtest",
    "load_registered_model", "log_selection", "logged_schedules", "prune_child_runs", "register_model",
    "reopen_run", "resolve_store", "save_files", "start_backtest", "ui_base",
]
