"""A backtest's files in MLflow: the payload checked, its tables written, the caller's files added,
and a schedule run's share read back.

Tracking writes the tables itself (``config.yaml``, ``summary.csv``, the parquet files,
``lr_curve.npy``); figures arrive already drawn, as local files named by artifact
(:func:`harness.figures.backtest_figures` draws them).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from mlflow import MlflowClient
from mlflow.entities import Run

from harness.tracking.batch import MAX_KEY, unflatten

METRIC_COLUMNS = ("window", "schedule", "seed", "metric", "value")
SEED_MEAN_COLUMNS = ("window", "schedule", "metric", "value")
AGGREGATE_COLUMNS = ("schedule", "metric", "value")
PREDICTION_COLUMNS = ("date", "window", "schedule", "seed", "prediction", "target", "baseline")
TRAINING_COLUMNS = (
    "window", "schedule", "seed", "diverged", "end_oscillation", "train_loss", "val_loss", "best_epoch",
)
CURVE_COLUMNS = ("window", "schedule", "seed", "epoch", "val_loss")
CHURN_COLUMNS = ("window", "schedule", "seed", "prev_prediction", "prediction")
FRAMES = {"predictions": PREDICTION_COLUMNS, "training": TRAINING_COLUMNS, "curves": CURVE_COLUMNS,
          "churn": CHURN_COLUMNS}
"""The backtest frames each schedule run keeps as ``<name>.parquet`` (with their canonical columns)."""
PARENT_TABLES = ("config.yaml", "summary.csv")
SCHEDULE_TABLES = ("lr_curve.npy", "window_metrics.parquet", *(f"{name}.parquet" for name in FRAMES))

_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


def check_payload(
    labels: Sequence[str],
    metrics: pd.DataFrame,
    seed_mean: pd.DataFrame,
    aggregates: pd.DataFrame,
    predictions: pd.DataFrame,
    training: pd.DataFrame,
    lr_curves: Mapping[str, np.ndarray],
    parent_files: Mapping[str, str | Path],
    schedule_files: Mapping[str, Mapping[str, str | Path]],
) -> None:
    """Reject a malformed payload before any schedule run exists (engine bugs: ValueError)."""
    if not labels:
        raise ValueError("finish_backtest needs at least one schedule in schedule_params")
    frames = {
        "metrics": (metrics, METRIC_COLUMNS), "seed_mean_metrics": (seed_mean, SEED_MEAN_COLUMNS),
        "aggregates": (aggregates, AGGREGATE_COLUMNS), "predictions": (predictions, PREDICTION_COLUMNS),
        "training": (training, TRAINING_COLUMNS),
    }
    for name, (frame, columns) in frames.items():
        missing = [column for column in columns if column not in frame.columns]
        if missing:
            raise ValueError(f"{name} lacks columns {missing}; it has {list(frame.columns)}")
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
    unknown = set(schedule_files) - set(labels)
    if unknown:
        raise ValueError(f"schedule_files has schedules {sorted(unknown)} missing from schedule_params")
    _check_files("parent_files", parent_files, PARENT_TABLES)
    for label, files in schedule_files.items():
        _check_files(f"schedule_files[{label!r}]", files, SCHEDULE_TABLES)


def _check_files(where: str, files: Mapping[str, str | Path], reserved: Sequence[str]) -> None:
    for name, path in files.items():
        if not name or name in reserved or name.startswith(("/", "..")) or os.path.normpath(name) != name:
            raise ValueError(f"{where}: artifact name {name!r} is reserved for a table or not a relative path")
        if not Path(path).exists():
            raise ValueError(f"{where}: {name!r} names {path}, which does not exist")


def rows(frame: pd.DataFrame, label: str) -> pd.DataFrame:
    """One schedule's rows, without the ``schedule`` column."""
    return frame[frame["schedule"] == label].drop(columns="schedule").reset_index(drop=True)


@contextmanager
def staging() -> Iterator[Path]:
    """A temporary folder whose files become one run's artifacts in one ``log_artifacts`` call."""
    with tempfile.TemporaryDirectory(prefix="harness-mlflow-") as folder:
        yield Path(folder)


def write_schedule_tables(folder: Path, frames: Mapping[str, pd.DataFrame], lr: np.ndarray) -> None:
    """A schedule run's tables: ``frames`` holds its rows (no ``schedule`` column) of ``metrics``,
    ``seed_mean_metrics`` and each of :data:`FRAMES`."""
    np.save(folder / "lr_curve.npy", np.asarray(lr, dtype=float))
    per_seed, seed_mean = frames["metrics"], frames["seed_mean_metrics"]
    tidy = pd.concat(
        [per_seed.astype({"seed": "Int64"}), seed_mean.assign(seed=pd.NA).astype({"seed": "Int64"})],
        ignore_index=True,
    )[["window", "seed", "metric", "value"]]
    tidy.to_parquet(folder / "window_metrics.parquet", index=False)
    for name in FRAMES:
        frames[name].to_parquet(folder / f"{name}.parquet", index=False)


def write_parent_tables(folder: Path, config: Mapping[str, Any], summary: pd.DataFrame) -> None:
    """The parent run's tables: the config as YAML and the summary with a plain index."""
    (folder / "config.yaml").write_text(yaml.safe_dump(dict(config), sort_keys=False))
    plain = summary if isinstance(summary.index, pd.RangeIndex) else summary.reset_index()
    plain.to_csv(folder / "summary.csv", index=False)


def add_files(folder: Path, files: Mapping[str, str | Path]) -> None:
    """Copy each local file or folder into ``folder`` under its artifact name (may contain ``/``)."""
    for name, source in files.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if Path(source).is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copyfile(source, target)


# --- reading back ------------------------------------------------------------------------------


def read_schedule(client: MlflowClient, run: Run, folder: Path) -> dict[str, Any]:
    """One child run's share of the payload, with its ``schedule`` column restored."""
    label = run.data.tags["schedule"]
    run_id = run.info.run_id
    tidy = pd.read_parquet(download(client, run_id, "window_metrics.parquet", folder))
    is_mean = tidy["seed"].isna()
    per_seed = tidy[~is_mean].astype({"seed": "int64"})
    seed_mean = tidy[is_mean].drop(columns="seed")
    window_names = set(seed_mean["metric"])
    aggregates = pd.DataFrame(
        [(label, name, value) for name, value in run.data.metrics.items() if name not in window_names],
        columns=list(AGGREGATE_COLUMNS),
    )
    schedule_params = unflatten({
        key[len("schedule."):]: value for key, value in run.data.params.items() if key.startswith("schedule.")
    })
    return {
        "label": label,
        "run_id": run_id,
        "schedule_params": schedule_params,
        "metrics": _with_schedule(per_seed, label, METRIC_COLUMNS),
        "seed_mean_metrics": _with_schedule(seed_mean, label, SEED_MEAN_COLUMNS),
        "aggregates": aggregates,
        **{name: _with_schedule(pd.read_parquet(download(client, run_id, f"{name}.parquet", folder)), label, columns)
           for name, columns in FRAMES.items()},
        "lr_curve": np.load(download(client, run_id, "lr_curve.npy", folder)),
    }


def _with_schedule(frame: pd.DataFrame, label: str, columns: Sequence[str]) -> pd.DataFrame:
    """Put the ``schedule`` column back; canonical columns first, any extra ones after."""
    frame = frame.assign(schedule=label).reset_index(drop=True)
    return frame[[*columns, *[c for c in frame.columns if c not in columns]]]


def download(client: MlflowClient, run_id: str, artifact: str, folder: Path) -> Path:
    """Download one artifact (file or folder) of the run into ``folder``, without progress bars."""
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
