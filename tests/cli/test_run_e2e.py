"""`harness run` end to end as a user runs it, a real MLflow store read back: in a subprocess where
the fresh interpreter matters (MLflow's start-up logging, a user's module imported from the cwd),
else in-process through ``main``."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow import MlflowClient

from harness.backtest import plan
from harness.config import load_config
from tests.conftest import ROOT, small_config


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid_and_plan(path: Path):
    config = load_config(path)
    assert len(plan(config).windows) >= 10


@pytest.mark.slow
def test_run_logs_a_parent_and_one_child_per_schedule(run_cli, tmp_path):
    store = tmp_path / "mlruns"
    raw = small_config(tmp_path, tracking={"uri": str(store)})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    done = run_cli("run", str(path), "--no-progress")
    assert done.returncode == 0, done.stderr
    metric = plan(load_config(path)).config.selection.metric  # the strategy's default: qlike for volatility
    assert metric == "qlike"
    assert f"ranking by pooled {metric}" in done.stdout
    assert "INFO" not in done.stderr  # MLflow's start-up chatter is off

    uri = f"sqlite:///{store}/mlflow.db"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        runs = mlflow.search_runs(experiment_names=["test-small"])
    finally:
        mlflow.set_tracking_uri(previous)
    parents = runs[runs["tags.kind"] == "backtest"]
    children = runs[runs["tags.kind"] == "schedule"]
    assert len(parents) == 1 and len(children) == 2
    assert set(runs["status"]) == {"FINISHED"}
    parent_id = parents["run_id"].iloc[0]
    assert set(children["tags.mlflow.parentRunId"]) == {parent_id}
    assert set(children["tags.schedule"]) == {"constant", "cosine(warmup=0.1)"}
    config = load_config(path)
    assert parents["tags.config_hash"].iloc[0] == config.fingerprint()
    assert parents["params.training.epochs"].iloc[0] == "4"

    client = MlflowClient(tracking_uri=uri)
    n_windows = len(plan(config).windows)
    child = children["run_id"].iloc[0]
    history = client.get_metric_history(child, "rmse")
    assert sorted(m.step for m in history) == list(range(n_windows))
    assert "metrics.pooled_rmse" in children and children["metrics.pooled_rmse"].notna().all()
    artifacts = {a.path for a in client.list_artifacts(child)}
    assert {"lr_curve.png", "window_metrics.png", "predictions.parquet"} <= artifacts
    assert {"config.yaml", "summary.csv"} <= {a.path for a in client.list_artifacts(parent_id)}

    # the run ends with the selection of `harness select`, printed and logged to the parent
    selected = parents["tags.selected_schedule"].iloc[0]
    assert selected in {"constant", "cosine(warmup=0.1)"}
    assert f"selected schedule: {selected} (rule mcs_stable, metric {metric})" in done.stdout
    assert "model confidence set holds" in done.stdout
    assert {"selection.md", "selection_losses.png"} <= {a.path for a in client.list_artifacts(parent_id)}


@pytest.mark.slow
def test_run_without_a_config_runs_the_default_backtest_with_overrides(cli, tmp_path):
    """`harness run` alone (what `make run` does) takes the default config; --set takes YAML values,
    dates included, and shrinks it here to a few windows."""
    done = cli("run", "--no-progress", "--set", "data.start=2016-06-01", "--set", "windows.train=252", "--set", "training.epochs=1",
               "--set", "training.seeds=1", "--set", "schedules=[constant, cosine]")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("spx-vol-schedules: ")
    assert "selected schedule: " in done.stdout
    assert (tmp_path / "mlruns" / "mlflow.db").exists()


@pytest.mark.slow
def test_tracking_uri_option_overrides_the_config(cli, tmp_path):
    raw = small_config(tmp_path, tracking={"uri": str(tmp_path / "ignored")},
                       windows={"train": 400, "test": 42, "purge": 5}, training={"epochs": 1, "seeds": 1})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    done = cli("run", str(path), "--no-progress", "--tracking-uri", str(tmp_path / "chosen"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "chosen" / "mlflow.db").exists() and not (tmp_path / "ignored").exists()


@pytest.mark.slow
def test_batch_run_of_several_configs_ends_with_one_summary(cli, tmp_path):
    paths = []
    for name, schedules in (("a", ["constant"]), ("b", ["constant", {"name": "cosine", "min_lr_ratio": [0.0, 0.1]}])):
        raw = small_config(tmp_path, experiment=f"batch-{name}", schedules=schedules,
                           training={"epochs": 1, "seeds": 1}, windows={"train": 400, "test": 42, "purge": 5})
        paths.append(tmp_path / f"{name}.yaml")
        paths[-1].write_text(yaml.safe_dump(raw))
    done = cli("run", *map(str, paths), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "batch of 2 backtests" in done.stdout
    assert "batch-a" in done.stdout.split("batch of 2")[1] and "batch-b" in done.stdout.split("batch of 2")[1]
    assert "cosine(min_lr_ratio=0.1)" in done.stdout  # the grid expanded into its own schedule run


def test_batch_run_validates_every_config_before_training(cli, tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(small_config(tmp_path)))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(small_config(tmp_path, training={"lr": -1})))
    done = cli("run", str(good), str(bad), "--no-progress")
    assert done.returncode == 2 and "training.lr" in done.stderr
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()


@pytest.mark.slow
def test_a_user_strategy_class_runs_from_the_repository_root(run_cli, tmp_path):
    done = run_cli("plan", "examples/range_vol.yaml")
    assert done.returncode == 0, done.stderr
    assert "examples.range_vol:RangeVol" in done.stdout and "rolling windows" in done.stdout
