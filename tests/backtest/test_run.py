"""The walk-forward loop end to end: frames, no look-ahead, determinism, boundary policies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.backtest import plan, run_backtest, run_windows
from harness.backtest.boundary import Chained, policy
from harness.backtest.result import assemble
from harness.backtest.window import split_validation, steps_per_window
from harness.config import parse_config
from harness.data import load_prices
from harness.errors import HarnessError
from harness.schedules import get_schedule, lr_table, window_lr_table
from tests.conftest import ROOT, small_config


@pytest.fixture(scope="module")
def prices():
    return load_prices("csv", path=ROOT / "data" / "sp500.csv", start="2010-01-01", end="2011-12-31")


def _config(tmp_path, **sections):
    return parse_config(small_config(tmp_path, **sections))


def test_frames_have_one_row_per_test_row_per_member(tmp_path, prices):
    config = _config(tmp_path)
    the_plan = plan(config, prices)
    result = run_backtest(config, prices=prices, progress=False)
    members = len(config.schedules) * config.training.seeds
    n_test = sum(len(w.test_rows) for w in the_plan.windows)
    assert result.n_windows == len(the_plan.windows) >= 4
    assert len(result.predictions) == n_test * members
    assert list(result.predictions.columns) == ["date", "window", "schedule", "seed", "prediction", "target", "baseline"]
    assert np.isfinite(result.predictions["prediction"]).all()
    assert len(result.training) == result.n_windows * members
    assert len(result.churn) == (n_test - len(the_plan.windows[0].test_rows)) * members
    # each window's targets are the strategy table's targets on that window's test rows
    for window in the_plan.windows:
        rows = result.predictions[(result.predictions.window == window.index) & (result.predictions.seed == 0)
                                  & (result.predictions.schedule == "constant")]
        np.testing.assert_array_equal(rows["target"].to_numpy(), the_plan.table.y.to_numpy()[window.test_rows])


def test_scores_cover_every_schedule(tmp_path, prices):
    config = _config(tmp_path)
    backtest = run_backtest(config, prices=prices, progress=False)
    assert set(backtest.summary()["schedule"]) == set(config.schedule_labels())
    keys = set(backtest.aggregates["metric"])
    for key in ("pooled_rmse", "window_std_rmse", "seed_std_rmse", "churn", "end_oscillation", "pooled_qlike"):
        assert key in keys
    assert set(backtest.seed_mean_metrics.columns) == {"window", "schedule", "metric", "value"}


def test_same_config_same_numbers(tmp_path, prices):
    config = _config(tmp_path)
    first = run_backtest(config, prices=prices, progress=False).predictions
    second = run_backtest(config, prices=prices, progress=False).predictions
    pd.testing.assert_frame_equal(first, second)


@pytest.mark.parametrize("model", [{"hidden": [16, 16]}, {"type": "gru", "hidden": [8], "sequence": 10}],
                         ids=["mlp", "gru"])
def test_no_look_ahead_garbage_after_the_test_slice_changes_nothing(tmp_path, prices, model):
    """The security property: window k's predictions are bitwise the same when every price
    after its test slice is replaced by garbage (a GRU reading sequences of past rows too)."""
    config = _config(tmp_path, model=model)
    clean = run_backtest(config, prices=prices, progress=False)
    the_plan = plan(config, prices)
    k = 1
    last_test_date = pd.DatetimeIndex(the_plan.table.dates)[the_plan.windows[k].test_rows[-1]]
    rng = np.random.default_rng(7)
    garbage = prices.copy()
    after = garbage.index > last_test_date
    assert after.sum() > 50
    for column in ("open", "high", "low", "close", "adj_close"):
        garbage.loc[after, column] = rng.uniform(1.0, 1e6, after.sum())
    dirty = run_backtest(config, prices=garbage, progress=False)
    for window in range(k + 1):
        a = clean.predictions[clean.predictions.window == window]
        b = dirty.predictions[dirty.predictions.window == window]
        np.testing.assert_array_equal(a["prediction"].to_numpy(), b["prediction"].to_numpy())
        np.testing.assert_array_equal(a["baseline"].to_numpy(), b["baseline"].to_numpy())
    last = clean.n_windows - 1  # sanity: the garbage does reach windows that may see it
    later = clean.predictions[clean.predictions.window == last]["prediction"].to_numpy()
    assert not np.array_equal(later, dirty.predictions[dirty.predictions.window == last]["prediction"].to_numpy())


def test_a_planted_outlier_in_the_test_slice_changes_nothing_fitted(tmp_path, prices):
    """Scalers, baseline and networks of window k are fitted on its train rows only."""
    config = _config(tmp_path)
    the_plan = plan(config, prices)
    k = 1
    window = the_plan.windows[k]
    outlier_date = pd.DatetimeIndex(the_plan.table.dates)[window.test_rows[10]]
    planted = prices.copy()
    planted.loc[outlier_date, ["open", "high", "low", "close", "adj_close"]] *= 50.0
    clean = run_windows(the_plan, progress=False, keep_fitted=True)[k]
    dirty = run_windows(plan(config, planted), progress=False, keep_fitted=True)[k]
    assert clean.index == dirty.index == k
    for name in ("mean", "std"):
        np.testing.assert_array_equal(getattr(clean.fitted.x_scaler, name), getattr(dirty.fitted.x_scaler, name))
        np.testing.assert_array_equal(getattr(clean.fitted.y_scaler, name), getattr(dirty.fitted.y_scaler, name))
    for key, value in clean.fitted.result.state.items():
        assert np.array_equal(value.numpy(), dirty.fitted.result.state[key].numpy()), key
    before = clean.predictions["date"] < outlier_date  # later rows' features do see the outlier
    np.testing.assert_array_equal(clean.predictions.loc[before, "baseline"], dirty.predictions.loc[before, "baseline"])
    np.testing.assert_array_equal(clean.predictions.loc[before, "prediction"], dirty.predictions.loc[before, "prediction"])
    assert not np.array_equal(clean.predictions["prediction"], dirty.predictions["prediction"])
    fit, val = split_validation(window.train_rows, config.training.validation)
    assert fit.max() < val.min() and val.max() < window.test_rows.min() - config.windows.purge


def test_purge_shorter_than_the_horizon_is_an_error_or_a_warning(tmp_path, prices, caplog):
    with pytest.raises(HarnessError, match="windows.purge: 2 is shorter than the label horizon 5"):
        plan(_config(tmp_path, windows={"train": 252, "test": 42, "purge": 2}), prices)
    plan(_config(tmp_path, windows={"train": 252, "test": 42, "purge": 2, "short_purge": "warn"}), prices)
    assert "shorter than the label horizon" in caplog.text


def test_warm_continue_spans_one_schedule_across_windows(tmp_path, prices):
    config = _config(tmp_path, training={"boundary": "warm_continue", "epochs": 3, "batch_size": 64, "seeds": 1},
                     schedules=[{"name": "cosine", "min_lr_ratio": 0.01}])
    result = run_backtest(config, prices=prices, progress=False)
    windows = plan(config, prices).windows
    sizes = steps_per_window(config, windows)
    expected = lr_table({"name": "cosine", "min_lr_ratio": 0.01}, sum(sizes), config.training.lr)
    np.testing.assert_allclose(result.lr_curve("cosine(min_lr_ratio=0.01)"), expected, rtol=1e-6)
    boundary = policy(config, windows)
    assert isinstance(boundary, Chained)
    tables = boundary.start(1, None).lr_tables
    assert tables.shape == (1, sizes[1])
    np.testing.assert_array_equal(tables[0], window_lr_table(config.schedules[0], sizes, 1, "warm_continue",
                                                             len(windows), config.training.lr))


def test_warm_restart_restarts_the_schedule_and_keeps_the_weights(tmp_path, prices):
    base = {"epochs": 3, "batch_size": 64, "seeds": 1}
    fresh = run_backtest(_config(tmp_path, training=base, schedules=["cosine"]), prices=prices, progress=False)
    warm_config = _config(tmp_path, training={**base, "boundary": "warm_restart"}, schedules=["cosine"])
    warm_plan = plan(warm_config, prices)
    windows = run_windows(warm_plan, progress=False)
    assert [w.index for w in windows] == [w.index for w in warm_plan.windows]
    for w in windows:
        np.testing.assert_allclose(w.lr[0], lr_table("cosine", w.lr.shape[1], 1e-3), rtol=1e-6)
    warm = assemble(warm_plan, policy(warm_config, warm_plan.windows), windows)
    a, b = fresh.predictions, warm.predictions
    np.testing.assert_array_equal(a[a.window == 0]["prediction"], b[b.window == 0]["prediction"])
    assert not np.array_equal(a[a.window == 1]["prediction"], b[b.window == 1]["prediction"])


def test_plateau_and_schedule_free_members_run_in_the_backtest(tmp_path, prices):
    config = _config(tmp_path, schedules=["plateau", "schedule_free"])
    result = run_backtest(config, prices=prices, progress=False)
    assert set(result.predictions["schedule"]) == {get_schedule("plateau").label, "schedule_free"}
    assert np.isfinite(result.predictions["prediction"]).all()


@pytest.mark.slow
def test_return_forecast_logs_each_schedules_equity_curve(tmp_path):
    """The trading view's equity over all out-of-sample windows, recomputed by hand from the
    logged seed-mean predictions (sign positions, no costs), and its PNG on the parent run."""
    from mlflow import MlflowClient

    from harness.backtest import run_and_log

    raw = small_config(tmp_path, strategy={"name": "return_forecast", "params": {"horizon": 1, "cost_bps": 0.0}},
                       data={"start": "2009-01-01"}, windows={"train": 252, "test": 42, "purge": 1}, training={"epochs": 1, "seeds": 2})
    outcome = run_and_log(parse_config(raw), progress=False)
    curves = outcome.backtest.equity_curves()
    assert list(curves) == ["constant", "cosine(warmup=0.1)"]
    predictions = outcome.backtest.predictions
    for label, curve in curves.items():
        own = predictions[predictions["schedule"] == label]
        mean = own.groupby(["window", "date"], sort=True)[["prediction", "target"]].mean()
        expected = np.cumprod(1.0 + np.sign(mean["prediction"].to_numpy()) * np.expm1(mean["target"].to_numpy()))
        assert len(curve) == len(mean) and np.allclose(curve.to_numpy(), expected, rtol=1e-12)
        assert (curve.index == mean.index.get_level_values("date")).all()
    client = MlflowClient(tracking_uri=outcome.store.tracking_uri)
    path = client.download_artifacts(outcome.run_id, "equity.png", str(tmp_path))
    with open(path, "rb") as png:
        assert png.read(8) == b"\x89PNG\r\n\x1a\n"


def test_strategies_without_a_trading_view_have_no_equity_curve(tmp_path, prices):
    raw = small_config(tmp_path, training={"epochs": 1, "seeds": 1}, schedules=["constant"])
    assert run_backtest(parse_config(raw), prices=prices, progress=False).equity_curves() == {}


def test_a_recurrent_model_reads_each_rows_preceding_rows_oldest_first(tmp_path):
    from harness.backtest.window import model_inputs

    X = np.arange(12.0).reshape(6, 2)  # row r holds [2r, 2r + 1]
    config = _config(tmp_path, model={"type": "lstm", "hidden": [4], "sequence": 3})
    seq = model_inputs(config, X, np.array([0, 1, 4]))
    assert seq.shape == (3, 3, 2)
    np.testing.assert_array_equal(seq[2], X[[2, 3, 4]])       # rows 2, 3, 4: the row itself last
    np.testing.assert_array_equal(seq[1], X[[0, 0, 1]])       # before the first row: the first row repeated
    np.testing.assert_array_equal(model_inputs(_config(tmp_path), X, np.array([4, 5])), X[[4, 5]])


def test_a_recurrent_model_needs_one_row_per_date(tmp_path):
    config = _config(tmp_path, strategy={"name": "option_pricer", "params": {}}, model={"type": "gru", "hidden": [8]})
    with pytest.raises(HarnessError, match="model.type: gru reads the preceding table rows as a time series"):
        plan(config)
