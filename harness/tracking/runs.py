"""A backtest's runs: the parent opened first, finished windows kept in it, the schedules logged
last; found, reopened, ended and read back (layout: :mod:`harness.tracking`).

A resumable backtest (:func:`harness.backtest.run_and_log`) opens its parent run first (:func:`start_backtest`:
RUNNING, config params and identity tags), keeps finished windows in it as artifacts while it runs
(:func:`save_files`, :func:`fetch_files`), and at the end logs the schedules into that same parent
(:func:`finish_backtest`, with ``finish=False``: the parent stays RUNNING until the caller has
logged the selection and ends it with :func:`end_run`). On an error the caller ends it with
:func:`end_run` as FAILED (KILLED on Ctrl-C).

Logging the schedules is idempotent, so a backtest killed while it logs them can log them again:
a schedule that already has a FINISHED nested run (matched by its ``schedule`` tag) is skipped;
nested runs that are not FINISHED (left RUNNING by a kill, ended KILLED or FAILED) or that
duplicate another of their schedule are moved to the trash (:func:`prune_child_runs`) and that
schedule is logged anew. A nested run is ended FINISHED only after all of it is logged, so a
FINISHED one is complete.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml
from mlflow import MlflowClient
from mlflow.entities import Run, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from harness.errors import HarnessError
from harness.tracking.artifacts import (
    FRAMES,
    add_files,
    check_payload,
    download,
    read_schedule,
    rows,
    staging,
    write_parent_tables,
    write_schedule_tables,
)
from harness.tracking.batch import (
    flatten,
    log_batch,
    open_run,
    plain_tags,
    runs_frame,
    schedule_metrics,
    search,
    set_tags,
    source_tags,
    tag_filter,
)
from harness.tracking.store import Store, ensure_experiment, open_client
from harness.tracking.values import BacktestLog

if TYPE_CHECKING:
    from harness.backtest.result import Backtest

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_FINISHED = RunStatus.to_string(RunStatus.FINISHED)


@dataclass(frozen=True)
class BacktestRun:
    """A backtest's parent run as ``harness select`` names it: what it took and when it ended.

    ``config_hash`` is the run's ``config_hash`` tag; ``end_time`` its end (UTC; None while it has
    not ended); ``params`` the config's flattened params (``windows.train``, ``training.epochs``, ...).
    """

    run_id: str
    experiment: str
    status: str
    config_hash: str
    start_time: pd.Timestamp
    end_time: pd.Timestamp | None
    params: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def finished(self) -> str:
        """The end time as ISO 8601 (seconds, UTC), or the status when the run has not ended."""
        return self.end_time.isoformat(timespec="seconds") if self.end_time is not None else self.status


def start_backtest(
    store: Store, experiment: str, *, run_name: str, config: Mapping[str, Any], tags: Mapping[str, Any]
) -> str:
    """Open a backtest's parent run (RUNNING, tag ``kind=backtest``) with the config as params.

    End it with :func:`finish_backtest`, or with :func:`end_run` as FAILED or KILLED.
    """
    experiment_id = ensure_experiment(store, experiment)
    client = open_client(store)
    base_tags = plain_tags(tags)
    run_id = client.create_run(
        experiment_id, run_name=run_name, tags={**source_tags(base_tags), **base_tags, "kind": "backtest"}
    ).info.run_id
    try:
        log_batch(client, run_id, params=flatten(config))
    except BaseException:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    return run_id


def finish_backtest(
    store: Store,
    parent_run_id: str,
    backtest: Backtest,
    *,
    tags: Mapping[str, Any],
    parent_files: Mapping[str, str | Path] | None = None,
    schedule_files: Mapping[str, Mapping[str, str | Path]] | None = None,
    finish: bool = True,
) -> BacktestLog:
    """Log ``backtest``'s schedules as nested runs of the open parent from :func:`start_backtest`,
    add the parent's files, and end it FINISHED (``finish=False``: leave it RUNNING for the caller,
    who has more to log first, then ends it with :func:`end_run`).

    Idempotent: a schedule whose FINISHED nested run exists already (a resumed backtest killed
    while it logged) is not logged again; partial or duplicate nested runs are trashed first
    (:func:`prune_child_runs`). Tracking writes the tables (``config.yaml``, ``summary.csv``; per
    schedule ``lr_curve.npy`` and the parquet files); figures come drawn: ``parent_files`` maps an
    artifact name (may contain ``/``) to a local file or folder for the parent run,
    ``schedule_files`` a schedule label to such a mapping for its run
    (:func:`harness.figures.backtest_figures` returns both). A malformed payload raises ValueError
    before any schedule run exists; the parent is left for the caller to end.
    """
    started = time.perf_counter()
    labels = backtest.labels
    logged = set(backtest.lr_curves["schedule"])  # a schedule without LR rows is refused, not logged empty
    lr_curves = {label: backtest.lr_curve(label) for label in labels if label in logged}
    parent_files, schedule_files = dict(parent_files or {}), dict(schedule_files or {})
    check_payload(labels, backtest.metrics, backtest.seed_mean_metrics, backtest.aggregates, backtest.predictions,
                  backtest.training, lr_curves, parent_files, schedule_files)
    client = open_client(store)
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    base_tags = plain_tags(tags)
    config = backtest.config.model_dump(mode="json")
    config_params = flatten(config)
    schedule_params = backtest.schedule_params()
    candidates = backtest.candidate_tags()  # each candidate's epochs, lr, base_schedule
    result = BacktestLog(experiment_id, parent_run_id)
    done = _prune(client, experiment_id, parent_run_id, labels)  # schedules logged by an earlier, killed session
    for index, label in enumerate(labels):
        if label in done:
            result.child_run_ids[label] = done[label]
            continue
        child_tags = {
            **source_tags(base_tags), **base_tags, **candidates.get(label, {}), "kind": "schedule", "schedule": label,
            "schedule_index": str(index), MLFLOW_PARENT_RUN_ID: parent_run_id,
        }
        with open_run(client, experiment_id, label, child_tags) as child_id:  # FINISHED only once complete
            result.child_run_ids[label] = child_id
            params = {**config_params, **flatten({"schedule": schedule_params[label]}),
                      **_candidate_params(candidates.get(label))}
            log_batch(client, child_id, params=params, metrics=schedule_metrics(
                rows(backtest.seed_mean_metrics, label), rows(backtest.aggregates, label)))
            with staging() as folder:
                write_schedule_tables(folder, {name: rows(getattr(backtest, name), label)
                                               for name in (*FRAMES, "metrics", "seed_mean_metrics")},
                                      lr_curves[label])
                add_files(folder, schedule_files.get(label, {}))
                client.log_artifacts(child_id, str(folder))
    with staging() as folder:  # files of the same names replace those an earlier session logged
        write_parent_tables(folder, config, backtest.summary())
        add_files(folder, parent_files)
        client.log_artifacts(parent_run_id, str(folder))
    if finish:
        client.set_terminated(parent_run_id, _FINISHED)
    result.seconds = time.perf_counter() - started
    return result


def _candidate_params(tags: Mapping[str, str] | None) -> dict[str, str]:
    """A candidate run's own budget and LR as its ``training.epochs`` and ``training.lr`` params."""
    return {} if not tags else {"training.epochs": tags["epochs"], "training.lr": tags["lr"]}


def load_backtest(store: Store, experiment_or_parent_run_id: str) -> Backtest:
    """Read a logged backtest back, as the :class:`~harness.backtest.result.Backtest` that was logged:
    the latest finished one of an experiment, or a parent run id. ``tags`` omits MLflow's own."""
    from harness.backtest.frames import lr_curves
    from harness.backtest.result import Backtest
    from harness.config import parse_config

    client = open_client(store)
    parent = _parent_run(client, store, experiment_or_parent_run_id)
    parent_id = parent.info.run_id
    children = _complete(_children(client, parent.info.experiment_id, parent_id))
    children.sort(key=lambda run: int(run.data.tags.get("schedule_index", 0)))
    with staging() as folder:
        parts = [read_schedule(client, run, folder / run.info.run_id) for run in children]
        config = yaml.safe_load(download(client, parent_id, "config.yaml", folder).read_text())
    tags = {k: v for k, v in parent.data.tags.items() if not k.startswith("mlflow.") and k != "kind"}
    frames = {name: pd.concat([part[name] for part in parts], ignore_index=True)
              for name in (*FRAMES, "metrics", "seed_mean_metrics", "aggregates")}
    return Backtest(config=parse_config(config), data_hash=tags.get("data_hash", ""),
                    lr_curves=lr_curves({part["label"]: part["lr_curve"] for part in parts}),
                    run_id=parent_id, tags=tags, **frames)


def backtest_runs(store: Store, experiment_or_parent_run_id: str) -> tuple[list[BacktestRun], bool]:
    """The backtest parent runs that :func:`load_backtest` chooses from, newest first, and whether
    the key named a run: ``([that run], True)`` for a backtest's parent run id, else
    ``(every FINISHED backtest of the experiment, False)``. Raises
    :class:`~harness.errors.HarnessError` as :func:`load_backtest` does (no such experiment or run,
    no finished backtest)."""
    client = open_client(store)
    runs, by_id = _parent_runs(client, store, experiment_or_parent_run_id)
    name = client.get_experiment(runs[0].info.experiment_id).name
    return [_backtest_run(run, name) for run in runs], by_id


def find_runs(store: Store, experiment: str, tags: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Runs of ``experiment`` whose tags equal ``tags`` (e.g. ``{"config_hash": h}``), newest first.

    Same columns as ``mlflow.search_runs``: ``run_id, experiment_id, status, artifact_uri,
    start_time, end_time`` then ``metrics.*``, ``params.*``, ``tags.*``. An experiment that does
    not exist yet gives an empty frame.
    """
    client = open_client(store)
    found = client.get_experiment_by_name(experiment)
    runs = [] if found is None else search(client, found.experiment_id, tag_filter(tags or {}))
    return runs_frame(runs)


def reopen_run(store: Store, run_id: str, tags: Mapping[str, Any], *,
               config: Mapping[str, Any] | None = None) -> None:
    """Set an unfinished run back to RUNNING and update ``tags`` (a resumed backtest takes it over).

    The params of ``config`` (what :func:`start_backtest` took) that the run lacks are logged: a
    kill between the parent's creation and its params (or between two of MLflow's params requests)
    left them out. Params already there keep their values (MLflow never changes one; a resumed
    run may use another executor, which is not part of the backtest's identity)."""
    client = open_client(store)
    client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
    set_tags(client, run_id, tags)
    if config is not None:
        logged = client.get_run(run_id).data.params
        missing = {key: value for key, value in flatten(config).items() if key not in logged}
        if missing:
            log_batch(client, run_id, params=missing)


def end_run(store: Store, run_id: str, status: str) -> None:
    """End a run as ``status`` (``FINISHED``, ``FAILED`` or ``KILLED``)."""
    open_client(store).set_terminated(run_id, status)


def save_files(store: Store, run_id: str, folder: str | Path, artifact_path: str) -> None:
    """Copy the files of local ``folder`` into the run's artifacts under ``artifact_path``."""
    open_client(store).log_artifacts(run_id, str(folder), artifact_path)


def fetch_files(store: Store, run_id: str, artifact_path: str, destination: str | Path) -> Path | None:
    """Download the run's artifact folder ``artifact_path`` into ``destination``; None if it has none."""
    client = open_client(store)
    if not client.list_artifacts(run_id, artifact_path):
        return None
    return download(client, run_id, artifact_path, Path(destination))


def delete_child_runs(store: Store, parent_run_id: str) -> list[str]:
    """Move every nested run of ``parent_run_id`` to the trash (ending RUNNING ones KILLED first)."""
    client = open_client(store)
    parent = client.get_run(parent_run_id)
    children = search(client, parent.info.experiment_id, f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'")
    for run in children:
        if run.info.status == RunStatus.to_string(RunStatus.RUNNING):
            client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
        client.delete_run(run.info.run_id)
    return [run.info.run_id for run in children]


def prune_child_runs(store: Store, parent_run_id: str) -> dict[str, str]:
    """Trash the nested runs of ``parent_run_id`` that are not complete (not FINISHED: left RUNNING
    by a kill, or ended KILLED or FAILED) or that duplicate another FINISHED run of their schedule
    (the newest is kept); RUNNING ones are ended KILLED first. Returns the schedules that keep a
    complete run: schedule label -> run id."""
    client = open_client(store)
    return _prune(client, client.get_run(parent_run_id).info.experiment_id, parent_run_id)


def logged_schedules(store: Store, parent_run_id: str) -> dict[str, str]:
    """The schedules of ``parent_run_id`` that have a complete (FINISHED) nested run: label -> run id.
    Reads only (:func:`finish_backtest` skips these)."""
    client = open_client(store)
    runs = _complete(_children(client, client.get_run(parent_run_id).info.experiment_id, parent_run_id))
    return {run.data.tags["schedule"]: run.info.run_id for run in runs}


def _children(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list[Run]:
    """The active nested runs of ``parent_run_id``, newest first."""
    return search(client, experiment_id, f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'")


def _complete(children: list[Run], labels: Sequence[str] | None = None) -> list[Run]:
    """One run per schedule: the newest FINISHED one with a ``schedule`` tag (in ``labels`` when given)."""
    kept: dict[str, Run] = {}
    for run in children:  # newest first
        label = run.data.tags.get("schedule")
        if (run.info.status == _FINISHED and label is not None and label not in kept
                and (labels is None or label in labels)):
            kept[label] = run
    return list(kept.values())


def _prune(client: MlflowClient, experiment_id: str, parent_run_id: str,
           labels: Sequence[str] | None = None) -> dict[str, str]:
    children = _children(client, experiment_id, parent_run_id)
    kept = _complete(children, labels)
    keep = {run.info.run_id for run in kept}
    for run in children:
        if run.info.run_id in keep:
            continue
        if run.info.status == RunStatus.to_string(RunStatus.RUNNING):
            client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
        client.delete_run(run.info.run_id)
    return {run.data.tags["schedule"]: run.info.run_id for run in kept}


def _backtest_run(run: Run, experiment: str) -> BacktestRun:
    info = run.info
    end = pd.Timestamp(info.end_time, unit="ms", tz="UTC") if info.end_time else None
    return BacktestRun(run_id=info.run_id, experiment=experiment, status=info.status,
                       config_hash=run.data.tags.get("config_hash", ""),
                       start_time=pd.Timestamp(info.start_time, unit="ms", tz="UTC"), end_time=end,
                       params=dict(run.data.params))


def _parent_run(client: MlflowClient, store: Store, key: str) -> Run:
    return _parent_runs(client, store, key)[0][0]


def _parent_runs(client: MlflowClient, store: Store, key: str) -> tuple[list[Run], bool]:
    """``([the run], True)`` for a backtest's parent run id, else the experiment's finished
    backtests, newest first, and False."""
    if _RUN_ID.match(key):
        try:
            run = client.get_run(key)
        except MlflowException:
            run = None
        if run is not None and run.data.tags.get("kind") == "backtest":
            return [run], True
    experiment = client.get_experiment_by_name(key)
    if experiment is None:
        raise HarnessError(
            f"no experiment or backtest run '{key}' in {store.tracking_uri}; check the name "
            "(the config's `experiment`) and the tracking uri (tracking.uri or --tracking-uri)"
        )
    runs = search(client, experiment.experiment_id, "tags.kind = 'backtest' and attributes.status = 'FINISHED'")
    if not runs:
        raise HarnessError(f"experiment '{key}' has no finished backtest; run `harness run` first")
    return runs, False
