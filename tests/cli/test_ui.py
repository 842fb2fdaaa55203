"""``harness ui``: the deep link to the comparison of a backtest's schedule runs (read back from a
real store holding a tiny real backtest), the UI served on localhost, and bad input as one line."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from mlflow import MlflowClient

from harness import tracking
from harness.backtest import run_and_log
from harness.cli.render import outcome_text
from harness.config import parse_config
from tests.conftest import ROOT, small_config

EXPERIMENT = "ui-link"
START_TIMEOUT = 180  # s: the UI imports MLflow in 4 workers; on 2 busy cores that takes tens of seconds


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A finished tiny backtest (1 epoch, 1 seed, 2 schedules) in its own store, and its schedule runs."""
    tmp = tmp_path_factory.mktemp("ui")
    raw = small_config(tmp, experiment=EXPERIMENT, training={"epochs": 1, "seeds": 1})
    outcome = run_and_log(parse_config(raw), progress=False)
    store = outcome.store
    client = MlflowClient(store.tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    children = client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{outcome.run_id}' and tags.kind = 'schedule'")
    return {"outcome": outcome, "store": store, "folder": tmp / "mlruns", "experiment_id": experiment.experiment_id,
            "children": {run.info.run_id for run in children}}


def _parse(link: str) -> tuple[str, dict[str, str]]:
    """``(base, query)`` of a ``<base>/#/compare-runs?<query>`` link."""
    base, _, route = link.partition("/#/compare-runs?")
    assert route, link
    return base, dict(urllib.parse.parse_qsl(route, strict_parsing=True))


@pytest.mark.slow
def test_the_link_names_exactly_the_schedule_runs_in_the_model_training_view(logged):
    assert len(logged["children"]) == 2
    link = tracking.compare_link(logged["store"], EXPERIMENT)
    base, query = _parse(link)
    assert base == "http://127.0.0.1:5000"
    assert set(query) == {"runs", "experiments", "workflowType"}
    assert query["workflowType"] == "machine_learning"
    assert json.loads(query["experiments"]) == [logged["experiment_id"]]
    runs = json.loads(query["runs"])
    assert len(runs) == len(set(runs)) and set(runs) == logged["children"]
    assert logged["outcome"].run_id not in runs  # the parent is not compared with its schedules
    # the same comparison from the parent run id, from the whole store, and on another host/port
    assert tracking.compare_link(logged["store"], logged["outcome"].run_id) == link
    assert tracking.compare_link(logged["store"]) == link
    assert tracking.compare_link(logged["store"], EXPERIMENT, "0.0.0.0", 5123).startswith(
        "http://127.0.0.1:5123/#/compare-runs?")


@pytest.mark.slow
def test_the_experiment_opens_in_the_model_training_layout(logged):
    found = MlflowClient(logged["store"].tracking_uri).get_experiment_by_name(EXPERIMENT)
    assert found.tags["mlflow.experimentKind"] == "custom_model_development"


@pytest.mark.slow
def test_harness_run_ends_with_the_command_and_the_link(logged):
    text = outcome_text(logged["outcome"])
    link = tracking.compare_link(logged["store"], EXPERIMENT)
    line = next(line for line in text.splitlines() if line.startswith("open the comparison:"))
    assert line == f"open the comparison: harness ui {EXPERIMENT} --tracking-uri {logged['folder']}  (then {link})"
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --backend-store-uri sqlite:///" in text


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


@pytest.mark.slow
def test_harness_ui_serves_the_ui_on_localhost_until_stopped(logged, tmp_path):
    port = _free_port()
    log = tmp_path / "ui.log"
    env = {**os.environ, "HARNESS_OFFLINE": "1"}
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "harness", "ui", EXPERIMENT, "--tracking-uri", str(logged["folder"]),
             "--port", str(port)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, status = time.monotonic() + START_TIMEOUT, None
        while time.monotonic() < deadline and process.poll() is None:
            status = _status(f"http://127.0.0.1:{port}/")
            if status == 200:
                break
            time.sleep(1)
        assert status == 200, f"no HTTP 200 from the UI within {START_TIMEOUT} s:\n{log.read_text()[-3000:]}"
        assert process.poll() is None  # in the foreground until stopped
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # as Ctrl-C: the UI stops, exit status 0
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert code == 0, log.read_text()[-3000:]
    lines = log.read_text().splitlines()
    link = tracking.compare_link(logged["store"], EXPERIMENT, "127.0.0.1", port)
    assert f"open the comparison: {link}" in lines
    assert lines[0].startswith(f"{EXPERIMENT}: backtest {logged['outcome'].run_id}, 2 schedule runs")
    assert _status(f"http://127.0.0.1:{port}/") is None  # the UI's workers stopped with it


# --- bad input: one line, exit 2 (in-process) ----------------------------------------------------


def _one_line_error(result, words: str) -> None:
    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("harness: error: ") and words in lines[0], result.stderr


def test_no_store_is_one_line_and_creates_nothing(cli, tmp_path):
    _one_line_error(cli("ui"), "no tracking store at")  # $MLFLOW_TRACKING_URI: tmp_path/mlruns, absent
    _one_line_error(cli("ui", "--tracking-uri", str(tmp_path / "elsewhere")), "mlflow.db does not exist")
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "elsewhere").exists()


@pytest.fixture(scope="module")
def unfinished(tmp_path_factory):
    """A store whose only backtest never finished (its parent run is still RUNNING)."""
    store = tracking.resolve_store(tmp_path_factory.mktemp("unfinished") / "mlruns")
    tracking.start_backtest(store, "half", run_name="half", config={"experiment": "half"}, tags={})
    tracking.ensure_experiment(store, "empty")
    return store


def test_unknown_experiment_is_one_line(cli, unfinished):
    _one_line_error(cli("ui", "nope", "--tracking-uri", str(unfinished.folder)),
                    "no experiment or backtest run 'nope'")


@pytest.mark.parametrize("experiment", ["half", "empty"])
def test_no_finished_backtest_is_one_line(cli, unfinished, experiment):
    _one_line_error(cli("ui", experiment, "--tracking-uri", str(unfinished.folder)),
                    f"experiment '{experiment}' has no finished backtest")
    _one_line_error(cli("ui", "--tracking-uri", str(unfinished.folder)), "no finished backtest in sqlite:///")


def test_a_bad_port_is_one_line(cli, unfinished):
    _one_line_error(cli("ui", "--port", "70000", "--tracking-uri", str(unfinished.folder)),
                    "--port: must be between 1 and 65535, got 70000")


@pytest.mark.slow
def test_a_port_in_use_is_one_line(cli, logged):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        _one_line_error(cli("ui", EXPERIMENT, "--tracking-uri", str(logged["folder"]), "--port", str(port)),
                        f"cannot serve the UI on 127.0.0.1:{port}")
