"""Runs and batches, the low-level pieces: a run that always ends, one ``log_batch`` per run, the
config as dotted params, tags within MLflow's limits, and run searches.

Metrics and params go in one ``log_batch`` per run (the client splits it within MLflow's limits);
a run opened with :func:`open_run` is ended FAILED on an error (KILLED on Ctrl-C), never left RUNNING.
"""

from __future__ import annotations

import getpass
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run, RunStatus, ViewType
from mlflow.utils.mlflow_tags import (
    MLFLOW_GIT_COMMIT,
    MLFLOW_SOURCE_NAME,
    MLFLOW_SOURCE_TYPE,
    MLFLOW_USER,
)

# Param values: MLflow >= 2 takes 6000 chars, older servers 500; the full config is an artifact,
# so params keep the portable 500.
MAX_PARAM_VALUE = 500
MAX_TAG_VALUE = 8000
MAX_KEY = 250


@contextmanager
def open_run(client: MlflowClient, experiment_id: str, name: str, tags: Mapping[str, str]) -> Iterator[str]:
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


def log_batch(
    client: MlflowClient, run_id: str, *, metrics: Sequence[Metric] = (), params: Mapping[str, str] | None = None
) -> None:
    """Log a run's metrics and params in one call.

    ``MlflowClient.log_batch`` (3.17) splits the payload into requests within the limits (1000
    metrics, 100 params, 100 tags, 1000 entities), which the store enforces; one call per run.
    """
    param_list = [Param(key, clip(value, MAX_PARAM_VALUE)) for key, value in (params or {}).items()]
    client.log_batch(run_id, metrics=list(metrics), params=param_list, synchronous=True)


def schedule_metrics(seed_mean: pd.DataFrame, aggregates: pd.DataFrame) -> list[Metric]:
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


# --- params and tags ---------------------------------------------------------------------------


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dict -> dotted keys; lists of dicts by index; other values JSON (strings raw)."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name + "."))
        elif isinstance(value, list) and any(isinstance(item, Mapping) for item in value):
            flat.update(flatten({str(i): item for i, item in enumerate(value)}, name + "."))
        else:
            flat[name] = value if isinstance(value, str) else json.dumps(value, default=str)
    return flat


def unflatten(flat: Mapping[str, str]) -> dict[str, Any]:
    """Inverse of :func:`flatten` for dict trees (values parsed as JSON where they parse)."""
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


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def plain_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    """``tags`` as strings, values clipped to MLflow's limit."""
    return {str(key): clip(str(value), MAX_TAG_VALUE) for key, value in tags.items()}


def set_tags(client: MlflowClient, run_id: str, tags: Mapping[str, Any]) -> None:
    """Set (or replace) ``tags`` on an existing run, as strings clipped to MLflow's limit."""
    for key, value in plain_tags(tags).items():
        client.set_tag(run_id, key, value)


def source_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """MLflow's own source tags (source name, user, and the git commit when ``tags`` has one)."""
    source = {MLFLOW_SOURCE_NAME: "harness", MLFLOW_SOURCE_TYPE: "LOCAL"}
    try:
        source[MLFLOW_USER] = getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        pass
    if tags.get("git_commit"):
        source[MLFLOW_GIT_COMMIT] = tags["git_commit"]
    return source


# --- searching ---------------------------------------------------------------------------------


def search(client: MlflowClient, experiment_id: str, query: str) -> list[Run]:
    """Every active run of the experiment matching ``query``, newest first (all pages)."""
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


def tag_filter(tags: Mapping[str, Any]) -> str:
    """An MLflow filter string matching runs whose tags equal ``tags``."""
    clauses = []
    for key, value in tags.items():
        text = str(value)
        if "'" in text and '"' in text:
            raise ValueError(f"tag value {text!r} has both quote kinds; MLflow's filter cannot match it")
        quote = '"' if "'" in text else "'"
        clauses.append(f"tags.`{key}` = {quote}{text}{quote}")
    return " and ".join(clauses)


def runs_frame(runs: Sequence[Run]) -> pd.DataFrame:
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
