"""The production model: retrained like the backtest's last window, exported as one module, and
round-tripped through the MLflow model registry of a temporary store."""

from __future__ import annotations

import os

import mlflow
import mlflow.pytorch
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

from harness import tracking
from harness.backtest import plan, run_windows
from harness.backtest.planning import production_window
from harness.backtest.window import WindowTrainer
from harness.config import parse_config
from harness.errors import HarnessError
from harness.production import EnsembleModel, train_production
from tests.conftest import small_config

SCHEDULE = "cosine(warmup=0.1)"


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("registry")
    return parse_config(small_config(tmp, training={"epochs": 3, "seeds": 2}))


@pytest.fixture(scope="module")
def production(config):
    return train_production(config, SCHEDULE)


def test_production_model_equals_the_backtests_last_window(config):
    """A fresh backtest trains window k's members exactly as the production retrain does: with the
    data cut where the backtest's last window's train rows end, the production window is that
    window, and its members are the backtest's members of that schedule."""
    the_plan = plan(config)
    last = run_windows(the_plan, progress=False, keep_fitted=True)[-1]
    assert last.index == len(the_plan.windows) - 1
    rows = the_plan.windows[-1].train_rows
    # the prices up to the last train row's label (its horizon ahead): that row is the last labelled one
    end = the_plan.prices.index.get_loc(the_plan.dates[rows[-1]]) + the_plan.table.horizon
    cut = plan(config, the_plan.prices.iloc[:end + 1])
    assert cut.dates[-1] == the_plan.dates[rows[-1]]
    pd.testing.assert_frame_equal(cut.table.X, the_plan.table.X.iloc[:rows[-1] + 1])
    np.testing.assert_array_equal(production_window(cut).train_rows, rows)

    production = train_production(config, SCHEDULE, prices=cut.prices)
    assert production.window == len(cut.windows)
    assert (production.train_start, production.train_end, production.n_train) == (
        the_plan.dates[rows[0]], the_plan.dates[rows[-1]], len(rows))
    trainer = WindowTrainer(the_plan.config, the_plan.strategy, the_plan.table)
    members = [m for m, (label, _) in enumerate(last.fitted.result.labels) if label == SCHEDULE]
    example_rows = rows[-len(production.example):]
    np.testing.assert_array_equal(production.example, the_plan.table.X.to_numpy(np.float64)[example_rows])
    backtest = trainer.predict(last.fitted, example_rows)[members].mean(axis=0)
    np.testing.assert_allclose(production.expected, backtest, rtol=0, atol=1e-9)
    # the plain module (its own forward, not the trainer's stack) gives the same numbers
    np.testing.assert_allclose(production.predict(production.example), backtest, rtol=0, atol=1e-6)
    assert production.seeds == [0, 1] and production.diverged == []
    assert production.features == ["rv_1", "rv_5", "rv_22", "ret_lag0"]


def test_ensemble_is_the_mean_of_its_members_in_target_units():
    torch.manual_seed(0)
    members = [torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Flatten(0)) for _ in range(3)]
    x_mean, x_std, y_mean, y_std = np.array([1.0, -2.0, 0.5]), np.array([2.0, 0.5, 1.0]), 0.3, 0.1
    model = EnsembleModel(members, x_mean, x_std, np.array(y_mean), np.array(y_std))
    X = np.random.default_rng(0).standard_normal((7, 3))
    z = torch.as_tensor(((X - x_mean) / x_std).astype(np.float32))
    with torch.no_grad():
        reference = np.mean([m(z).double().numpy() * y_std + y_mean for m in members], axis=0)
        out = model(torch.as_tensor(X))
    assert out.dtype == torch.float64 and out.shape == (7,)
    np.testing.assert_allclose(out.numpy(), reference, rtol=1e-12)
    with pytest.raises(HarnessError, match="no live member"):
        EnsembleModel([], x_mean, x_std, np.array(y_mean), np.array(y_std))


def test_unknown_schedule_is_a_one_line_error(config):
    with pytest.raises(HarnessError, match="unknown schedule 'cosin'; valid: constant, cosine"):
        train_production(config, "cosin")


@pytest.mark.slow
def test_registry_round_trip_on_a_temp_store(tmp_path, production):
    store = tracking.resolve_store(tmp_path / "mlruns")
    first = tracking.register_model(store, "reg-test", production.model, name="spx-vol",
                                    input_example=production.example, run_name="production-spx-vol",
                                    params=production.params(), tags={"source_backtest": "abc"})
    assert (first.version, first.alias, first.uri) == ("1", "champion", "models:/spx-vol@champion")
    client = MlflowClient(store.tracking_uri)  # on SQLite only get_model_version_by_alias sees aliases
    assert str(client.get_model_version_by_alias("spx-vol", "champion").version) == "1"

    before = fluent_state()
    with tracking.registry._fluent(store):  # mlflow.set_tracking_uri(...) and set_registry_uri(...), undone after
        loaded = mlflow.pytorch.load_model("models:/spx-vol@champion")  # as a user loads it
    assert fluent_state() == before
    X = torch.as_tensor(production.example)
    with torch.no_grad():
        np.testing.assert_allclose(loaded(X).numpy(), production.expected, rtol=0, atol=1e-6)
        np.testing.assert_allclose(loaded(X[:1]).numpy(), production.expected[:1], rtol=0, atol=1e-6)

    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["kind"] == "production"
    assert run.data.params["schedule"] == SCHEDULE and run.data.params["ensemble"] == "mean of seed members"
    assert tracking.find_runs(store, "reg-test", {"kind": "backtest"}).empty  # never mistaken for a backtest

    second = tracking.register_model(store, "reg-test", production.model, name="spx-vol",
                                     input_example=production.example, run_name="again", params={}, tags={})
    assert second.version == "2" and str(client.get_model_version_by_alias("spx-vol", "champion").version) == "2"
    with torch.no_grad():
        again = tracking.load_registered_model(store, "spx-vol")(X).numpy()
    np.testing.assert_allclose(again, production.expected, rtol=0, atol=1e-6)
    assert fluent_state() == before  # registering and loading leave MLflow's global URIs alone


def fluent_state() -> tuple:
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    return (tracking_utils._tracking_uri, registry_utils._registry_uri, os.environ.get("MLFLOW_TRACKING_URI"),
            os.environ.get("MLFLOW_REGISTRY_URI"))


@pytest.mark.parametrize("name", ["", "a/b", "x:y", "m@champion", "-x"])
def test_bad_model_names_are_rejected_before_any_work(name):
    with pytest.raises(HarnessError, match="model name"):
        tracking.check_model_name(name)


def test_missing_alias_is_a_one_line_error(tmp_path):
    store = tracking.resolve_store(tmp_path / "mlruns")
    with pytest.raises(HarnessError, match="no model 'nope@champion'") as info:
        tracking.load_registered_model(store, "nope")
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_a_recurrent_production_model_round_trips_through_the_registry(tmp_path):
    """A GRU reads sequences of past rows: the example, the signature and the loaded model take
    ``[n, sequence, features]`` and give the backtest's own seed-mean predictions."""
    config = parse_config(small_config(tmp_path, training={"epochs": 2, "seeds": 2},
                                       model={"type": "gru", "hidden": [8], "sequence": 5}))
    production = train_production(config, SCHEDULE)
    assert production.example.shape[1:] == (5, 4)
    np.testing.assert_allclose(production.predict(production.example), production.expected, rtol=0, atol=1e-6)
    store = tracking.resolve_store(tmp_path / "mlruns")
    tracking.register_model(store, "reg-gru", production.model, name="spx-gru", input_example=production.example,
                            run_name="production-spx-gru", params=production.params(), tags={})
    with torch.no_grad():
        loaded = tracking.load_registered_model(store, "spx-gru")(torch.as_tensor(production.example)).numpy()
    np.testing.assert_allclose(loaded, production.expected, rtol=0, atol=1e-6)
