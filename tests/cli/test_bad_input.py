"""The bad-input contract (design section 12), as a user meets it: each case of the table through
``harness.cli.main`` in-process (the fast tier), and a subset (``SUBPROCESS``) as ``harness``
subprocesses (slow). Add a row to ``CASES`` for every new way to get input wrong, and to ``READ``
for every input that looks wrong but must be read.

Every bad input gives exactly one line on stderr naming the problem and the fix, exit status 2 and
no traceback; it leaves no run RUNNING (a run that had started is FAILED) and leaves the results
already in the store untouched. A member that diverges is not an error: the backtest finishes.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow import MlflowClient

from harness import tracking
from harness.backtest import run_and_log
from harness.config import parse_config
from harness.data import load_prices
from harness.errors import HarnessError
from strategies.volatility_forecast import VolatilityForecast
from tests.conftest import ROOT, small_config

GOOD = "good"          # the experiment of the backtest run before all the bad ones
DELETED = "deleted-experiment"


class NoBaseline(VolatilityForecast):
    """A user strategy that refuses its first window: the error comes from a worker, mid-run."""

    def baseline(self, train, test):
        raise HarnessError("strategy.params: this baseline needs 500 train rows; raise windows.train")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again when the socket is


# (id, config: sections merged into the small config, a raw YAML text, or None for no file;
#  extra CLI args; words expected in the one stderr line). {tmp} is a folder with the files below.
CASES = [
    # config
    ("missing-config", None, ["{tmp}/does-not-exist.yaml"], "does-not-exist.yaml does not exist"),
    ("invalid-yaml", "training: {epochs: [1,\n", [], "is not valid YAML at line"),
    ("yaml-not-a-mapping", "- run\n- fast\n", [], "must hold a mapping of sections"),
    ("unknown-key", {"trainig": {"epochs": 3}}, [], "trainig: unknown key (did you mean 'training'?)"),
    ("wrong-type", {"training": {"epochs": "five"}}, [], "training.epochs: must be an integer"),
    ("negative-train", {"windows": {"train": -5}}, [], "windows.train: must be > 0, got -5"),
    ("unreadable-size", {"windows": {"train": "3X"}}, [], "windows.train: cannot read '3X' as a size"),
    ("lr-zero", {"training": {"lr": 0}}, [], "training.lr: must be > 0"),
    ("bad-set", None, ["--set", "training.epochs"], "expected KEY=VALUE"),
    ("zero-workers", {"execution": {"workers": 0}}, [], "execution.workers: must be > 0, got 0"),
    ("validation-leaves-nothing", {"training": {"validation": 0.999}}, [], "training.validation: 0.999 leaves no rows"),
    ("exponent-in-an-integer", "training: {epochs: 1e-2}\n", [], "training.epochs: must be an integer, got 0.01"),
    ("delimiter-not-one-character", {"data": {"delimiter": ";;"}}, [], "data.delimiter: must be one separator character"),
    ("periods-per-year-zero", {"data": {"periods_per_year": 0}}, [], "data.periods_per_year: must be > 0, got 0"),
    # schedules
    ("unknown-schedule", {"schedules": ["cosin"]}, [], "did you mean 'cosine'"),
    ("bad-schedule-param", {"schedules": [{"name": "step", "gamma": -1}]}, [], "gamma"),
    ("duplicate-schedule", {"schedules": ["cosine", "cosine"]}, [], "lists cosine twice"),
    ("no-schedule", {"schedules": []}, [], "schedules: must list at least one schedule"),
    ("schedule-free-with-sgd", {"schedules": ["schedule_free"], "training": {"optimizer": "sgd"}}, [],
     "schedule_free is an AdamW variant"),
    # strategy
    ("unknown-strategy", {"strategy": {"name": "volatility_forecst", "params": {}}}, [],
     "did you mean 'volatility_forecast'"),
    ("unknown-strategy-param", {"strategy": {"name": "volatility_forecast", "params": {"lookbak": 22}}}, [],
     "did you mean 'lookback'"),
    ("missing-plugin", {"strategy": {"name": "nopkg.mod:Strategy", "params": {}}}, [], "cannot import module 'nopkg.mod'"),
    ("plugin-fails-mid-run", {"strategy": {"name": "tests.cli.test_bad_input:NoBaseline", "params": {}},
                              "execution": {"executor": "process", "workers": 2}}, [],
     "this baseline needs 500 train rows"),
    # data
    ("missing-data-file", {"data": {"path": "nope.csv"}}, [], "nope.csv: not found"),
    ("empty-csv", {"data": {"path": "{tmp}/empty.csv"}}, [], "empty.csv: empty file"),
    ("csv-without-dates", {"data": {"path": "{tmp}/nodate.csv"}}, [], "no date column"),
    ("no-rows-in-range", {"data": {"start": "2030-01-01", "end": None}}, [], "no rows in [2030-01-01"),
    ("windows-too-long", {"windows": {"train": 100000}}, [], "100000"),
    ("short-purge", {"windows": {"purge": 1}}, [], "windows.purge: 1 is shorter than the label horizon 5"),
    ("delimiter-left-open", {"data": {"path": "{tmp}/two-delimiters.csv"}}, [],
     "fields could be separated by ';' and '|'; set data.delimiter"),
    ("decimal-left-open", {"data": {"path": "{tmp}/grouped.csv"}}, [],
     "'1,234' could be a decimal or a thousands separator; set data.decimal"),
    ("date-order-left-open", {"data": {"path": "{tmp}/ambiguous-dates.csv"}}, [],
     "read both day first (2010-02-01) and month first (2010-01-02); set data.dayfirst: true or false"),
    ("day-first-dates-read-month-first", {"data": {"path": "{tmp}/day-first.csv", "dayfirst": False}}, [],
     "unparseable date '13/01/2010' in column 'date' (row 8); write all dates in one format, e.g. YYYY-MM-DD "
     "(data.dayfirst: false is set)"),
    ("semicolons-not-read", {"data": {"path": "{tmp}/semicolon.csv", "delimiter": ","}}, [],
     "set data.delimiter if the fields are separated by ';'"),
    ("price-spike-without-repair", {"data": {"path": "{tmp}/spike.csv", "repair": False}}, [],
     "a price spike: 'close' jumps from"),
    # tracking
    ("tracking-folder-is-a-file", {"tracking": {"uri": "{tmp}/a-file/mlruns"}}, [], "is not writable"),
    ("tracking-scheme-unknown", {"tracking": {"uri": "ftp://example.invalid/store"}}, [], "cannot open tracking store"),
    ("tracking-sqlite-two-slashes-short", {"tracking": {"uri": "sqlite:/nope.db"}}, [],
     "tracking uri 'sqlite:/nope.db' is malformed: a SQLite store is sqlite:///relative/path.db"),
    ("tracking-sqlite-no-file", None, ["--tracking-uri", "sqlite:///"], "tracking uri 'sqlite:///' names no database file"),
    ("tracking-http-no-host", {"tracking": {"uri": "http://"}}, [], "tracking uri 'http://' names no host"),
    ("tracking-http-bad-port", {"tracking": {"uri": "http://127.0.0.1:99999"}}, [], "(Port out of range 0-65535)"),
    ("tracking-http-bad-ipv6", {"tracking": {"uri": "http://[::1/store"}}, [], "(Invalid IPv6 URL)"),
    ("tracking-database-driver-missing", {"tracking": {"uri": "mysql://user@127.0.0.1:{port}/mlflow"}}, [],
     "the mysql driver is not installed"),
    ("deleted-experiment", {"experiment": DELETED}, [], f"experiment '{DELETED}' is deleted"),
    # network
    ("offline-no-cache", {"data": {"source": "yfinance", "tickers": ["^NOPE"], "cache_dir": "{tmp}/cache"}}, [],
     "network"),
    ("tracking-server-down", {"tracking": {"uri": "http://127.0.0.1:{port}"}}, [], "does not answer"),
    ("select-server-down", None, ["select", GOOD, "--tracking-uri", "http://127.0.0.1:{port}"], "does not answer"),
    ("select-malformed-uri", None, ["select", GOOD, "--tracking-uri", "sqlite:/nope.db"], "is malformed"),
    ("ray-cluster-down", {"execution": {"executor": "ray", "address": "127.0.0.1:{port}"}}, [], "execution."),
]


# The rows also run as subprocesses (the slow tier): one or more of each area, and every row where a
# fresh interpreter matters (import-time checks, workers, sockets, a library warning printed once).
SUBPROCESS = {
    "missing-config", "invalid-yaml", "unknown-key", "exponent-in-an-integer", "bad-set",
    "unknown-schedule", "schedule-free-with-sgd",
    "unknown-strategy", "missing-plugin", "plugin-fails-mid-run",
    "missing-data-file", "csv-without-dates", "windows-too-long", "short-purge", "delimiter-left-open",
    "date-order-left-open", "price-spike-without-repair",
    "tracking-folder-is-a-file", "tracking-scheme-unknown", "tracking-sqlite-two-slashes-short",
    "tracking-http-no-host", "tracking-database-driver-missing", "deleted-experiment",
    "offline-no-cache", "tracking-server-down", "select-server-down", "ray-cluster-down",
}
SUBPROCESS_CASES = [case for case in CASES if case[0] in SUBPROCESS]


def _fill(value, tmp: Path, port: int):
    if isinstance(value, str):
        return value.replace("{tmp}", str(tmp)).replace("{port}", str(port))
    if isinstance(value, dict):
        return {key: _fill(item, tmp, port) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, tmp, port) for item in value]
    return value


def _command(case, tmp: Path, store: Path, port: int) -> list[str]:
    name, config, args, _ = case
    files = tmp / name
    files.mkdir()
    if args[:1] == ["select"]:  # another command than `harness run`: the args are the whole command
        return _fill(args, tmp, port)
    command = ["run", "--no-progress"]
    if isinstance(config, str):
        (files / "c.yaml").write_text(config)
        command.append(str(files / "c.yaml"))
    elif config is not None:
        raw = small_config(files, **{"tracking": {"uri": str(store)}, **_fill(config, tmp, port)})
        (files / "c.yaml").write_text(yaml.safe_dump(raw))
        command.append(str(files / "c.yaml"))
    return command + _fill(args, tmp, port)


def _run(command: list[str], store: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HARNESS_OFFLINE": "1", "MLFLOW_TRACKING_URI": str(store)}
    return subprocess.run([sys.executable, "-m", "harness", *command], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _snapshot(store: Path) -> dict:
    """Everything the store holds of the good backtest: runs, metric histories (as text: NaN equals
    NaN), artifact bytes."""
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    experiment = client.get_experiment_by_name(GOOD)
    runs = {}
    for run in client.search_runs([experiment.experiment_id]):
        histories = {key: [(m.step, repr(m.value)) for m in client.get_metric_history(run.info.run_id, key)]
                     for key in run.data.metrics}
        runs[run.info.run_id] = (run.info.status, run.info.end_time, run.info.lifecycle_stage,
                                 run.data.params, run.data.tags, histories)
    folder = Path(experiment.artifact_location.removeprefix("file://"))
    files = {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
             for path in sorted(folder.rglob("*")) if path.is_file()}
    return {"runs": runs, "files": files}


def _bad_files(tmp: Path) -> None:
    """The files the cases name as ``{tmp}/...``."""
    (tmp / "empty.csv").write_text("")
    (tmp / "nodate.csv").write_text("a,b\n1,2\n3,4\n")
    (tmp / "a-file").write_text("not a folder")
    (tmp / "two-delimiters.csv").write_text("date;close;note|x\n2010-01-04;2;a|b\n2010-01-05;3;c|d\n")
    (tmp / "grouped.csv").write_text("date;close\n2010-01-04;1,234\n2010-01-05;1,236\n")
    (tmp / "ambiguous-dates.csv").write_text("date,close\n01/02/2010,5\n02/02/2010,6\n03/02/2010,7\n")
    prices = _small_prices()
    prices.to_csv(tmp / "day-first.csv", date_format="%d/%m/%Y", index_label="date")
    prices.to_csv(tmp / "semicolon.csv", sep=";", index_label="timestamp", columns=["adj_close"], header=["price"])
    spike = prices.copy()
    spike.iloc[100, [spike.columns.get_loc("close"), spike.columns.get_loc("adj_close")]] *= 100
    spike.to_csv(tmp / "spike.csv", index_label="date")


def _small_prices():
    """The small config's prices (S&P 500, 2010-2011), to write in other layouts."""
    return load_prices("csv", path=ROOT / "data" / "sp500.csv", start="2010-01-01", end="2011-12-31")


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """A good backtest first, then every bad input (two at a time); the store before and after."""
    tmp = tmp_path_factory.mktemp("bad")
    store = tmp / "mlruns"
    _bad_files(tmp)
    good = parse_config(small_config(tmp, experiment=GOOD, training={"epochs": 1, "seeds": 1},
                                     tracking={"uri": str(store)}))
    run_and_log(good, progress=False)
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    client.delete_experiment(client.create_experiment(DELETED))
    before = _snapshot(store)
    port = _closed_port()
    commands = [_command(case, tmp, store, port) for case in SUBPROCESS_CASES]
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = dict(zip([case[0] for case in SUBPROCESS_CASES], pool.map(lambda command: _run(command, store),
                                                                         commands)))
    return {"done": done, "before": before, "after": _snapshot(store), "store": store}


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """A store with no runs, only the deleted experiment of the ``deleted-experiment`` case."""
    store = tmp_path_factory.mktemp("empty") / "mlruns"
    client = MlflowClient(tracking.resolve_store(store).tracking_uri)
    client.delete_experiment(client.create_experiment(DELETED))
    return store


# In-process, the one case that trains (in a process pool) is the slow one.
IN_PROCESS = [pytest.param(case, id=case[0], marks=[pytest.mark.slow] if case[0] == "plugin-fails-mid-run" else [])
              for case in CASES]


@pytest.mark.parametrize("case", IN_PROCESS)
def test_a_bad_input_through_main_is_its_one_line_exit_2_and_opens_no_run(cli, tmp_path, empty_store, monkeypatch,
                                                                           case):
    """Every case through ``harness.cli.main`` in this process (the fast tier's copy of the table below)."""
    _bad_files(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(empty_store))
    done = cli(*_command(case, tmp_path, empty_store, _closed_port()))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.startswith("harness: error: ") and done.stderr.count("\n") == 1, done.stderr
    assert case[3] in done.stderr, done.stderr
    client = MlflowClient(tracking.resolve_store(empty_store).tracking_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert not [run for run in runs if run.info.status == "RUNNING"]
    for run in runs:  # only the plugin that failed mid-run opened a run, and it is FAILED
        assert (run.data.tags["kind"], run.info.status) == ("backtest", "FAILED") and case[0] == "plugin-fails-mid-run"
        client.delete_run(run.info.run_id)


def test_every_subprocess_row_is_in_the_table():
    names = [case[0] for case in CASES]
    assert len(set(names)) == len(names) and SUBPROCESS <= set(names)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "expected"), [(case[0], case[3]) for case in SUBPROCESS_CASES],
                         ids=[c[0] for c in SUBPROCESS_CASES])
def test_a_bad_input_is_one_line_on_stderr_and_exit_2(outcomes, name, expected):
    done = outcomes["done"][name]
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("harness: error: ") and expected in lines[0], lines[0]


@pytest.mark.slow
def test_bad_inputs_leave_no_run_running_and_earlier_results_untouched(outcomes):
    assert outcomes["after"] == outcomes["before"]
    client = MlflowClient(f"sqlite:///{outcomes['store']}/mlflow.db")
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments)
    assert not [run for run in runs if run.info.status == "RUNNING"]
    # Only the plugin that failed mid-run had opened a run: it is FAILED, with no schedule runs.
    others = [run for run in runs if run.info.run_id not in outcomes["before"]["runs"]]
    assert [(run.info.status, run.data.tags["kind"]) for run in others] == [("FAILED", "backtest")]


@pytest.mark.slow
def test_a_diverging_member_is_recorded_and_the_backtest_finishes(tmp_path):
    prices = load_prices("csv", path=ROOT / "data" / "sp500.csv", start="2010-01-01", end="2011-12-31")
    config = parse_config(small_config(tmp_path, training={"epochs": 2, "seeds": 1, "optimizer": "sgd", "lr": 1e3},
                                       schedules=["constant"]))
    outcome = run_and_log(config, progress=False, prices=prices)
    training = outcome.backtest.training
    assert training["diverged"].all()
    rate = outcome.backtest.aggregates.query("metric == 'divergence_rate'")["value"].to_numpy()
    np.testing.assert_array_equal(rate, [1.0])
    runs = tracking.find_runs(outcome.store, config.experiment)
    assert set(runs["status"]) == {"FINISHED"} and len(runs) == 2


# Inputs that look wrong but are right: each is read (``harness plan``, exit 0) and says nothing on
# stderr but its own ``harness: WARNING:`` lines; no library warning. (id, config as in CASES, the
# stdout that shows it was read right, the one warning expected or None.) {hash} is the small
# config's own data hash: the file was read to the very same prices.
READ = [
    ("semicolon-file", {"data": {"path": "{tmp}/good-semicolon.csv"}}, "(hash {hash})", None),
    ("tab-file", {"data": {"path": "{tmp}/good-tab.csv"}}, "(hash {hash})", None),
    ("decimal-comma-file", {"data": {"path": "{tmp}/good-decimal-comma.csv"}}, "(hash {hash})", None),
    ("day-first-file", {"data": {"path": "{tmp}/day-first.csv"}}, "(hash {hash})", None),
    ("day-first-decimal-comma-file", {"data": {"path": "{tmp}/good-european.csv"}}, "(hash {hash})", None),
    ("ambiguous-dates-settled", {"data": {"path": "{tmp}/monthly-on-the-first.csv", "dayfirst": True,
                                          "start": None, "end": None}, "windows": {"train": 2, "test": 1, "purge": 1},
                                 "strategy": {"name": "return_forecast",
                                              "params": {"lags": 1, "vol_window": 2, "momentum": [1]}}},
     "12 rows 2010-01-01 .. 2010-12-01", None),
    ("exponent-numbers", "training: {lr: 1e-3, weight_decay: 1E-5}\nselection: {alpha: 1e-1}\n"
     "strategy: {name: return_forecast, params: {cost_bps: 5e-1}}\n"
     "schedules: [{name: cosine, min_lr_ratio: 1e-2}, {name: step, gamma: 5e-1}]\n",
     "members per window 6 (2 schedules x 3 seeds)", None),
    ("empty-config", "", "25 rolling windows; members per window 24", None),
    ("price-spike-repaired", {"data": {"path": "{tmp}/spike.csv"}}, "rolling windows",
     "1 price spike (first: 'close' jumps from"),
    ("plateau-cannot-act", {"training": {"patience": 3}, "schedules": ["constant", "plateau"]}, "rolling windows",
     "schedules[1]: plateau never lowers the LR"),
]


def _read_files(tmp: Path) -> None:
    _bad_files(tmp)
    prices = _small_prices()
    prices.to_csv(tmp / "good-semicolon.csv", sep=";", index_label="date")
    prices.to_csv(tmp / "good-tab.csv", sep="\t", index_label="date")
    prices.to_csv(tmp / "good-decimal-comma.csv", sep=";", decimal=",", index_label="date")
    prices.to_csv(tmp / "good-european.csv", sep=";", decimal=",", date_format="%d.%m.%Y", index_label="Datum")
    monthly = "".join(f"01/{month:02d}/2010,{100 + month * (-1) ** month}\n" for month in range(1, 13))
    (tmp / "monthly-on-the-first.csv").write_text("date,close\n" + monthly)  # also Jan 1 to Jan 12 month first


def _read_command(case, tmp: Path) -> list[str]:
    name, config, _, _ = case
    command = _command((name, config, [], None), tmp, tmp / "mlruns", 0)
    return ["plan", *command[2:]]  # `harness plan FILE`: reads and plans, trains nothing


def _check_read(done, case, tmp: Path) -> None:
    from harness.data import fingerprint

    _, _, shows, warning = case
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert shows.replace("{hash}", fingerprint(_small_prices())) in done.stdout, done.stdout
    lines = done.stderr.splitlines()
    if warning is None:
        assert lines == [], done.stderr
    else:
        assert len(lines) == 1 and lines[0].startswith("harness: WARNING: ") and warning in lines[0], done.stderr


@pytest.mark.parametrize("case", READ, ids=[case[0] for case in READ])
def test_an_input_that_looks_wrong_but_is_right_is_read_without_a_warning(cli, tmp_path, case):
    _read_files(tmp_path)
    _check_read(cli(*_read_command(case, tmp_path)), case, tmp_path)


@pytest.mark.slow
def test_those_inputs_read_in_a_fresh_interpreter_print_no_library_warning(tmp_path):
    """The same table as subprocesses: a library warning (pandas guessing a date format, say) would be
    printed there, where pytest no longer intercepts warnings."""
    _read_files(tmp_path)
    commands = [_read_command(case, tmp_path) for case in READ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = list(pool.map(lambda command: _run(command, tmp_path / "mlruns"), commands))
    for case, result in zip(READ, done):
        _check_read(result, case, tmp_path)


def test_the_default_backtest_is_one_with_or_without_an_empty_file(cli, tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with_file, without = cli("plan", str(empty)), cli("plan")
    assert with_file.returncode == without.returncode == 0, (with_file.stderr, without.stderr)
    assert with_file.stdout == without.stdout and "25 rolling windows" in without.stdout


def test_select_against_a_server_that_does_not_answer_fails_within_seconds(cli):
    import time

    started = time.perf_counter()
    done = cli("select", GOOD, "--tracking-uri", f"http://127.0.0.1:{_closed_port()}")
    assert done.returncode == 2 and "does not answer" in done.stderr
    assert time.perf_counter() - started < 10
