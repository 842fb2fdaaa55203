"""Into a new local store, which the side process creates meanwhile, ``harness run`` trains its
first windows before the store's first call (nothing there can be resumed): the same calls in the
same order, made later. A store taken for new that holds the backtest after all is read back, and
a Ctrl-C before the store's first call leaves no run. A real side process, a real MLflow store
read back with ``mlflow.search_runs``."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest

from harness.backtest import Interrupted, run_and_log, sidecar
from harness.backtest import run as run_module
from harness.config import parse_config
from harness.data import load_prices
from harness.errors import HarnessError
from tests.conftest import ROOT, small_config

FIRST_CALLS = ["resolve_store", "check_server", "ensure_experiment", "find_runs", "start_backtest"]


@pytest.fixture(scope="module")
def prices():
    return load_prices("csv", path=ROOT / "data" / "sp500.csv", start="2010-01-01", end="2011-12-31")


@pytest.fixture
def events(monkeypatch):
    """The store's calls the run waits for, by name, and ``trained`` each time a job's windows are done."""
    monkeypatch.setenv(sidecar.ENV, "1")  # a side process whatever the machine's load
    seen: list[str] = []
    call = sidecar._call
    monkeypatch.setattr(sidecar, "_call", lambda name, *a, **k: (seen.append(name), call(name, *a, **k))[1])
    policy = run_module.policy

    def watched(config, windows):
        boundary = policy(config, windows)
        run = boundary.run

        def runs(*args, **kwargs):
            for results in run(*args, **kwargs):
                seen.append("trained")
                yield results

        boundary.run = runs
        return boundary

    monkeypatch.setattr(run_module, "policy", watched)
    yield seen
    sidecar.stop()


def _runs(config) -> pd.DataFrame:
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{config.tracking.uri}/mlflow.db")
    try:
        return mlflow.search_runs(search_all_experiments=True, filter_string="tags.kind = 'backtest'")
    finally:
        mlflow.set_tracking_uri(previous)


def test_into_a_new_store_the_windows_train_before_its_first_call_and_into_an_old_one_after(tmp_path, prices, events):
    config = parse_config(small_config(tmp_path, training={"epochs": 1, "seeds": 1}))
    first = run_and_log(config, progress=False, prices=prices)
    assert events[0] == "trained" and [e for e in events if e in FIRST_CALLS] == FIRST_CALLS
    assert events.index("trained") < events.index("resolve_store")
    assert first.store_seconds > 0  # the wait for the store, reported apart from the windows' seconds
    events.clear()
    second = run_and_log(config, progress=False, prices=prices, rerun=True)  # the store exists now
    assert events[:len(FIRST_CALLS)] == FIRST_CALLS and events.index("trained") > events.index("start_backtest")
    assert second.store_seconds == 0
    runs = _runs(config)
    assert sorted(runs["run_id"]) == sorted([first.run_id, second.run_id]) and set(runs["status"]) == {"FINISHED"}
    pd.testing.assert_frame_equal(first.backtest.predictions, second.backtest.predictions, check_exact=True)


def test_a_store_taken_for_new_that_holds_the_backtest_is_read_back_not_logged_twice(tmp_path, prices, events,
                                                                                    monkeypatch):
    config = parse_config(small_config(tmp_path, training={"epochs": 1, "seeds": 1}))
    first = run_and_log(config, progress=False, prices=prices)
    monkeypatch.setattr(sidecar, "new_store", lambda config: True)  # as if it had been made meanwhile
    again = run_and_log(config, progress=False, prices=prices)
    assert again.trained is False and again.run_id == first.run_id
    assert list(_runs(config)["run_id"]) == [first.run_id]


@pytest.mark.parametrize(("raised", "expected"), [(KeyboardInterrupt, Interrupted), (RuntimeError, RuntimeError)])
def test_a_ctrl_c_or_an_error_before_the_new_stores_first_call_leaves_no_run(tmp_path, prices, events, monkeypatch,
                                                                              raised, expected):
    config = parse_config(small_config(tmp_path, training={"epochs": 1, "seeds": 1}))
    policy = run_module.policy

    def failing(config, windows):
        boundary = policy(config, windows)

        def runs(*args, **kwargs):
            raise raised("in the first job")
            yield  # a generator, as the real one

        boundary.run = runs
        return boundary

    monkeypatch.setattr(run_module, "policy", failing)
    message = (r"before any of \d+ windows was saved \(no run was opened\); run the same command"
               if expected is Interrupted else "in the first job")
    with pytest.raises(expected, match=message):
        run_and_log(config, progress=False, prices=prices)
    assert not [e for e in events if e in FIRST_CALLS]  # the store was not called
    assert _runs(config).empty
    monkeypatch.setattr(run_module, "policy", policy)
    outcome = run_and_log(config, progress=False, prices=prices)  # and the next run is a new one
    assert outcome.trained and outcome.resumed == 0


def test_a_new_store_that_cannot_be_created_fails_before_any_training(tmp_path, prices, events):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    config = parse_config(small_config(tmp_path, tracking={"uri": str(blocker / "mlruns")}))
    with pytest.raises(HarnessError, match="is not writable"):
        run_and_log(config, progress=False, prices=prices)
    assert "trained" not in events and events[0] == "resolve_store"  # a bad store still fails fast
