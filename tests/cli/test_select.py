"""`harness select` as a user runs it: `harness run` then `harness select EXP --register NAME`
in subprocesses, read back from the real MLflow store; bad input as one line and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml
from mlflow import MlflowClient

from harness import cli, tracking
from harness.backtest import plan
from harness.backtest.planning import production_window
from harness.backtest.window import Start, WindowTrainer
from tests.conftest import ROOT, small_config

EXPERIMENT = "select-cli"


@pytest.fixture(scope="module")
def backtest(tmp_path_factory):
    """A finished small backtest (11 windows, 2 schedules x 2 seeds) in its own store."""
    tmp = tmp_path_factory.mktemp("select")
    store = tmp / "mlruns"
    raw = small_config(tmp, experiment=EXPERIMENT, tracking={"uri": str(store)}, training={"epochs": 3, "seeds": 2},
                     windows={"train": 252, "test": 21, "purge": 5})
    path = tmp / "small.yaml"
    path.write_text(yaml.safe_dump(raw))

    def run(*args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "HARNESS_OFFLINE": "1", "MLFLOW_TRACKING_URI": str(store)}
        return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)

    done = run("run", str(path), "--no-progress")
    assert done.returncode == 0, done.stderr
    # store from $MLFLOW_TRACKING_URI; --force: a 3-epoch model need not beat the HAR-RV baseline to be registered
    selected = run("select", EXPERIMENT, "--register", "spx-vol", "--force")
    return {"store": tracking.resolve_store(store), "select": selected}


@pytest.mark.slow
def test_select_prints_the_report_and_registers_the_champion(backtest):
    done = backtest["select"]
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no MLflow chatter
    store = backtest["store"]
    loaded = tracking.load_backtest(store, EXPERIMENT)
    client = MlflowClient(store.tracking_uri)
    parent = client.get_run(loaded.run_id)
    chosen = parent.data.tags["selected_schedule"]
    assert chosen in {"constant", "cosine(warmup=0.1)"}
    assert f"**Selected: `{chosen}`**" in done.stdout and f"selected schedule: {chosen}" in done.stdout
    for needle in ("model confidence set", "Diebold", "PBO = **", "seed ensemble", "version 1, alias `champion`"):
        assert needle in done.stdout
    artifacts = {a.path for a in client.list_artifacts(loaded.run_id)}
    assert {"selection.md", "selection_losses.png", "selection_windows.png"} <= artifacts

    version = client.get_model_version_by_alias("spx-vol", "champion")
    assert str(version.version) == "1"
    production_run = client.get_run(version.run_id)
    assert production_run.data.tags["kind"] == "production"
    assert production_run.data.tags["source_backtest"] == loaded.run_id
    assert production_run.data.params["schedule"] == chosen

    # the champion reproduces the backtest's own seed-mean predictions (fresh boundary) of the chosen schedule
    # trained on the production window: the newest train rows, ending at the data's last labelled row
    the_plan = plan(loaded.config)
    window = production_window(the_plan)
    assert window.train_rows[-1] == len(the_plan.table.X) - 1
    assert version.tags["train_end"] == f"{the_plan.dates[-1]:%Y-%m-%d}"
    rows = the_plan.windows[-1].test_rows  # inputs to predict: the last backtest window's test slice
    done = WindowTrainer(loaded.config, the_plan.strategy, the_plan.table).train(
        [replace(window, test_rows=rows)], [Start()], {})[0]
    X = torch.as_tensor(the_plan.table.X.to_numpy(np.float64)[rows])
    predictions = done.predictions
    own = predictions[predictions["schedule"] == chosen]
    expected = own.groupby("date", sort=True)["prediction"].mean().to_numpy()
    with torch.no_grad():
        served = tracking.load_registered_model(store, "spx-vol")(X).numpy()
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_select_can_rerun_with_another_rule_without_registering(backtest, capsys):
    store = backtest["store"]
    code = cli.main(["select", EXPERIMENT, "--tracking-uri", store.tracking_uri, "--rule", "best_pooled",
                     "--metric", "mae", "--alpha", "0.2"])
    out = capsys.readouterr().out
    assert code == 0
    assert "rule `best_pooled`" in out and "Metric: **mae**" in out and "80% model confidence set" in out
    loaded = tracking.load_backtest(store, EXPERIMENT)
    summary = loaded.aggregates.query("metric == 'pooled_mae'").set_index("schedule")["value"]
    tags = MlflowClient(store.tracking_uri).get_run(loaded.run_id).data.tags
    assert tags["selected_schedule"] == summary.idxmin() and tags["selection_rule"] == "best_pooled"


def test_select_on_a_store_without_the_experiment_is_one_line_and_exit_2(cli, tmp_path):
    """No backtest needed: a bad model name is refused before the store is opened, an unknown
    experiment once it is."""
    done = cli("select", EXPERIMENT, "--register", "a/b", "--tracking-uri", str(tmp_path / "never"))
    assert done.returncode == 2 and done.stdout == "" and not (tmp_path / "never").exists()
    assert done.stderr.startswith("harness: error: --register 'a/b': a model name") and done.stderr.count("\n") == 1
    done = cli("select", "nope", "--tracking-uri", str(tmp_path / "empty"))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("harness: error: no experiment or backtest run 'nope'") and done.stderr.count("\n") == 1


@pytest.mark.slow
@pytest.mark.parametrize("argv, message", [
    (["nope"], "no experiment or backtest run 'nope'"),
    (["0123456789abcdef0123456789abcdef"], "no experiment or backtest run '0123456789abcdef0123456789abcdef'"),
    ([EXPERIMENT, "--metric", "rsme"], "selection.metric: unknown metric 'rsme' (did you mean 'rmse'?)"),
    ([EXPERIMENT, "--rule", "best"], "selection.rule: must be one of"),
    ([EXPERIMENT, "--alpha", "1.5"], "selection.alpha: must be < 1"),
    ([EXPERIMENT, "--register", "a/b"], "--register 'a/b': a model name"),
    (["empty-experiment"], "experiment 'empty-experiment' has no finished backtest; run `harness run` first"),
])
def test_bad_input_is_one_line_and_exit_2(backtest, capsys, argv, message):
    store = backtest["store"]
    tracking.ensure_experiment(store, "empty-experiment")
    code = cli.main(["select", *argv, "--tracking-uri", store.tracking_uri])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
