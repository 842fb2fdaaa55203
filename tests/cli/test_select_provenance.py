"""`harness select` says which backtest it took; with backtests of different configs in one
experiment it lists them and asks for a run id (unless --latest); `--register` refuses when no
schedule beats the baseline unless `--force`, and the registered version records its train span."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from harness import tracking
from harness.backtest import run_and_log
from harness.backtest.planning import plan
from harness.config import parse_config
from harness.evaluation import selection
from tests.conftest import small_config

EXPERIMENT = "select-provenance"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backtests(tmp_path_factory):
    """Two finished tiny backtests of different configs (test slice 42 vs 63 rows) in one experiment."""
    tmp = tmp_path_factory.mktemp("provenance")
    store_folder = tmp / "mlruns"
    runs = []
    for test in (42, 63):
        config = parse_config(small_config(tmp, experiment=EXPERIMENT, tracking={"uri": str(store_folder)},
                                           training={"epochs": 1, "seeds": 2}, windows={"test": test}))
        outcome = run_and_log(config, progress=False)
        runs.append({"run_id": outcome.run_id, "config": config, "config_hash": config.fingerprint(),
                     "n_windows": outcome.backtest.n_windows})
    store = tracking.resolve_store(store_folder)
    return {"store": store, "uri": store.tracking_uri, "older": runs[0], "newer": runs[1],
            "client": MlflowClient(store.tracking_uri)}


def end_time(client: MlflowClient, run_id: str) -> str:
    return pd.Timestamp(client.get_run(run_id).info.end_time, unit="ms", tz="UTC").isoformat(timespec="seconds")


def test_an_experiment_with_different_configs_lists_them_and_asks_for_a_run_id(cli, backtests):
    done = cli("select", EXPERIMENT, "--tracking-uri", backtests["uri"])
    assert done.returncode == 2
    for run in (backtests["older"], backtests["newer"]):
        line = next(line for line in done.stdout.splitlines() if run["run_id"] in line)
        assert run["config_hash"] in line and end_time(backtests["client"], run["run_id"]) in line
        assert f"test {run['config'].windows.test}" in line and "train 252" in line
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"harness: error: experiment '{EXPERIMENT}' holds finished backtests of "
                                  "different configs")
    assert "run id" in done.stderr and "--latest" in done.stderr
    assert "**Selected" not in done.stdout  # no selection was made


def test_latest_takes_the_newest_and_says_what_it_took(cli, backtests):
    done = cli("select", EXPERIMENT, "--latest", "--tracking-uri", backtests["uri"])
    assert done.returncode == 0, done.stderr
    newer = backtests["newer"]
    first = done.stdout.splitlines()[0]
    assert first == (f"backtest: parent run {newer['run_id']} of experiment '{EXPERIMENT}', config_hash "
                     f"{newer['config_hash']}, {newer['n_windows']} windows, finished "
                     f"{end_time(backtests['client'], newer['run_id'])}")
    assert done.stdout.index(first) < done.stdout.index("**Selected")  # before the report


def test_a_run_id_always_works(cli, backtests):
    older = backtests["older"]
    done = cli("select", older["run_id"], "--tracking-uri", backtests["uri"])
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith(f"backtest: parent run {older['run_id']} ")
    assert f"config_hash {older['config_hash']}, {older['n_windows']} windows, finished " in first
    assert backtests["client"].get_run(older["run_id"]).data.tags["selected_schedule"] in done.stdout


def test_force_without_register_is_one_line_and_exit_2(cli, backtests):
    done = cli("select", backtests["older"]["run_id"], "--force", "--tracking-uri", backtests["uri"])
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("harness: error: --force only applies with --register") and \
        done.stderr.count("\n") == 1


def test_register_refuses_when_nothing_beats_the_baseline_unless_forced(cli, backtests, monkeypatch):
    # The verdict logic in harness.evaluation.selection is being written elsewhere right now, so this
    # test makes the situation by wrapping select() to report that no schedule beats the baseline;
    # only the CLI's branch on report.beats_baseline is under test here.
    real = selection.select
    monkeypatch.setattr(selection, "select",
                        lambda *a, **k: dataclasses.replace(real(*a, **k), beats_baseline=False))
    older, client = backtests["older"], backtests["client"]
    done = cli("select", older["run_id"], "--register", "no-edge", "--tracking-uri", backtests["uri"])
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "no schedule beats the baseline" in done.stderr and "--force" in done.stderr
    report = real(tracking.load_backtest(backtests["store"], older["run_id"]))
    assert f"'{report.baseline}'" in done.stderr
    with pytest.raises(MlflowException):  # nothing trained, nothing registered
        client.get_registered_model("no-edge")
    assert "## Production model" not in done.stdout

    done = cli("select", older["run_id"], "--register", "no-edge", "--force", "--tracking-uri", backtests["uri"])
    assert done.returncode == 0, done.stderr
    assert "## Production model" in done.stdout and "--force" in done.stdout
    version = client.get_model_version_by_alias("no-edge", "champion")
    assert version.tags["beats_baseline"] == "false"
    the_plan = plan(older["config"])
    assert version.tags["train_end"] == f"{the_plan.dates[-1]:%Y-%m-%d}"  # the data's last labelled row
    assert version.tags["train_rows"] == "252"
    assert version.tags["train_start"] == f"{the_plan.dates[len(the_plan.dates) - 252]:%Y-%m-%d}"
    assert version.tags["source_backtest"] == older["run_id"]
    assert version.tags["config_hash"] == older["config_hash"]
    params = client.get_run(version.run_id).data.params
    assert (params["train_start"], params["train_end"]) == (version.tags["train_start"], version.tags["train_end"])


def test_register_tags_the_version_with_the_verdict(cli, backtests):
    """Whatever the real verdict is, the version tag says it (registered with --force so it always registers)."""
    newer, client = backtests["newer"], backtests["client"]
    done = cli("select", newer["run_id"], "--register", "verdict", "--force", "--tracking-uri", backtests["uri"])
    assert done.returncode == 0, done.stderr
    report = selection.select(tracking.load_backtest(backtests["store"], newer["run_id"]))
    version = client.get_model_version_by_alias("verdict", "champion")
    assert version.tags["beats_baseline"] == str(report.beats_baseline).lower()
    assert version.tags["train_end"] == f"{plan(newer['config']).dates[-1]:%Y-%m-%d}"
