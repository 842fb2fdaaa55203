"""A budget x schedule backtest through ``harness run`` and ``harness select --register``: one nested
run per candidate tagged with its budget and LR, the undertrained note in the run's output and the
report, the training-curve figures, and the production model at the chosen budget and LR."""

from __future__ import annotations

import pytest
import yaml
from mlflow import MlflowClient

from harness import tracking
from tests.conftest import small_config

EXPERIMENT = "budget-grid"


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """One torch thread, as the rest of the suite."""


@pytest.mark.slow
def test_a_budget_grid_run_logs_one_tagged_run_per_candidate_and_registers_the_chosen_budget(cli, tmp_path):
    store = tmp_path / "mlruns"
    raw = small_config(tmp_path, experiment=EXPERIMENT, tracking={"uri": str(store)},
                       training={"epochs": [1, 6], "lr": [1e-3, 3e-3], "seeds": 2})
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(raw))
    done = cli("run", str(path), "--no-progress")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "5 windows x 2 schedules x 2 budgets [1, 6] x 2 LRs [0.001, 0.003] x 2 seeds" in out
    assert "pooled qlike by schedule and training budget" in out and "1 epochs  6 epochs" in out
    assert "`constant@e1,lr1e-3`: undertrained: 10 of 10 members" in out
    assert "the budget is too small to judge decay schedules" in out
    assert "chosen candidate: " in out

    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    children = {run.data.tags["schedule"]: run for run in runs if run.data.tags.get("kind") == "schedule"}
    assert len(children) == 8
    child = children["cosine(warmup=0.1)@e6,lr3e-3"]
    assert {key: child.data.tags[key] for key in ("epochs", "lr", "base_schedule")} == {
        "epochs": "6", "lr": "0.003", "base_schedule": "cosine(warmup=0.1)"}
    assert child.data.params["training.epochs"] == "6" and child.data.params["training.lr"] == "0.003"
    assert child.data.metrics["still_improving"] <= 1.0
    assert children["constant@e1,lr1e-3"].data.metrics["still_improving"] == 1.0
    artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert "training_curve.png" in artifacts
    parent = next(run for run in runs if run.data.tags.get("kind") == "backtest")
    assert "training_curves.png" in {a.path for a in client.list_artifacts(parent.info.run_id)}

    backtest = tracking.load_backtest(tracking.resolve_store(str(store)), parent.info.run_id)
    assert backtest.labels == list(children) or set(backtest.labels) == set(children)
    assert backtest.undertrained()["flagged"].sum() >= 4  # every 1-epoch candidate

    selected = cli("select", EXPERIMENT, "--tracking-uri", str(store), "--register", "grid-model", "--force")
    assert selected.returncode == 0, selected.stderr
    assert "## Training budget" in selected.stdout and "undertrained" in selected.stdout
    parent = client.get_run(parent.info.run_id)
    chosen = parent.data.tags["selected_schedule"]
    epochs, lr = parent.data.tags["selected_epochs"], parent.data.tags["selected_lr"]
    assert chosen.split("@")[1] == f"e{epochs},lr{'1e-3' if lr == '0.001' else '3e-3'}"
    version = client.get_model_version_by_alias("grid-model", "champion")
    assert version.tags["selected_schedule"] == chosen
    assert (version.tags["epochs"], version.tags["lr"]) == (epochs, lr)
    production = client.get_run(version.run_id)
    assert production.data.params["epochs"] == epochs and production.data.params["lr"] == lr
    assert f"{epochs} epochs at base LR {lr}" in selected.stdout
