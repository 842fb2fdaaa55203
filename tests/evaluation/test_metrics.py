"""Metric definitions on hand-computed cases (design section 7)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.errors import HarnessError
from harness.evaluation.metrics import (
    aggregate_metrics,
    best_window_share,
    better,
    loss_matrix,
    precision,
    ranking_table,
    seed_mean,
    window_metrics,
)
from strategies import Strategy, Table, get_strategy

DATES = pd.bdate_range("2021-03-01", periods=4, name="date")
TARGET = {0: [1.0, 2.0], 1: [3.0, 5.0]}
BASE = {0: [1.5, 1.5], 1: [2.0, 2.0]}
# (schedule, seed) -> window -> predictions; B/2 diverged (garbage predictions, flagged in training).
PREDS = {
    ("A", 0): {0: [1.0, 3.0], 1: [3.0, 4.0]},
    ("A", 1): {0: [2.0, 2.0], 1: [4.0, 5.0]},
    ("B", 0): {0: [0.0, 2.0], 1: [3.0, 3.0]},
    ("B", 1): {0: [1.0, 2.0], 1: [3.0, 5.0]},
    ("B", 2): {0: [1e9, -1e9], 1: [1e9, 7.0]},
}


class PlainStrategy(Strategy):
    """No own metrics: only precision."""

    name = "plain"
    params = {}


def hand_predictions() -> pd.DataFrame:
    rows = []
    for (schedule, seed), by_window in PREDS.items():
        for window, preds in by_window.items():
            for i, p in enumerate(preds):
                rows.append((DATES[2 * window + i], window, schedule, seed, p, TARGET[window][i], BASE[window][i]))
    return pd.DataFrame(rows, columns=["date", "window", "schedule", "seed", "prediction", "target", "baseline"])


def hand_training() -> pd.DataFrame:
    rows = []
    osc = {("A", 0): [0.1, 0.3], ("A", 1): [0.2, 0.4], ("B", 0): [0.5, 0.7], ("B", 1): [0.5, 0.7],
           ("B", 2): [np.nan, np.nan]}
    for (schedule, seed), by_window in osc.items():
        for window, value in enumerate(by_window):
            diverged = (schedule, seed) == ("B", 2)
            train_loss, val_loss = 0.10 * (seed + 1), 0.10 * (seed + 1) + (0.05 if schedule == "A" else 0.25)
            rows.append((window, schedule, seed, diverged, value, train_loss, val_loss, 3))
    return pd.DataFrame(rows, columns=["window", "schedule", "seed", "diverged", "end_oscillation",
                                       "train_loss", "val_loss", "best_epoch"])


def hand_churn() -> pd.DataFrame:
    rows = [  # window 1 inputs through window 0's and window 1's models
        (1, "A", 0, 2.0, 3.0), (1, "A", 0, 1.0, 4.0),  # |d| 1, 3
        (1, "A", 1, 2.0, 4.0), (1, "A", 1, 5.0, 5.0),  # |d| 2, 0
        (1, "B", 0, 2.0, 3.0), (1, "B", 0, 4.0, 3.0),  # |d| 1, 1
        (1, "B", 1, 3.0, 3.0), (1, "B", 1, 3.0, 5.0),  # |d| 0, 2
        (1, "B", 2, -99.0, 1.0), (1, "B", 2, 0.0, 100.0),  # diverged: excluded
    ]
    return pd.DataFrame(rows, columns=["window", "schedule", "seed", "prev_prediction", "prediction"])


@pytest.fixture(scope="module")
def frames():
    pred, training = hand_predictions(), hand_training()
    wm = window_metrics(pred, PlainStrategy(), training=training)
    agg = aggregate_metrics(pred, wm, training, PlainStrategy(), "rmse", hand_churn())
    return pred, training, wm, agg.set_index(["schedule", "metric"])["value"]


def test_precision_by_hand():
    out = precision(np.array([1.0, 2.0, 3.0]), np.array([1.5, 2.0, 1.0]), np.array([2.0, 2.0, 2.0]))
    # errors 0.5, 0, -2: SSE 4.25; baseline errors 1, 0, -1: SSE 2
    assert out == pytest.approx({"mse": 4.25 / 3, "rmse": np.sqrt(4.25 / 3), "mae": 2.5 / 3, "r2_oos": 1 - 4.25 / 2})


def test_r2_oos_is_zero_for_the_baseline_and_one_for_a_perfect_model():
    rng = np.random.default_rng(0)
    for _ in range(5):
        y, b = rng.standard_normal(30), rng.standard_normal(30)
        assert precision(y, b, b)["r2_oos"] == pytest.approx(0.0)
        assert precision(y, y, b)["r2_oos"] == 1.0
    assert np.isnan(precision(np.ones(3), np.zeros(3), np.ones(3))["r2_oos"])  # exact baseline


def test_window_metrics_by_hand_and_diverged_members_excluded(frames):
    _, _, wm, _ = frames
    assert list(wm.columns) == ["window", "schedule", "seed", "metric", "value"]
    assert not ((wm["schedule"] == "B") & (wm["seed"] == 2)).any()
    value = wm.set_index(["window", "schedule", "seed", "metric"])["value"]
    assert value[(0, "A", 0, "mse")] == pytest.approx(0.5)
    assert value[(0, "A", 0, "r2_oos")] == pytest.approx(1 - 1 / 0.5)
    assert value[(1, "A", 0, "r2_oos")] == pytest.approx(1 - 1 / 10)
    assert value[(1, "B", 0, "mse")] == pytest.approx(2.0)
    assert value[(1, "B", 0, "mae")] == pytest.approx(1.0)
    assert value[(0, "B", 1, "rmse")] == 0.0
    assert len(wm) == 2 * 4 * 4  # windows x live members x precision metrics


def test_non_finite_predictions_exclude_the_member():
    pred = hand_predictions()
    pred.loc[(pred["schedule"] == "A") & (pred["seed"] == 1) & (pred["window"] == 1), "prediction"] = [np.nan, 4.0]
    wm = window_metrics(pred, PlainStrategy())  # no training frame: B/2 counts, A/1 window 1 does not
    members = set(map(tuple, wm[["window", "schedule", "seed"]].drop_duplicates().to_numpy().tolist()))
    assert (1, "A", 1) not in members and (0, "A", 1) in members and (1, "B", 2) in members


def test_seed_mean_and_pooled_precision(frames):
    pred, training, _, agg = frames
    means = seed_mean(pred, training)
    np.testing.assert_allclose(means.loc[means["schedule"] == "A", "prediction"], [1.5, 2.5, 3.5, 4.5])
    np.testing.assert_allclose(means.loc[means["schedule"] == "B", "prediction"], [0.5, 2.0, 3.0, 4.0])
    assert agg[("A", "pooled_mse")] == pytest.approx(0.25)
    assert agg[("A", "pooled_rmse")] == pytest.approx(0.5)
    assert agg[("A", "pooled_r2_oos")] == pytest.approx(1 - 1 / 10.5)  # SSE 1 vs baseline SSE 0.5 + 10
    assert agg[("B", "pooled_mse")] == pytest.approx(1.25 / 4)
    assert agg[("B", "pooled_mae")] == pytest.approx(1.5 / 4)


def test_window_and_seed_stability_by_hand(frames):
    _, _, _, agg = frames
    # per-window mse (mean over seeds): A 0.5, 0.5; B 0.25, 1.0
    assert agg[("A", "window_std_mse")] == 0.0
    assert agg[("B", "window_std_mse")] == pytest.approx(0.75 / np.sqrt(2))
    assert agg[("B", "window_iqr_mse")] == pytest.approx(0.8125 - 0.4375)
    assert agg[("B", "window_worst_mse")] == pytest.approx(1.0)
    # r2_oos is better high: worst is the minimum; per-window B: mean(-1, 1) = 0, mean(0.6, 1) = 0.8
    assert agg[("B", "window_worst_r2_oos")] == pytest.approx(0.0)
    # seed std of mse: A 0 and 0; B std(0.5, 0) and std(2, 0), ddof=1
    assert agg[("A", "seed_std_mse")] == 0.0
    assert agg[("B", "seed_std_mse")] == pytest.approx((np.sqrt(0.125) + np.sqrt(2.0)) / 2)
    assert agg[("A", "pred_dispersion")] == pytest.approx(np.sqrt(0.5))
    assert agg[("B", "pred_dispersion")] == pytest.approx((np.sqrt(0.5) + np.sqrt(2.0)) / 4)


def test_training_stability_and_churn_by_hand(frames):
    _, _, _, agg = frames
    assert agg[("A", "divergence_rate")] == 0.0
    assert agg[("B", "divergence_rate")] == pytest.approx(2 / 6)
    assert agg[("A", "end_oscillation")] == pytest.approx(0.25)
    assert agg[("B", "end_oscillation")] == pytest.approx(0.6)
    assert agg[("A", "train_val_gap")] == pytest.approx(0.05)
    assert agg[("B", "train_val_gap")] == pytest.approx(0.25)
    assert agg[("A", "churn")] == pytest.approx(6 / 4)
    assert agg[("B", "churn")] == pytest.approx(4 / 4)


def test_best_window_share_counts_ties(frames):
    _, _, _, agg = frames
    # per-window rmse: w0 A 0.707 vs B 0.354 (B best); w1 A 0.707 vs B (1.414 + 0) / 2 (tie)
    assert agg[("A", "best_window_share")] == pytest.approx(0.5)
    assert agg[("B", "best_window_share")] == pytest.approx(1.0)


def test_best_window_share_direction_and_missing_values():
    per_window = pd.DataFrame({0: [0.1, 0.3, np.nan], 1: [0.5, 0.2, np.nan], 2: [np.nan, np.nan, np.nan]},
                              index=["a", "b", "c"])
    assert best_window_share(per_window, "min").tolist() == [0.5, 0.5, 0.0]
    assert best_window_share(per_window, "max").tolist() == [0.5, 0.5, 0.0]
    assert best_window_share(per_window.iloc[:, [0]] * 0 + 1, "max").tolist() == [1.0, 1.0, 0.0]


def test_missing_churn_and_training_give_nan():
    pred = hand_predictions()
    wm = window_metrics(pred, PlainStrategy())
    agg = aggregate_metrics(pred, wm, None, PlainStrategy()).set_index(["schedule", "metric"])["value"]
    for key in ("churn", "divergence_rate", "end_oscillation", "train_val_gap"):
        assert np.isnan(agg[("A", key)])
    assert np.isfinite(agg[("A", "pooled_rmse")])


def test_aggregate_keys_cover_every_metric(frames):
    _, _, _, agg = frames
    keys = set(agg.loc["A"].index)
    for m in ("mse", "rmse", "mae", "r2_oos"):
        assert {f"pooled_{m}", f"window_std_{m}", f"window_iqr_{m}", f"window_worst_{m}", f"seed_std_{m}"} <= keys
    assert {"pred_dispersion", "divergence_rate", "end_oscillation", "train_val_gap", "churn",
            "best_window_share"} <= keys


def test_loss_matrix_by_date_and_window(frames):
    pred, training, _, _ = frames
    by_date = loss_matrix(pred, "mse", training=training)
    assert list(by_date.columns) == ["A", "B"] and list(by_date.index) == list(DATES)
    np.testing.assert_allclose(by_date["A"], [0.25] * 4)
    np.testing.assert_allclose(by_date["B"], [0.25, 0.0, 0.0, 1.0])
    by_window = loss_matrix(pred, "mae", by="window", training=training)
    np.testing.assert_allclose(by_window["B"], [0.25, 0.5])
    assert by_date.mean().tolist() == pytest.approx([0.25, 1.25 / 4])  # mean loss = pooled mse


def test_loss_matrix_averages_rows_sharing_a_date():
    pred = hand_predictions()
    pred["date"] = DATES[pred["window"].to_numpy()]  # two rows per date, as in an option chain
    matrix = loss_matrix(pred, "mse", training=hand_training())
    np.testing.assert_allclose(matrix["B"], [0.125, 0.5])


def test_loss_matrix_uses_the_strategy_pointwise_loss():
    pred = hand_predictions().assign(prediction=lambda f: f["prediction"].abs() / 10 + 0.1, target=0.2)
    vol = get_strategy("volatility_forecast")
    matrix = loss_matrix(pred, "qlike", training=hand_training(), strategy=vol)
    means = seed_mean(pred, hand_training())
    ratio = 0.2**2 / means.loc[means["schedule"] == "A", "prediction"].to_numpy() ** 2
    np.testing.assert_allclose(matrix["A"], ratio - np.log(ratio) - 1)
    with pytest.raises(HarnessError, match="'qlike' has no per-observation loss"):
        loss_matrix(pred, "qlike")
    with pytest.raises(HarnessError, match="by must be 'date' or 'window'"):
        loss_matrix(pred, "mse", by="row")


def test_ranking_table_sorts_best_first_in_the_metric_direction(frames):
    _, _, _, agg = frames
    tidy = agg.reset_index()
    by_rmse = ranking_table(tidy, "rmse")
    assert by_rmse["schedule"].tolist() == ["A", "B"]  # pooled rmse 0.5 < 0.559
    assert list(by_rmse.columns) == ["schedule", "pooled_rmse", "window_std_rmse", "window_worst_rmse", "seed_std_rmse",
                                     "divergence_rate", "end_oscillation", "churn", "best_window_share"]
    flipped = tidy.copy()
    flipped.loc[flipped["metric"] == "pooled_r2_oos", "value"] = [0.1, 0.9]
    assert ranking_table(flipped, "r2_oos")["schedule"].tolist() == ["B", "A"]  # higher is better
    with pytest.raises(HarnessError, match=r"unknown metric 'rmes' \(did you mean 'rmse'\?\)"):
        ranking_table(tidy, "rmes")


def test_directions():
    assert better("rmse") == "min" and better("r2_oos") == "max"
    returns = get_strategy("return_forecast")
    assert better("hit_rate", returns) == "max" and better("ic", returns) == "max"
    assert better("max_drawdown", returns) == "min" and better("qlike", get_strategy("volatility_forecast")) == "min"


def test_strategy_metrics_flow_into_window_and_pooled_metrics():
    pred = hand_predictions().assign(target=lambda f: f["target"] - 2.5, prediction=lambda f: f["prediction"] - 2.5)
    strategy = get_strategy("return_forecast", {"cost_bps": 0.0})
    training = hand_training()
    wm = window_metrics(pred, strategy, training=training)
    value = wm.set_index(["window", "schedule", "seed", "metric"])["value"]
    # window 1, A seed 0: predictions 0.5, 1.5 vs targets 0.5, 2.5 -> signs agree twice
    assert value[(1, "A", 0, "hit_rate")] == 1.0
    assert value[(0, "A", 0, "hit_rate")] == 0.5  # -1.5, 0.5 vs -1.5, -0.5
    agg = aggregate_metrics(pred, wm, training, strategy, "hit_rate").set_index(["schedule", "metric"])["value"]
    means = seed_mean(pred, training)
    own = means[means["schedule"] == "A"]
    assert agg[("A", "pooled_hit_rate")] == pytest.approx(np.mean(np.sign(own["prediction"]) == np.sign(own["target"])))
    assert ("A", "window_worst_sharpe") in agg.index


def test_window_metrics_read_features_from_the_strategy_table():
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(0.01 * rng.standard_normal(200)))
    prices = pd.DataFrame({c: close for c in ("open", "high", "low", "close", "adj_close")},
                          index=pd.bdate_range("2020-01-01", periods=200, name="date")).assign(volume=1.0)
    strategy = get_strategy("option_pricer", {"contracts_per_day": 4, "state_windows": [5]})
    table = strategy.build(prices)
    dates = np.unique(table.dates.values)
    test_rows = np.flatnonzero(np.isin(table.dates.values, dates[100:110]))
    test = Table(X=table.X.iloc[test_rows], y=table.y.iloc[test_rows], dates=table.dates[test_rows], horizon=0)
    y = test.y.to_numpy()
    pred = pd.DataFrame({"date": test.dates, "window": 0, "schedule": "A", "seed": 0,
                         "prediction": y * 1.05, "target": y, "baseline": y * 0.9})
    wm = window_metrics(pred, strategy, table).set_index("metric")["value"]
    expected = strategy.metrics(y, y * 1.05, y * 0.9, test)
    assert wm["iv_error_volpts"] == pytest.approx(expected["iv_error_volpts"]) and wm["iv_error_volpts"] > 0
    with pytest.raises(HarnessError, match="option_pricer metrics need the features"):
        window_metrics(pred, strategy)
    with pytest.raises(HarnessError, match="do not match the strategy table"):
        window_metrics(pred.iloc[1:], strategy, table)


def test_all_members_diverged_gives_nan_keys_not_a_crash():
    pred, training = hand_predictions(), hand_training().assign(diverged=True)
    wm = window_metrics(pred, PlainStrategy(), training=training)
    assert wm.empty
    agg = aggregate_metrics(pred, wm, training, PlainStrategy()).set_index(["schedule", "metric"])["value"]
    assert agg[("A", "divergence_rate")] == 1.0
    assert np.isnan(agg[("A", "pooled_rmse")]) and np.isnan(agg[("B", "window_std_mse")])
    assert np.isnan(agg[("A", "best_window_share")])  # no window has a value to rank
