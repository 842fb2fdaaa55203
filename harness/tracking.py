"""MLflow tracking: the store, the experiment, and a backtest logged as runs (design section 9).

The only module that imports mlflow. It talks to MLflow through an explicit
:class:`mlflow.MlflowClient` per store, never through the global tracking URI, so two stores in
one process do not interfere.

Layout of one backtest in its experiment:

- a **parent run** (tag ``kind=backtest``): the config flattened to dotted params and as
  ``config.yaml``; the caller's tags (strategy, data_hash, config_hash, ...); ``summary.csv``;
  ``comparison.png`` (the headline metric per window for every schedule, and every LR curve);
  ``errors.png`` (cumulative squared error vs the baseline); any extra artifacts.
- a **nested run per schedule** (tags ``kind=schedule``, ``schedule=<label>``,
  ``mlflow.parentRunId``): the config params plus ``schedule.*`` params; the per-window metrics of
  the seed-mean predictions under their plain names (``rmse``, ``mae``, ...) with
  ``step = window index``, so selecting the schedule runs and pressing *Compare* overlays them;
  the aggregate metrics (``pooled_rmse``, ``window_std_rmse``, ...) as single values; artifacts
  ``lr_curve.png``, ``lr_curve.npy``, ``window_metrics.png`` (with the seed band),
  ``window_metrics.parquet`` (per-seed rows, and seed-mean rows with seed = <NA>),
  ``predictions.parquet`` and ``training.parquet``.

Per-seed metrics are not MLflow metrics (they would triple the charts in the UI); they live in
``window_metrics.parquet``. Metrics and params go in one ``log_batch`` per run (the client splits
it within MLflow's limits); a run that fails is ended FAILED (KILLED on Ctrl-C), never RUNNING.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import socket
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from filelock import FileLock
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run, RunStatus, ViewType
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import (
    MLFLOW_GIT_COMMIT,
    MLFLOW_PARENT_RUN_ID,
    MLFLOW_SOURCE_NAME,
    MLFLOW_SOURCE_TYPE,
    MLFLOW_USER,
)

from harness import figures
from harness.errors import HarnessError

DEFAULT_FOLDER = "./mlruns"
DB_NAME = "mlflow.db"

# Param values: MLflow >= 2 takes 6000 chars, older servers 500; the full config is an artifact,
# so params keep the portable 500.
MAX_PARAM_VALUE = 500
MAX_TAG_VALUE = 8000
MAX_KEY = 250

METRIC_COLUMNS = ("window", "schedule", "seed", "metric", "value")
SEED_MEAN_COLUMNS = ("window", "schedule", "metric", "value")
AGGREGATE_COLUMNS = ("schedule", "metric", "value")
PREDICTION_COLUMNS = ("date", "window", "schedule", "seed", "prediction", "target", "baseline")
TRAINING_COLUMNS = (
    "window", "schedule", "seed", "diverged", "end_oscillation", "train_loss", "val_loss", "best_epoch",
)

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+:")  # a scheme of >= 2 letters: not "C:\..."
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
_PARENT_FILES = ("config.yaml", "summary.csv", "comparison.png", "errors.png")


@dataclass(frozen=True)
class Store:
    """Where runs go: an MLflow tracking URI and, for local stores, the artifact root.

    ``folder`` is set when the user named a folder (SQLite ``<folder>/mlflow.db`` and artifacts
    under ``<folder>/artifacts``); ``artifact_root`` and ``database`` (the SQLite file, locked
    while a schema is created) are set for every local SQLite store.
    """

    tracking_uri: str
    artifact_root: Path | None = None
    folder: Path | None = None
    database: Path | None = None


@dataclass
class BacktestLog:
    """What :func:`log_backtest` created, and the seconds it took (figures included)."""

    experiment_id: str
    parent_run_id: str
    child_run_ids: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def resolve_store(uri: str | Path | None = None) -> Store:
    """The store for ``uri``: explicit argument, else ``$MLFLOW_TRACKING_URI``, else ``./mlruns``.

    A folder becomes ``sqlite:///<abs folder>/mlflow.db`` with artifacts in ``<folder>/artifacts``;
    the folder is created and must be writable. Any MLflow URI is used as is; a ``sqlite:///`` one
    keeps its artifacts in an ``artifacts`` folder beside the database file.
    """
    text = str(uri) if uri not in (None, "") else os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_FOLDER
    if not _URI.match(text):
        folder = Path(text).expanduser().resolve()
        database = folder / DB_NAME
        _check_writable(folder, database)
        return Store(f"sqlite:///{database.as_posix()}", folder / "artifacts", folder, database)
    database = _sqlite_file(text)
    if database is None:
        return Store(text)
    _check_writable(database.parent, database)
    return Store(text, database.parent / "artifacts", None, database)


def ensure_experiment(store: Store, name: str) -> str:
    """Create (once) the store's schema and the experiment ``name``; return its id.

    Call it before fanning out to workers: several processes creating a new SQLite schema at once
    corrupt it, so local stores are opened under a file lock beside the database.
    """
    with _lock(store):
        client = _client(store)
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return client.create_experiment(name, artifact_location=_artifact_location(store, name))
            except MlflowException as exc:  # created meanwhile by another client of a remote store
                if "already exists" not in str(exc):
                    raise
                experiment = client.get_experiment_by_name(name)
    if experiment.lifecycle_stage == "deleted":
        raise HarnessError(
            f"experiment '{name}' is deleted in {store.tracking_uri}; restore it with `mlflow experiments "
            f"restore --experiment-id {experiment.experiment_id}` or choose another experiment name"
        )
    return experiment.experiment_id


def log_backtest(
    store: Store,
    experiment: str,
    *,
    run_name: str,
    config: Mapping[str, Any],
    tags: Mapping[str, Any],
    schedule_params: Mapping[str, Mapping[str, Any]],
    metrics: pd.DataFrame,
    seed_mean_metrics: pd.DataFrame,
    aggregates: pd.DataFrame,
    predictions: pd.DataFrame,
    training: pd.DataFrame,
    lr_curves: Mapping[str, np.ndarray],
    summary: pd.DataFrame,
    extra_artifacts: Mapping[str, str | Path] | None = None,
) -> BacktestLog:
    """Log one backtest as a parent run with one nested run per schedule (module docstring).

    Frames are the engine's tidy results (``docs/ARCHITECTURE.md``); ``schedule_params`` maps each
    schedule label to its spec (name and params) and fixes the schedule order. ``extra_artifacts``
    maps an artifact name (may contain ``/``) to a local file or folder for the parent run.
    """
    started = time.perf_counter()
    _check_payload(list(schedule_params), metrics, seed_mean_metrics, aggregates, predictions, training, lr_curves,
                   dict(extra_artifacts or {}))  # before any run exists
    parent_id = start_backtest(store, experiment, run_name=run_name, config=config, tags=tags)
    try:
        result = finish_backtest(
            store, parent_id, config=config, tags=tags, schedule_params=schedule_params, metrics=metrics,
            seed_mean_metrics=seed_mean_metrics, aggregates=aggregates, predictions=predictions, training=training,
            lr_curves=lr_curves, summary=summary, extra_artifacts=extra_artifacts,
        )
    except KeyboardInterrupt:  # as a run opened by _run ends: KILLED on Ctrl-C, FAILED on an error
        end_run(store, parent_id, RunStatus.to_string(RunStatus.KILLED))
        raise
    except BaseException:
        end_run(store, parent_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    result.seconds = time.perf_counter() - started
    return result


def find_runs(store: Store, experiment: str, tags: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Runs of ``experiment`` whose tags equal ``tags`` (e.g. ``{"config_hash": h}``), newest first.

    Same columns as ``mlflow.search_runs``: ``run_id, experiment_id, status, artifact_uri,
    start_time, end_time`` then ``metrics.*``, ``params.*``, ``tags.*``. An experiment that does
    not exist yet gives an empty frame.
    """
    client = _client(store)
    found = client.get_experiment_by_name(experiment)
    runs = [] if found is None else _search(client, found.experiment_id, _tag_filter(tags or {}))
    return _runs_frame(runs)


def mark_stale_runs(
    store: Store, experiment: str, tags: Mapping[str, Any] | None = None, *, delete: bool = False
) -> list[str]:
    """End the RUNNING runs of ``experiment`` matching ``tags`` as KILLED; return their ids.

    Runs are left RUNNING only by a process killed mid-logging. Pass the backtest's
    ``config_hash`` in ``tags`` so another backtest logging into the same store is left alone.
    ``delete=True`` also moves them to the trash (they stay restorable in the UI).
    """
    client = _client(store)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    query = " and ".join(filter(None, [_tag_filter(tags or {}), "attributes.status = 'RUNNING'"]))
    stale = [run.info.run_id for run in _search(client, found.experiment_id, query)]
    for run_id in stale:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))
        if delete:
            client.delete_run(run_id)
    return stale


def load_backtest(store: Store, experiment_or_parent_run_id: str) -> dict[str, Any]:
    """Read a logged backtest back: the latest finished one of an experiment, or a parent run id.

    Returns a dict with the keyword names of :func:`log_backtest` (``config, tags,
    schedule_params, metrics, seed_mean_metrics, aggregates, predictions, training, lr_curves,
    summary``; frames in schedule order, ``summary`` with a plain index) plus
    ``parent_run_id`` and ``child_run_ids`` (label -> run id). ``tags`` omits MLflow's own.
    """
    client = _client(store)
    parent = _parent_run(client, store, experiment_or_parent_run_id)
    parent_id = parent.info.run_id
    children = _search(client, parent.info.experiment_id, f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_id}'")
    children.sort(key=lambda run: int(run.data.tags.get("schedule_index", 0)))
    with _staging() as folder:
        parts = [_read_schedule(client, run, folder / run.info.run_id) for run in children]
        config = yaml.safe_load(_download(client, parent_id, "config.yaml", folder).read_text())
        summary = pd.read_csv(_download(client, parent_id, "summary.csv", folder))
    frames = {
        name: pd.concat([part[name] for part in parts], ignore_index=True)
        for name in ("metrics", "seed_mean_metrics", "aggregates", "predictions", "training")
    }
    return {
        "parent_run_id": parent_id,
        "child_run_ids": {part["label"]: part["run_id"] for part in parts},
        "config": config,
        "tags": {k: v for k, v in parent.data.tags.items() if not k.startswith("mlflow.") and k != "kind"},
        "schedule_params": {part["label"]: part["schedule_params"] for part in parts},
        **frames,
        "lr_curves": {part["label"]: part["lr_curve"] for part in parts},
        "summary": summary,
    }


# --- store -------------------------------------------------------------------------------------

_CLIENTS: dict[str, MlflowClient] = {}
_LOCKS: dict[Path, FileLock] = {}


def _client(store: Store) -> MlflowClient:
    """One client per tracking URI; the first opens the store (creating a new schema) under lock."""
    client = _CLIENTS.get(store.tracking_uri)
    if client is None:
        with _lock(store):
            try:
                client = MlflowClient(tracking_uri=store.tracking_uri, registry_uri=store.tracking_uri)
                client.search_experiments(max_results=1)
            except MlflowException as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise HarnessError(
                    f"cannot open tracking store {store.tracking_uri}: {reason}; "
                    "fix or change it with tracking.uri or --tracking-uri"
                ) from None
        _CLIENTS[store.tracking_uri] = client
    return client


@contextmanager
def _lock(store: Store) -> Iterator[None]:
    if store.database is None:  # remote stores serialise schema creation themselves
        yield
        return
    lock_path = store.database.with_name(store.database.name + ".lock")
    lock = _LOCKS.setdefault(lock_path, FileLock(lock_path, timeout=300))
    with lock:
        yield


def _check_writable(folder: Path, database: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
        if database.exists() and not os.access(database, os.W_OK):
            raise PermissionError(f"{database.name} is read-only")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise HarnessError(
            f"tracking folder {folder} is not writable: {reason}; "
            "choose another with tracking.uri or --tracking-uri"
        ) from None


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///path`` URI (relative to the cwd), or None."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    if path in ("", ":memory:"):
        return None
    return Path(path).expanduser().resolve()


def _artifact_location(store: Store, experiment: str) -> str | None:
    if store.artifact_root is None:
        return None  # the server's default
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", experiment).strip("-.") or "experiment"
    return (store.artifact_root / slug).as_uri()


# --- runs and batches --------------------------------------------------------------------------


@contextmanager
def _run(client: MlflowClient, experiment_id: str, name: str, tags: Mapping[str, str]) -> Iterator[str]:
    """A run that always ends: FINISHED, FAILED on an exception, KILLED on Ctrl-C."""
    run_id = client.create_run(experiment_id, run_name=name, tags=dict(tags)).info.run_id
    status = RunStatus.FAILED
    try:
        yield run_id
        status = RunStatus.FINISHED
    except KeyboardInterrupt:
        status = RunStatus.KILLED
        raise
    finally:
        client.set_terminated(run_id, RunStatus.to_string(status))


def _log_batch(
    client: MlflowClient, run_id: str, *, metrics: Sequence[Metric] = (), params: Mapping[str, str] | None = None
) -> None:
    """Log a run's metrics and params in one call.

    ``MlflowClient.log_batch`` (3.17) splits the payload into requests within the limits (1000
    metrics, 100 params, 100 tags, 1000 entities), which the store enforces; one call per run.
    """
    param_list = [Param(key, _clip(value, MAX_PARAM_VALUE)) for key, value in (params or {}).items()]
    client.log_batch(run_id, metrics=list(metrics), params=param_list, synchronous=True)


def _schedule_metrics(seed_mean: pd.DataFrame, aggregates: pd.DataFrame) -> list[Metric]:
    """Per-window metrics at ``step = window``, then the aggregates as single values (step 0)."""
    stamp = int(time.time() * 1000)
    per_window = [
        Metric(str(name), float(value), stamp, int(window))
        for window, name, value in seed_mean[["window", "metric", "value"]].itertuples(index=False)
    ]
    single = [
        Metric(str(name), float(value), stamp, 0)
        for name, value in aggregates[["metric", "value"]].itertuples(index=False)
    ]
    return per_window + single


def _search(client: MlflowClient, experiment_id: str, query: str) -> list[Run]:
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id], query, ViewType.ACTIVE_ONLY, 1000, ["attributes.start_time DESC"], token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _tag_filter(tags: Mapping[str, Any]) -> str:
    clauses = []
    for key, value in tags.items():
        text = str(value)
        if "'" in text and '"' in text:
            raise ValueError(f"tag value {text!r} has both quote kinds; MLflow's filter cannot match it")
        quote = '"' if "'" in text else "'"
        clauses.append(f"tags.`{key}` = {quote}{text}{quote}")
    return " and ".join(clauses)


def _runs_frame(runs: Sequence[Run]) -> pd.DataFrame:
    """The frame ``mlflow.search_runs`` returns, built without the global tracking URI."""
    rows = []
    for run in runs:
        info = run.info
        rows.append({
            "run_id": info.run_id,
            "experiment_id": info.experiment_id,
            "status": info.status,
            "artifact_uri": info.artifact_uri,
            "start_time": pd.to_datetime(info.start_time, unit="ms", utc=True),
            "end_time": pd.to_datetime(info.end_time, unit="ms", utc=True),
            **{f"metrics.{k}": v for k, v in run.data.metrics.items()},
            **{f"params.{k}": v for k, v in run.data.params.items()},
            **{f"tags.{k}": v for k, v in run.data.tags.items()},
        })
    columns = ["run_id", "experiment_id", "status", "artifact_uri", "start_time", "end_time"]
    return pd.DataFrame(rows, columns=None if rows else columns)


def _parent_run(client: MlflowClient, store: Store, key: str) -> Run:
    if _RUN_ID.match(key):
        try:
            run = client.get_run(key)
        except MlflowException:
            run = None
        if run is not None and run.data.tags.get("kind") == "backtest":
            return run
    experiment = client.get_experiment_by_name(key)
    if experiment is None:
        raise HarnessError(
            f"no experiment or backtest run '{key}' in {store.tracking_uri}; check the name "
            "(the config's `experiment`) and the tracking uri (tracking.uri or --tracking-uri)"
        )
    runs = _search(client, experiment.experiment_id, "tags.kind = 'backtest' and attributes.status = 'FINISHED'")
    if not runs:
        raise HarnessError(f"experiment '{key}' has no finished backtest; run `harness run` first")
    return runs[0]


# --- payload checks, params, artifacts ---------------------------------------------------------


def _check_payload(
    labels: Sequence[str],
    metrics: pd.DataFrame,
    seed_mean: pd.DataFrame,
    aggregates: pd.DataFrame,
    predictions: pd.DataFrame,
    training: pd.DataFrame,
    lr_curves: Mapping[str, np.ndarray],
    extra: Mapping[str, str | Path],
) -> None:
    """Reject a malformed payload before any run exists (these are engine bugs: ValueError)."""
    if not labels:
        raise ValueError("log_backtest needs at least one schedule in schedule_params")
    frames = {
        "metrics": (metrics, METRIC_COLUMNS), "seed_mean_metrics": (seed_mean, SEED_MEAN_COLUMNS),
        "aggregates": (aggregates, AGGREGATE_COLUMNS), "predictions": (predictions, PREDICTION_COLUMNS),
        "training": (training, TRAINING_COLUMNS),
    }
    for name, (frame, columns) in frames.items():
        figures.require_columns(frame, columns, name)
        unknown = set(frame["schedule"]) - set(labels)
        if unknown:
            raise ValueError(f"{name} has schedules {sorted(unknown)} missing from schedule_params")
    missing = [label for label in labels if label not in lr_curves]
    if missing:
        raise ValueError(f"lr_curves lacks schedules {missing}")
    for name in pd.unique(pd.concat([seed_mean["metric"], aggregates["metric"]])):
        name = str(name)
        if not name or len(name) > MAX_KEY or name.startswith(("/", "..")) or os.path.normpath(name) != name:
            raise ValueError(f"metric name {name!r} is not a valid MLflow key")
    clash = set(seed_mean["metric"]) & set(aggregates["metric"])
    if clash:
        raise ValueError(f"aggregate metrics {sorted(clash)} would overwrite the per-window history")
    for name, path in extra.items():
        if name in _PARENT_FILES or not Path(path).exists():
            raise ValueError(f"extra artifact {name!r}: {path} is missing or its name is reserved")


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dict -> dotted keys; lists of dicts by index; other values JSON (strings raw)."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, name + "."))
        elif isinstance(value, list) and any(isinstance(item, Mapping) for item in value):
            flat.update(_flatten({str(i): item for i, item in enumerate(value)}, name + "."))
        else:
            flat[name] = value if isinstance(value, str) else json.dumps(value, default=str)
    return flat


def _unflatten(flat: Mapping[str, str]) -> dict[str, Any]:
    """Inverse of :func:`_flatten` for dict trees (values parsed as JSON where they parse)."""
    tree: dict[str, Any] = {}
    for key, text in flat.items():
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        try:
            node[leaf] = json.loads(text)
        except ValueError:
            node[leaf] = text
    return tree


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _source_tags(tags: Mapping[str, str]) -> dict[str, str]:
    source = {MLFLOW_SOURCE_NAME: "harness", MLFLOW_SOURCE_TYPE: "LOCAL"}
    try:
        source[MLFLOW_USER] = getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        pass
    if tags.get("git_commit"):
        source[MLFLOW_GIT_COMMIT] = tags["git_commit"]
    return source


def _headline_metric(config: Mapping[str, Any], seed_mean: pd.DataFrame) -> str:
    """The metric the figures show: the selection metric if logged, else rmse, else the first."""
    names = list(pd.unique(seed_mean["metric"]))
    preferred = (config.get("selection") or {}).get("metric")
    for name in (preferred, "rmse"):
        if name in names:
            return name
    return str(names[0]) if names else "rmse"


def _rows(frame: pd.DataFrame, label: str) -> pd.DataFrame:
    return frame[frame["schedule"] == label].drop(columns="schedule").reset_index(drop=True)


@contextmanager
def _staging() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="harness-mlflow-") as folder:
        yield Path(folder)


def _write_schedule_artifacts(
    folder: Path,
    label: str,
    headline: str,
    per_seed: pd.DataFrame,
    seed_mean: pd.DataFrame,
    predictions: pd.DataFrame,
    training: pd.DataFrame,
    lr: np.ndarray,
) -> None:
    lr = np.asarray(lr, dtype=float)
    np.save(folder / "lr_curve.npy", lr)
    figures.plot_lr_curve(lr, folder / "lr_curve.png", f"{label}: learning rate per optimizer step")
    tidy = pd.concat(
        [per_seed.astype({"seed": "Int64"}), seed_mean.assign(seed=pd.NA).astype({"seed": "Int64"})],
        ignore_index=True,
    )[["window", "seed", "metric", "value"]]
    tidy.to_parquet(folder / "window_metrics.parquet", index=False)
    if not seed_mean.empty:
        figures.plot_window_metrics(
            seed_mean.assign(schedule=label), headline, folder / "window_metrics.png",
            per_seed=per_seed.assign(schedule=label),
        )
    predictions.to_parquet(folder / "predictions.parquet", index=False)
    training.to_parquet(folder / "training.parquet", index=False)


def _write_parent_artifacts(
    folder: Path,
    config: Mapping[str, Any],
    summary: pd.DataFrame,
    seed_mean: pd.DataFrame,
    predictions: pd.DataFrame,
    lr_curves: Mapping[str, np.ndarray],
    headline: str,
    extra: Mapping[str, str | Path],
) -> None:
    (folder / "config.yaml").write_text(yaml.safe_dump(dict(config), sort_keys=False))
    plain = summary if isinstance(summary.index, pd.RangeIndex) else summary.reset_index()
    plain.to_csv(folder / "summary.csv", index=False)
    if not seed_mean.empty:
        figures.plot_comparison(seed_mean, lr_curves, headline, folder / "comparison.png")  # bands: per child
    if not predictions.empty:
        figures.plot_errors(predictions, folder / "errors.png")
    for name, source in extra.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if Path(source).is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copyfile(source, target)


def _read_schedule(client: MlflowClient, run: Run, folder: Path) -> dict[str, Any]:
    """One child run's share of the payload, with its ``schedule`` column restored."""
    label = run.data.tags["schedule"]
    run_id = run.info.run_id
    tidy = pd.read_parquet(_download(client, run_id, "window_metrics.parquet", folder))
    is_mean = tidy["seed"].isna()
    per_seed = tidy[~is_mean].astype({"seed": "int64"})
    seed_mean = tidy[is_mean].drop(columns="seed")
    window_names = set(seed_mean["metric"])
    aggregates = pd.DataFrame(
        [(label, name, value) for name, value in run.data.metrics.items() if name not in window_names],
        columns=list(AGGREGATE_COLUMNS),
    )
    schedule_params = _unflatten({
        key[len("schedule."):]: value for key, value in run.data.params.items() if key.startswith("schedule.")
    })
    return {
        "label": label,
        "run_id": run_id,
        "schedule_params": schedule_params,
        "metrics": _with_schedule(per_seed, label, METRIC_COLUMNS),
        "seed_mean_metrics": _with_schedule(seed_mean, label, SEED_MEAN_COLUMNS),
        "aggregates": aggregates,
        "predictions": _with_schedule(
            pd.read_parquet(_download(client, run_id, "predictions.parquet", folder)), label, PREDICTION_COLUMNS
        ),
        "training": _with_schedule(
            pd.read_parquet(_download(client, run_id, "training.parquet", folder)), label, TRAINING_COLUMNS
        ),
        "lr_curve": np.load(_download(client, run_id, "lr_curve.npy", folder)),
    }


def _with_schedule(frame: pd.DataFrame, label: str, columns: Sequence[str]) -> pd.DataFrame:
    """Put the ``schedule`` column back; canonical columns first, any extra ones after."""
    frame = frame.assign(schedule=label).reset_index(drop=True)
    return frame[[*columns, *[c for c in frame.columns if c not in columns]]]


def _download(client: MlflowClient, run_id: str, artifact: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with _quiet_downloads():
        return Path(client.download_artifacts(run_id, artifact, str(folder)))


@contextmanager
def _quiet_downloads() -> Iterator[None]:
    """MLflow draws a progress bar per downloaded file; a backtest reads dozens of small ones."""
    previous = os.environ.get(_PROGRESS_BAR)
    os.environ[_PROGRESS_BAR] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(_PROGRESS_BAR, None)
        else:
            os.environ[_PROGRESS_BAR] = previous


# --- resumable backtests (engine.run_and_log): the parent opened first, children logged last ---
#
# ``log_backtest`` writes a finished backtest in one go. A resumable one opens its parent run
# first (RUNNING, config params and identity tags), keeps finished windows in it as artifacts
# while it runs, and at the end logs the schedules into that same parent (``finish_backtest``).


def start_backtest(
    store: Store, experiment: str, *, run_name: str, config: Mapping[str, Any], tags: Mapping[str, Any]
) -> str:
    """Open a backtest's parent run (RUNNING, tag ``kind=backtest``) with the config as params.

    End it with :func:`finish_backtest`, or with :func:`end_run` as FAILED or KILLED.
    """
    experiment_id = ensure_experiment(store, experiment)
    client = _client(store)
    base_tags = _plain_tags(tags)
    run_id = client.create_run(
        experiment_id, run_name=run_name, tags={**_source_tags(base_tags), **base_tags, "kind": "backtest"}
    ).info.run_id
    try:
        _log_batch(client, run_id, params=_flatten(config))
    except BaseException:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    return run_id


def reopen_run(store: Store, run_id: str, tags: Mapping[str, Any]) -> None:
    """Set an unfinished run back to RUNNING and update ``tags`` (a resumed backtest takes it over)."""
    client = _client(store)
    client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
    _set_tags(client, run_id, tags)


def end_run(store: Store, run_id: str, status: str) -> None:
    """End a run as ``status`` (``FINISHED``, ``FAILED`` or ``KILLED``)."""
    _client(store).set_terminated(run_id, status)


def save_files(store: Store, run_id: str, folder: str | Path, artifact_path: str) -> None:
    """Copy the files of local ``folder`` into the run's artifacts under ``artifact_path``."""
    _client(store).log_artifacts(run_id, str(folder), artifact_path)


def fetch_files(store: Store, run_id: str, artifact_path: str, destination: str | Path) -> Path | None:
    """Download the run's artifact folder ``artifact_path`` into ``destination``; None if it has none."""
    client = _client(store)
    if not client.list_artifacts(run_id, artifact_path):
        return None
    return _download(client, run_id, artifact_path, Path(destination))


def delete_child_runs(store: Store, parent_run_id: str) -> list[str]:
    """Move every nested run of ``parent_run_id`` to the trash (ending RUNNING ones KILLED first)."""
    client = _client(store)
    parent = client.get_run(parent_run_id)
    children = _search(client, parent.info.experiment_id, f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'")
    for run in children:
        if run.info.status == RunStatus.to_string(RunStatus.RUNNING):
            client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
        client.delete_run(run.info.run_id)
    return [run.info.run_id for run in children]


def finish_backtest(
    store: Store,
    parent_run_id: str,
    *,
    config: Mapping[str, Any],
    tags: Mapping[str, Any],
    schedule_params: Mapping[str, Mapping[str, Any]],
    metrics: pd.DataFrame,
    seed_mean_metrics: pd.DataFrame,
    aggregates: pd.DataFrame,
    predictions: pd.DataFrame,
    training: pd.DataFrame,
    lr_curves: Mapping[str, np.ndarray],
    summary: pd.DataFrame,
    extra_artifacts: Mapping[str, str | Path] | None = None,
) -> BacktestLog:
    """Log a backtest's schedules as nested runs of the open parent from :func:`start_backtest`,
    add the parent's artifacts, and end it FINISHED. Same layout and arguments as :func:`log_backtest`.
    """
    started = time.perf_counter()
    labels = list(schedule_params)
    extra = dict(extra_artifacts or {})
    _check_payload(labels, metrics, seed_mean_metrics, aggregates, predictions, training, lr_curves, extra)
    client = _client(store)
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    base_tags = _plain_tags(tags)
    config_params = _flatten(config)
    headline = _headline_metric(config, seed_mean_metrics)
    result = BacktestLog(experiment_id, parent_run_id)
    for index, label in enumerate(labels):
        child_tags = {
            **_source_tags(base_tags), **base_tags, "kind": "schedule", "schedule": label,
            "schedule_index": str(index), MLFLOW_PARENT_RUN_ID: parent_run_id,
        }
        with _run(client, experiment_id, label, child_tags) as child_id:
            result.child_run_ids[label] = child_id
            params = {**config_params, **_flatten({"schedule": schedule_params[label]})}
            _log_batch(client, child_id, params=params, metrics=_schedule_metrics(
                _rows(seed_mean_metrics, label), _rows(aggregates, label)))
            with _staging() as folder:
                _write_schedule_artifacts(
                    folder, label, headline, _rows(metrics, label), _rows(seed_mean_metrics, label),
                    _rows(predictions, label), _rows(training, label), lr_curves[label],
                )
                client.log_artifacts(child_id, str(folder))
    with _staging() as folder:
        _write_parent_artifacts(folder, config, summary, seed_mean_metrics, predictions,
                                {label: lr_curves[label] for label in labels}, headline, extra)
        client.log_artifacts(parent_run_id, str(folder))
    client.set_terminated(parent_run_id, RunStatus.to_string(RunStatus.FINISHED))
    result.seconds = time.perf_counter() - started
    return result


def _plain_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    return {str(key): _clip(str(value), MAX_TAG_VALUE) for key, value in tags.items()}


def _set_tags(client: MlflowClient, run_id: str, tags: Mapping[str, Any]) -> None:
    """Set (or replace) ``tags`` on an existing run, as strings clipped to MLflow's limit."""
    for key, value in _plain_tags(tags).items():
        client.set_tag(run_id, key, value)


# --- model registry (`harness select`: the selection report and the production model) ----------

CHAMPION = "champion"
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class RegisteredModel:
    """A model version in the registry and the run that logged it; ``uri`` loads it by alias."""

    name: str
    version: str
    alias: str
    run_id: str
    model_uri: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{self.alias}"


def check_model_name(name: str) -> str:
    """Return ``name`` if it can be a registered model name (and sit in ``models:/NAME@alias``)."""
    if not _MODEL_NAME.match(name or ""):
        raise HarnessError(
            f"--register {name!r}: a model name starts with a letter, digit or '_' and holds only letters, "
            "digits, '.', '_' and '-'; choose another, e.g. spx-vol"
        )
    return name


def log_selection(store: Store, parent_run_id: str, folder: str | Path, tags: Mapping[str, Any]) -> None:
    """Log the files in ``folder`` (``selection.md`` and its PNGs) to a backtest's parent run and set
    ``tags`` on it (``selected_schedule``, ...); a later selection replaces them."""
    client = _client(store)
    client.log_artifacts(parent_run_id, str(folder))
    _set_tags(client, parent_run_id, tags)


def register_model(
    store: Store,
    experiment: str,
    model: Any,
    *,
    name: str,
    input_example: np.ndarray,
    run_name: str,
    params: Mapping[str, Any],
    tags: Mapping[str, Any],
    alias: str = CHAMPION,
) -> RegisteredModel:
    """Log ``model`` (a ``torch.nn.Module``) with ``mlflow.pytorch.log_model`` in a new run of
    ``experiment``, register it as a new version of ``name`` and point ``alias`` at that version.

    The run is tagged ``kind=production`` (not a backtest, not a child of one). The signature is
    inferred from ``input_example`` and the model's output on it; the format is MLflow's default
    ``pt2`` (``torch.export``; loads back as a ``GraphModule``); pip requirements are given
    explicitly (inferring them costs seconds).
    """
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    check_model_name(name)
    example = np.ascontiguousarray(input_example, dtype=np.float64)
    with torch.no_grad():
        output = model(torch.as_tensor(example)).numpy()
    signature = infer_signature(example, output)
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}",
                    f"numpy=={np.__version__}"]
    experiment_id = ensure_experiment(store, experiment)
    client = _client(store)
    run_tags = {**_source_tags({}), **{str(k): _clip(str(v), MAX_TAG_VALUE) for k, v in tags.items()},
                "kind": "production"}
    with _run(client, experiment_id, run_name, run_tags) as run_id:
        _log_batch(client, run_id, params=_flatten(dict(params)))
        with _fluent(store):  # the registry resolves a models:/ source through the global URIs too
            with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
                info = mlflow.pytorch.log_model(model, name="model", signature=signature, input_example=example,
                                                pip_requirements=requirements)
            version = _new_version(client, name, info.model_uri, run_id, info.model_id)
        client.set_registered_model_alias(name, alias, version)
    return RegisteredModel(name, version, alias, run_id, info.model_uri)


def _new_version(client: MlflowClient, name: str, source: str, run_id: str, model_id: str | None) -> str:
    """Register ``source`` as a new version of ``name`` (created on first use) through the client,
    which, unlike the fluent ``register_model``, prints nothing."""
    try:
        try:
            client.get_registered_model(name)
        except MlflowException:
            client.create_registered_model(name)
        return str(client.create_model_version(name, source, run_id=run_id, model_id=model_id).version)
    except MlflowException as exc:
        raise HarnessError(f"--register {name}: MLflow refused to register the model: {_first_line(exc)}") from None


def load_registered_model(store: Store, name: str, alias: str = CHAMPION) -> Any:
    """``mlflow.pytorch.load_model("models:/NAME@alias")`` from ``store``."""
    import mlflow.pytorch

    with _fluent(store):
        try:
            return mlflow.pytorch.load_model(f"models:/{name}@{alias}")
        except MlflowException as exc:
            raise HarnessError(f"no model '{name}@{alias}' in {store.tracking_uri}: {_first_line(exc)}") from None


def alias_version(store: Store, name: str, alias: str = CHAMPION) -> str:
    """The version ``alias`` points at (``get_model_version_by_alias``: on SQLite,
    ``search_model_versions`` returns versions without their aliases)."""
    try:
        return str(_client(store).get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        raise HarnessError(f"no model '{name}@{alias}' in {store.tracking_uri}: {_first_line(exc)}") from None


@contextmanager
def _fluent(store: Store) -> Iterator[None]:
    """MLflow's fluent API (``log_model``, ``load_model``) pointed at ``store``, then put back.

    ``mlflow.set_tracking_uri``/``set_registry_uri`` also write ``MLFLOW_TRACKING_URI`` and
    ``MLFLOW_REGISTRY_URI`` into the environment, and an explicitly set registry URI stops following
    the tracking URI; so the module globals and both variables are restored as they were (unset
    included), not set to their previous values.
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    environment = {name: os.environ.get(name) for name in names}
    tracking_uri, registry_uri = tracking_utils._tracking_uri, registry_utils._registry_uri
    mlflow.set_tracking_uri(store.tracking_uri)
    mlflow.set_registry_uri(store.tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(tracking_uri)  # also resets the trace exporter bound to the URI
        registry_utils._registry_uri = registry_uri
        for name, value in environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_server(store: Store, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when an ``http(s)`` tracking server does not answer.

    MLflow's client retries an unreachable server for minutes before it gives up.
    """
    parts = urllib.parse.urlsplit(store.tracking_uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as exc:
        raise HarnessError(
            f"tracking server {store.tracking_uri} does not answer ({exc.strerror or exc}); start it "
            "(mlflow server ...) or choose another store with tracking.uri or --tracking-uri"
        ) from None
