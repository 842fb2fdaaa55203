"""``cross_section``: per (date, asset) features without look-ahead across assets, assets entering
late, the baseline, per-date rank IC and the long-short book, whole dates per window, per-asset
sequences for recurrent models, and the backtest's predictions and MLflow files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.linear_model import LinearRegression

from harness.backtest import plan, run_windows
from harness.backtest.boundary import policy
from harness.backtest.result import assemble
from harness.backtest.window import (
    Start,
    WindowTrainer,
    model_inputs,
    previous_rows,
    take,
)
from harness.config import load_config, parse_config
from harness.data import PANEL_AXIS
from harness.errors import DataError, HarnessError
from harness.evaluation import metrics as M
from harness.evaluation.statistics import long_run_variance, newey_west_lags
from strategies import get_strategy
from strategies.cross_section import (
    book,
    long_short,
    long_short_summary,
    quantile_weights,
)

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"horizon": 2, "lags": 2, "vol_window": 10, "momentum": [5, 20], "min_assets": 4}
WARMUP = 20  # max(lags, vol_window, momentum) of SMALL


def synthetic_panel(n: int = 600, n_assets: int = 7, seed: int = 3) -> pd.DataFrame:
    """A seeded GBM panel: asset E enters on row 150, F on row 300, G leaves after row 500."""
    rng = np.random.default_rng(seed)
    vol = rng.uniform(0.1, 0.4, n_assets) / np.sqrt(252)
    close = 50 * np.exp(np.cumsum(0.0003 + vol * rng.standard_normal((n, n_assets)), axis=0))
    panel = pd.DataFrame(close, index=pd.bdate_range("2005-01-03", periods=n, name="date"),
                         columns=pd.Index(list("ABCDEFG")[:n_assets], name=PANEL_AXIS))
    panel.iloc[:150, 4] = np.nan
    panel.iloc[:300, 5] = np.nan
    panel.iloc[501:, 6] = np.nan
    return panel


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return synthetic_panel()


def garbage_after(prices: pd.DataFrame, cut: pd.Timestamp, seed: int = 1) -> pd.DataFrame:
    """Every asset's price after ``cut`` replaced by positive random garbage (NaN cells stay NaN)."""
    out = prices.copy()
    after = out.index > cut
    noise = np.random.default_rng(seed).lognormal(3.0, 1.0, size=(int(after.sum()), out.shape[1]))
    out.loc[after, :] = np.where(out.loc[after].notna(), noise, np.nan)
    return out


# -- the table -----------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["return", "rank"])
def test_features_and_target_by_hand(panel, target):
    strategy = get_strategy("cross_section", {**SMALL, "target": target})
    table = strategy.build(panel)
    assert table.X.index.names == ["date", "asset", "next_return"] and table.horizon == 2
    assert table.dates.is_monotonic_increasing and all(dtype == np.float64 for dtype in table.X.dtypes)
    assert np.isfinite(table.X.to_numpy()).all() and np.isfinite(table.y.to_numpy()).all()
    log_close = np.log(panel.to_numpy())
    for t, a in [(WARMUP + 1, 0), (200, 3), (420, 5), (499, 0), (560, 1)]:  # 499: G known, no target
        date, asset = panel.index[t], panel.columns[a]
        row = table.X.xs((date, asset), level=("date", "asset")).iloc[0]
        r = np.diff(log_close[: t + 1, a])
        assert row["ret_lag0"] == pytest.approx(r[-1]) and row["ret_lag1"] == pytest.approx(r[-2])
        assert row["vol_10"] == pytest.approx(np.sqrt(np.mean(r[-10:] ** 2) * 252))
        assert row["mom_20"] == pytest.approx(log_close[t, a] - log_close[t - 20, a])
        known = np.isfinite(log_close[t - 20, :]) & np.isfinite(log_close[t, :])  # assets with 20 dates of prices
        moms = log_close[t, known] - log_close[t - 20, known]
        n = known.sum()
        assert row["rank_mom_20"] == pytest.approx((np.sum(moms < row["mom_20"])) / (n - 1) - 0.5)
        forward = log_close[t + 2, a] - log_close[t, a]
        at = table.y.xs((date, asset), level=("date", "asset"))
        assert at.index.get_level_values("next_return")[0] == pytest.approx(forward)
        if target == "return":
            assert at.iloc[0] == pytest.approx(forward)
        else:
            day = log_close[t + 2, :] - log_close[t, :]
            day = day[np.isfinite(day) & known]
            assert at.iloc[0] == pytest.approx(np.sum(day < forward) / (len(day) - 1) - 0.5)


def test_assets_enter_once_they_have_enough_rows_and_leave(panel):
    table = get_strategy("cross_section", SMALL).build(panel)
    assets = table.X.index.get_level_values("asset")
    first = {a: table.dates[assets == a].min() for a in "ABCDEFG"}
    assert first["A"] == panel.index[WARMUP] and first["E"] == panel.index[150 + WARMUP]
    assert first["F"] == panel.index[300 + WARMUP]
    assert table.dates[assets == "G"].max() == panel.index[500 - 2]  # its last target needs 2 more prices
    per_date = pd.Series(1, index=table.dates).groupby(level=0).sum()
    assert per_date.iloc[0] == 5 and per_date.max() == 7 and per_date.min() >= 4


def test_a_date_with_too_few_assets_is_left_out(panel):
    table = get_strategy("cross_section", {**SMALL, "min_assets": 7}).build(panel)  # while F and G overlap
    per_date = pd.Series(1, index=table.dates).groupby(level=0).sum()
    assert per_date.min() == 7 and per_date.index[0] == panel.index[300 + WARMUP]
    assert per_date.index[-1] == panel.index[500 - 2]


@pytest.mark.parametrize("cut", [200, 321, 480])
@pytest.mark.parametrize("target", ["return", "rank"])
def test_no_lookahead_across_assets(panel, cut, target):
    strategy = get_strategy("cross_section", {**SMALL, "target": target})
    day = panel.index[cut]
    clean, dirty = strategy.build(panel), strategy.build(garbage_after(panel, day))
    before = clean.dates <= day
    pd.testing.assert_frame_equal(clean.X[before].reset_index(level="next_return", drop=True),
                                  dirty.X[dirty.dates <= day].reset_index(level="next_return", drop=True))
    labelled = panel.index[cut - strategy.horizon]
    pd.testing.assert_series_equal(clean.y[clean.dates <= labelled], dirty.y[dirty.dates <= labelled])
    assert not clean.y[before].equals(dirty.y[dirty.dates <= day])  # sanity: the last targets do look ahead


def test_one_asset_is_no_cross_section_and_bad_params(panel):
    one = pd.DataFrame({"adj_close": panel["A"]})
    with pytest.raises(DataError, match="cross_section scores several assets a date, but the prices are one asset's"):
        get_strategy("cross_section").build(one)
    with pytest.raises(DataError, match="needs at least 24 dates"):
        get_strategy("cross_section", SMALL).build(panel.iloc[:22])
    with pytest.raises(DataError, match="no date has 9 assets"):
        get_strategy("cross_section", {**SMALL, "min_assets": 9}).build(panel)
    for key, value in [("target", "level"), ("quantile", 0.7), ("min_assets", 1), ("baseline_model", "ar1")]:
        with pytest.raises(HarnessError, match=f"strategy.params.{key}:"):
            get_strategy("cross_section", {key: value})


# -- baseline and metrics ------------------------------------------------------------------------


def split(table, n_train: int, n_test: int):
    dates = np.unique(table.dates.values)
    train = np.flatnonzero(np.isin(table.dates.values, dates[:n_train]))
    start = n_train + table.horizon
    test = np.flatnonzero(np.isin(table.dates.values, dates[start:start + n_test]))
    return take(table, train), take(table, test)


@pytest.mark.parametrize("target", ["return", "rank"])
def test_momentum_baseline_is_ols_on_the_momentum_rank_of_the_train_rows(panel, target):
    strategy = get_strategy("cross_section", {**SMALL, "target": target})
    train, test = split(strategy.build(panel), 300, 60)
    rank = lambda t: M.rank_within_dates(t.dates, t.X["mom_20"].to_numpy())
    reference = LinearRegression().fit(rank(train)[:, None], train.y).predict(rank(test)[:, None])
    baseline = strategy.baseline(train, test)
    np.testing.assert_allclose(baseline, reference, rtol=1e-9, atol=1e-12)
    scrambled = test.__class__(X=test.X, y=test.y * 0 + 7.0, dates=test.dates, horizon=test.horizon)
    np.testing.assert_array_equal(strategy.baseline(train, scrambled), baseline)  # never reads test targets
    mean = get_strategy("cross_section", {**SMALL, "target": target, "baseline_model": "mean"})
    np.testing.assert_allclose(mean.baseline(train, test), train.y.mean(), rtol=1e-12)


def test_per_date_rank_ic_is_spearman_within_each_date():
    rng = np.random.default_rng(0)
    dates = np.repeat(pd.bdate_range("2020-01-01", periods=30).values, 9)
    y = rng.standard_normal(len(dates))
    pred = np.round(y + rng.standard_normal(len(dates)), 1)  # ties
    pred[dates == dates[9 * 4]] = 1.0  # a constant forecast on one date
    order = rng.permutation(len(dates))  # any row order
    ic = M.per_date_rank_ic(dates[order], y[order], pred[order])
    for day in np.unique(dates):
        own = dates == day
        expected = np.nan if day == dates[9 * 4] else spearmanr(y[own], pred[own]).statistic
        np.testing.assert_allclose(ic.loc[day], expected, rtol=1e-12)
    values = ic.dropna().to_numpy()
    summary = M.rank_ic_summary(ic, horizon=3)
    lrv = long_run_variance(values, newey_west_lags(len(values), 3))
    assert summary["rank_ic"] == pytest.approx(values.mean())
    assert summary["ic_ir"] == pytest.approx(values.mean() / values.std(ddof=1))
    assert summary["rank_ic_t"] == pytest.approx(values.mean() / np.sqrt(lrv / len(values)))
    assert newey_west_lags(len(values), 3) >= 2


def test_long_short_book_by_hand():
    # 3 rebalance dates x 5 assets, quantile 0.2 -> one long, one short; horizon 1
    dates = pd.DatetimeIndex(np.repeat(pd.bdate_range("2021-01-04", periods=3).values, 5))
    assets = np.tile(list("abcde"), 3)
    score = np.array([5, 4, 3, 2, 1, 1, 5, 3, 2, 4, 2, 2, 2, 2, 2], dtype=float)  # date 3: constant -> flat
    r = np.log1p(np.array([.10, .0, .0, .0, -.05, .02, .03, .0, .01, -.01, .0, .0, .0, .0, .0]))
    weights = quantile_weights(dates, score, 0.2, 1)
    np.testing.assert_array_equal(weights, [1, 0, 0, 0, -1, -1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    ledger = long_short(dates, assets, score, r, quantile=0.2, horizon=1, cost_bps=10.0)
    np.testing.assert_allclose(ledger["gross"], [0.10 + 0.05, 0.03 - 0.02, 0.0])
    np.testing.assert_allclose(ledger["turnover"], [2.0, 4.0, 2.0])  # a flips long to short, b enters; all sold
    np.testing.assert_allclose(ledger["net"], ledger["gross"] - 1e-3 * ledger["turnover"])
    # date 2: the long b (3 %) beats the median 1 %, the short a (2 %) does too: one hit of two
    assert ledger["hits"].tolist() == [2, 1, 0] and ledger["picks"].tolist() == [2, 2, 0]
    summary = long_short_summary(ledger, horizon=1)
    net = ledger["net"].to_numpy()
    assert summary["ls_sharpe"] == pytest.approx(net.mean() / net.std(ddof=1) * np.sqrt(252))
    equity = np.cumprod(1 + net)
    assert summary["ls_max_drawdown"] == pytest.approx(1 - equity[2] / equity[1])
    assert summary["ls_turnover"] == pytest.approx(8 / 3) and summary["ls_hit_rate"] == 0.75
    # horizon 2: the book rebalances on dates 1 and 3 only, holding each position two days
    two = book(dates, assets, quantile_weights(dates, score, 0.2, 2), r, horizon=2, cost_bps=0.0)
    assert two.index.tolist() == [dates[0], dates[10]]


def test_metrics_of_a_window(panel):
    strategy = get_strategy("cross_section", SMALL)
    train, test = split(strategy.build(panel), 300, 60)
    y = test.y.to_numpy()
    perfect = strategy.metrics(y, y, strategy.baseline(train, test), test)
    assert perfect["rank_ic"] == pytest.approx(1.0) and perfect["ls_hit_rate"] == 1.0 and perfect["ls_sharpe"] > 5
    noise = np.random.default_rng(0).standard_normal(len(y))
    scores = strategy.metrics(y, noise, noise, test)
    assert set(scores) == set(strategy.better) and abs(scores["rank_ic"]) < 0.1


# -- the backtest: whole dates per window, look-ahead, scalers, sequences -------------------------


def _config(tmp_path, **sections):
    raw = {
        "experiment": "cs-test", "strategy": {"name": "cross_section", "params": SMALL},
        "model": {"hidden": [8]}, "training": {"epochs": 2, "batch_size": 64, "seeds": 1},
        "windows": {"train": 150, "test": 40, "purge": 2}, "schedules": ["constant"],
        "tracking": {"uri": str(tmp_path / "mlruns")},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_config(raw)


def test_all_rows_of_a_date_stay_in_one_window_and_the_loss_matrix_has_a_row_per_date(tmp_path, panel):
    the_plan = plan(_config(tmp_path), panel)
    dates = the_plan.dates.values
    assert len(the_plan.windows) >= 8
    for window in the_plan.windows:
        train_days, test_days = set(dates[window.train_rows]), set(dates[window.test_rows])
        assert not train_days & test_days
        np.testing.assert_array_equal(np.flatnonzero(np.isin(dates, list(test_days))), window.test_rows)
        np.testing.assert_array_equal(np.flatnonzero(np.isin(dates, list(train_days))), window.train_rows)
    predictions = assemble(the_plan, policy(the_plan.config, the_plan.windows), run_windows(the_plan, progress=False)
                           ).predictions
    losses = M.loss_matrix(predictions, "mse", by="date")
    assert losses.index.is_unique and len(losses) == predictions["date"].nunique() < len(predictions)


@pytest.mark.parametrize("horizon", [1, 5])
def test_the_purge_must_cover_the_label_horizon_and_then_no_train_label_reaches_the_test_slice(
        tmp_path, panel, horizon):
    params = {**SMALL, "horizon": horizon}
    with pytest.raises(HarnessError, match=f"windows.purge: {horizon - 1} is shorter than the label horizon {horizon}"):
        plan(_config(tmp_path, strategy={"params": params}, windows={"purge": horizon - 1}), panel)
    the_plan = plan(_config(tmp_path, strategy={"params": params}, windows={"purge": horizon, "embargo": 2}), panel)
    dates = np.unique(the_plan.table.dates)
    position = np.searchsorted(dates, np.asarray(the_plan.table.dates))
    for window in the_plan.windows:
        assert position[window.train_rows].max() + horizon < position[window.test_rows].min()


@pytest.mark.parametrize("k", [2, 5])
def test_window_k_predictions_are_bitwise_unchanged_when_every_asset_after_its_test_slice_is_garbage(
        tmp_path, panel, k):
    config = _config(tmp_path)
    the_plan = plan(config, panel)
    last = the_plan.dates[the_plan.windows[k].test_rows].max()
    dirty_plan = plan(config, garbage_after(panel, last))
    clean = run_windows(the_plan, progress=False, keep_fitted=True)[k]
    dirty = run_windows(dirty_plan, progress=False, keep_fitted=True)[k]
    assert clean.index == dirty.index == k and len(clean.predictions)
    for column in ("date", "asset", "prediction", "baseline"):
        np.testing.assert_array_equal(clean.predictions[column].to_numpy(), dirty.predictions[column].to_numpy())
    for scaler in ("x_scaler", "y_scaler"):
        for name in ("mean", "std"):
            np.testing.assert_array_equal(getattr(getattr(clean.fitted, scaler), name),
                                          getattr(getattr(dirty.fitted, scaler), name))
    # sanity: the next window's test inputs did see the garbage
    after = run_windows(dirty_plan, progress=False)[k + 1].predictions["prediction"]
    assert not np.array_equal(run_windows(the_plan, progress=False)[k + 1].predictions["prediction"], after)


def test_scalers_are_fitted_on_each_windows_train_rows_only(tmp_path, panel):
    the_plan = plan(_config(tmp_path), panel)
    X = the_plan.table.X.to_numpy()
    for result in run_windows(the_plan, progress=False, keep_fitted=True)[:3]:
        rows = the_plan.windows[result.index].train_rows
        np.testing.assert_allclose(result.fitted.x_scaler.mean, X[rows].mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(result.fitted.x_scaler.std, X[rows].std(axis=0), rtol=1e-12)


def test_recurrent_models_read_each_assets_own_past_rows(tmp_path, panel):
    table = get_strategy("cross_section", SMALL).build(panel)
    previous = previous_rows(table)
    assets = table.X.index.get_level_values("asset").to_numpy()
    config = _config(tmp_path, model={"type": "gru", "hidden": [8], "sequence": 4})
    X = table.X.to_numpy()
    rows = np.array([0, 3, 40, 2000, len(table) - 1])
    inputs = model_inputs(config, X, rows, previous)
    assert inputs.shape == (len(rows), 4, X.shape[1])
    for i, row in enumerate(rows):
        own = np.flatnonzero(assets == assets[row])
        history = own[own <= row][-4:]
        history = np.concatenate([np.repeat(own[0], 4 - len(history)), history])  # the asset's first row repeated
        np.testing.assert_array_equal(inputs[i], X[history])
    changed = X.copy()
    changed[assets != assets[2000]] += 100.0  # other assets' rows never reach this asset's sequence
    np.testing.assert_array_equal(model_inputs(config, changed, rows[3:4], previous), inputs[3:4])
    # a GRU trains on the cross-section through the window trainer, reading those sequences
    mlp_plan = plan(_config(tmp_path), panel)
    trainer = WindowTrainer(config, mlp_plan.strategy, mlp_plan.table)
    [result] = trainer.train(mlp_plan.windows[:1], [Start()], {})
    assert np.isfinite(result.predictions["prediction"]).all()
    assert result.predictions["asset"].tolist() == mlp_plan.table.X.index.get_level_values("asset")[
        mlp_plan.windows[0].test_rows].tolist()


def test_the_bundled_config_plans_on_the_bundled_panel():
    config = load_config(ROOT / "configs" / "sp500_cross_section.yaml")
    the_plan = plan(config)
    assert the_plan.config.strategy.name == "cross_section" and len(the_plan.windows) >= 50
    per_date = pd.Series(1, index=the_plan.dates).groupby(level=0).sum()
    assert per_date.min() == per_date.max() == 20


# -- end to end: MLflow ---------------------------------------------------------------------------


@pytest.mark.slow
def test_run_logs_rank_ic_long_short_and_predictions_with_the_asset(tmp_path, panel):
    from harness import tracking
    from harness.backtest import run_and_log

    config = _config(tmp_path, schedules=["constant", "cosine"])
    outcome = run_and_log(config, progress=False, prices=panel)
    backtest = outcome.backtest
    assert backtest.predictions.columns.tolist()[-1] == "asset"
    metrics = set(backtest.seed_mean_metrics["metric"])
    assert {"rank_ic", "rank_ic_t", "ic_ir", "ls_sharpe", "ls_turnover", "ls_max_drawdown", "mse"} <= metrics
    assert {"pooled_rank_ic", "pooled_ls_sharpe", "window_std_rank_ic"} <= set(backtest.aggregates["metric"])
    back = tracking.load_backtest(outcome.store, config.experiment)
    keys = ["schedule", "seed", "window", "date", "asset"]
    a, b = (frame.sort_values(keys).reset_index(drop=True) for frame in (backtest.predictions, back.predictions))
    pd.testing.assert_frame_equal(a, b[a.columns], check_dtype=False)
    folder = Path(config.tracking.uri) / "artifacts"
    parent = {p.name for p in folder.rglob("*") if outcome.run_id in p.parts}
    assert {"rank_ic.png", "rank_ic.csv", "long_short.png", "long_short.csv", "equity.png"} <= parent
    ic = pd.read_csv(next(folder.rglob("rank_ic.csv")), index_col="date", parse_dates=True)
    assert ic.columns.tolist() == ["constant", "cosine", "baseline"]
    assert len(ic) == backtest.predictions["date"].nunique()
    assert outcome.selection is not None and outcome.selection.trading is not None
    assert "buy and hold (equal weight)" in set(outcome.selection.trading["candidate"])
