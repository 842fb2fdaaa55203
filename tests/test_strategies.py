"""Strategies: tables without look-ahead, train-only baselines, own metrics, params and loading."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.linear_model import LinearRegression

from harness.errors import DataError, HarnessError
from harness.pricing import bs_price, implied_vol
from strategies import STRATEGIES, Strategy, Table, get_strategy

ONE_ASSET = [name for name, cls in STRATEGIES.items() if not getattr(cls, "needs_panel", False)]
"""Strategies of one price series (cross_section, which needs a panel, has tests/strategies/)."""
from strategies.return_forecast import equity_curve, hit_rate, spearman_ic, trading_view
from strategies.volatility_forecast import VOL_FLOOR, qlike_loss

SP500 = Path(__file__).resolve().parents[1] / "data" / "sp500.csv"
SMALL = {  # params keeping tables small and warm-ups short on the 900-day fixture
    "return_forecast": {"horizon": 3, "momentum": [21, 63]},
    "volatility_forecast": {"lookback": 22, "horizon": 5},
    "option_pricer": {"contracts_per_day": 6},
    "heston_pricer": {"contracts_per_day": 6},
}


def gbm_prices(n: int = 900, seed: int = 7) -> pd.DataFrame:
    """Seeded GBM whose volatility switches regime every 150 days (so vol features carry signal)."""
    rng = np.random.default_rng(seed)
    vol = np.repeat(rng.choice([0.08, 0.15, 0.35], size=n // 150 + 1), 150)[:n] / np.sqrt(252)
    close = 100 * np.exp(np.cumsum(0.0002 + vol * rng.standard_normal(n)))
    index = pd.bdate_range("2010-01-04", periods=n, name="date")
    return pd.DataFrame({"open": close, "high": close * 1.01, "low": close * 0.99, "close": close,
                         "adj_close": close, "volume": 1e6}, index=index)


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    return gbm_prices()


def take(table: Table, rows: np.ndarray) -> Table:
    return Table(X=table.X.iloc[rows], y=table.y.iloc[rows], dates=table.dates[rows], horizon=table.horizon)


def split(table: Table, n_train_dates: int, n_test_dates: int) -> tuple[Table, Table]:
    """Train on the first dates, test on the following ones (whole dates, as the engine cuts)."""
    dates = np.unique(table.dates.values)
    train = np.isin(table.dates.values, dates[:n_train_dates])
    start = n_train_dates + table.horizon
    test = np.isin(table.dates.values, dates[start: start + n_test_dates])
    return take(table, np.flatnonzero(train)), take(table, np.flatnonzero(test))


def garbage_after(prices: pd.DataFrame, cut: pd.Timestamp, seed: int = 1) -> pd.DataFrame:
    """Every price after ``cut`` replaced by positive random garbage."""
    out = prices.copy()
    after = out.index > cut
    noise = np.random.default_rng(seed).lognormal(3.0, 1.0, size=(int(after.sum()), out.shape[1]))
    out.loc[after, :] = noise
    return out


def lookahead_violations(strategy: Strategy, prices: pd.DataFrame, cut: pd.Timestamp) -> list[str]:
    """What changes in rows that must not change when prices after ``cut`` become garbage."""
    clean, dirty = strategy.build(prices), strategy.build(garbage_after(prices, cut))
    last_label_date = prices.index[prices.index.get_loc(cut) - clean.horizon]
    problems = []
    x_clean, x_dirty = clean.X[clean.dates <= cut], dirty.X[dirty.dates <= cut]
    if not x_clean.equals(x_dirty):
        problems.append("X")
    if not clean.y[clean.dates <= last_label_date].equals(dirty.y[dirty.dates <= last_label_date]):
        problems.append("y")
    return problems


# ------------------------------------------------------------------------------------- tables

@pytest.mark.parametrize("name", ONE_ASSET)
def test_build_gives_finite_float_table_on_synthetic_prices(name, prices):
    table = get_strategy(name, SMALL[name]).build(prices)
    assert len(table) > 300
    assert all(dtype == np.float64 for dtype in table.X.dtypes)
    assert np.isfinite(table.X.to_numpy()).all() and np.isfinite(table.y.to_numpy()).all()
    assert table.dates.is_monotonic_increasing and table.dates.isin(prices.index).all()
    assert table.horizon == {"return_forecast": 3, "volatility_forecast": 5, "option_pricer": 0, "heston_pricer": 0}[name]


@pytest.mark.skipif(not SP500.exists(), reason="bundled data/sp500.csv not present")
@pytest.mark.parametrize("name", ONE_ASSET)
def test_build_on_bundled_sp500_with_default_params(name):
    raw = pd.read_csv(SP500, parse_dates=["Date"], date_format="%m/%d/%Y")
    prices = raw.rename(columns=lambda c: c.lower().replace(" ", "_")).set_index("date").astype(np.float64)
    table = get_strategy(name).build(prices)
    assert np.isfinite(table.X.to_numpy()).all() and np.isfinite(table.y.to_numpy()).all()
    assert len(np.unique(table.dates.values)) > 4500


@pytest.mark.parametrize("name", ONE_ASSET)
@pytest.mark.parametrize("cut_position", [300, 301, 560, 820])
def test_no_lookahead_features_and_targets(name, prices, cut_position):
    strategy = get_strategy(name, SMALL[name])
    assert lookahead_violations(strategy, prices, prices.index[cut_position]) == []


class LeakyForecast(Strategy):
    """A strategy with a look-ahead bug: its feature is tomorrow's return."""

    name = "leaky"
    params = {"horizon": 1}

    def build(self, prices):
        r = np.log(prices["adj_close"]).diff()
        X = pd.DataFrame({"tomorrow": r.shift(-1)}, index=prices.index)
        y = r.shift(-1).rename("target")
        keep = X["tomorrow"].notna() & y.notna()
        return Table(X=X[keep], y=y[keep], dates=X.index[keep], horizon=self.horizon)

    def baseline(self, train, test):
        return np.zeros(len(test))


def test_lookahead_check_catches_a_leaky_strategy(prices):
    assert lookahead_violations(LeakyForecast(), prices, prices.index[400]) == ["X"]


def test_return_forecast_features_and_target_by_hand(prices):
    strategy = get_strategy("return_forecast", {"horizon": 3, "lags": 2, "vol_window": 10, "momentum": [5]})
    table = strategy.build(prices)
    close = prices["adj_close"].to_numpy()
    for t in (10, 200, len(close) - 4):
        date = prices.index[t]
        row = table.X.loc[date]
        r = np.diff(np.log(close[: t + 1]))
        assert row["ret_lag0"] == pytest.approx(r[-1]) and row["ret_lag1"] == pytest.approx(r[-2])
        assert row["vol_10"] == pytest.approx(np.sqrt(np.mean(r[-10:] ** 2) * 252))
        assert row["mom_5"] == pytest.approx(np.log(close[t] / close[t - 5]))
        assert table.y.loc[date] == pytest.approx(np.log(close[t + 3] / close[t]))
    assert table.dates[-1] == prices.index[-4]  # the last 3 days have no 3-day-ahead target


def test_volatility_forecast_features_and_target_by_hand(prices):
    table = get_strategy("volatility_forecast", {"lookback": 10, "horizon": 4}).build(prices)
    r = np.diff(np.log(prices["adj_close"].to_numpy()))  # r[i] is the return ending at day i + 1
    for t in (10, 333, len(r) - 4):
        row, date = table.X.loc[prices.index[t]], prices.index[t]
        past, future = r[:t], r[t: t + 4]
        assert row["rv_1"] == pytest.approx(abs(past[-1]) * np.sqrt(252))
        assert row["rv_5"] == pytest.approx(np.sqrt(np.sum(past[-5:] ** 2) * 252 / 5))
        assert row["rv_10"] == pytest.approx(np.sqrt(np.sum(past[-10:] ** 2) * 252 / 10))
        assert table.y.loc[date] == pytest.approx(np.sqrt(np.sum(future**2) * 252 / 4))


def test_option_pricer_rows_are_black_scholes_on_the_vol_surface(prices):
    strategy = get_strategy("option_pricer", {"contracts_per_day": 5, "r": 0.03, "q": 0.01})
    table = strategy.build(prices)
    r = np.diff(np.log(prices["adj_close"].to_numpy()))
    rows = np.random.default_rng(0).choice(len(table), 25, replace=False)
    for i in rows:
        date, moneyness, days = table.X.index[i]
        t = prices.index.get_loc(date)
        base = np.sqrt(np.mean(r[t - 21: t] ** 2) * 252)
        k, tau = np.log(moneyness), days / 252
        sigma = max(0.05, base - 0.4 * k + 0.5 * k * k + 0.02 * np.sqrt(tau))
        expected = bs_price(100.0, 100.0 * moneyness, tau, 0.03, sigma, 0.01, call=moneyness >= 1) / (100 * moneyness)
        assert table.y.iloc[i] == pytest.approx(float(expected), rel=1e-10)
        assert table.X["log_moneyness"].iloc[i] == pytest.approx(k)
    per_day = pd.Series(1, index=table.dates).groupby(level=0).sum()
    assert per_day.max() == 5 and (table.y >= 1e-4).all()


def test_option_pricer_draw_of_a_day_does_not_depend_on_later_days(prices):
    strategy = get_strategy("option_pricer", SMALL["option_pricer"])
    full, short = strategy.build(prices), strategy.build(prices.iloc[:500])
    assert full.X.loc[full.dates <= prices.index[499]].equals(short.X)


# ---------------------------------------------------------------------------------- baselines

@pytest.mark.parametrize("name", ONE_ASSET)
def test_baseline_is_fitted_on_train_rows_only(name, prices):
    strategy = get_strategy(name, SMALL[name])
    train, test = split(strategy.build(prices), 400, 60)
    reference = strategy.baseline(train, test)
    garbage = pd.Series(np.random.default_rng(0).uniform(0.001, 0.5, len(test)), index=test.y.index)
    scrambled = Table(X=test.X, y=garbage, dates=test.dates, horizon=test.horizon)
    np.testing.assert_array_equal(strategy.baseline(train, scrambled), reference)
    shifted_train = Table(X=train.X, y=train.y * 1.5, dates=train.dates, horizon=train.horizon)
    assert not np.allclose(strategy.baseline(shifted_train, test), reference)
    assert reference.shape == (len(test),) and np.isfinite(reference).all()


def test_return_baseline_is_the_train_mean(prices):
    strategy = get_strategy("return_forecast", SMALL["return_forecast"])
    train, test = split(strategy.build(prices), 300, 40)
    np.testing.assert_allclose(strategy.baseline(train, test), train.y.mean(), rtol=1e-12)


def test_har_baseline_equals_sklearn_ols(prices):
    strategy = get_strategy("volatility_forecast")
    train, test = split(strategy.build(prices), 500, 100)
    columns = ["rv_1", "rv_5", "rv_22"]
    ols = LinearRegression().fit(train.X[columns], train.y)
    np.testing.assert_allclose(strategy.baseline(train, test), ols.predict(test.X[columns]), rtol=1e-9)


def test_option_baseline_prices_at_the_mean_train_implied_vol(prices):
    strategy = get_strategy("option_pricer", SMALL["option_pricer"])
    train, test = split(strategy.build(prices), 300, 30)
    mean_iv = np.mean(strategy.implied_vols(train.y.to_numpy(), train))
    np.testing.assert_allclose(strategy.implied_vols(strategy.baseline(train, test), test), mean_iv, rtol=1e-7)


# -------------------------------------------------------------------------------- own metrics

def test_hit_rate_and_ic_by_hand():
    y = np.array([0.01, -0.02, 0.03, -0.01, 0.0])
    pred = np.array([0.02, 0.01, 0.01, -0.03, 0.0])
    assert hit_rate(y, pred) == pytest.approx(4 / 5)
    rng = np.random.default_rng(1)
    for _ in range(5):
        a, b = rng.standard_normal(50).round(1), rng.standard_normal(50).round(1)  # rounding makes ties
        assert spearman_ic(a, b) == pytest.approx(spearmanr(b, a).statistic, rel=1e-12)
    assert np.isnan(spearman_ic(y, np.full(5, 0.3)))


def test_trading_view_by_hand():
    y = np.log([1.1, 0.8, 1.1])  # simple returns +10 %, -20 %, +10 %
    out = trading_view(np.array([1.0, 1.0, 1.0]), y, cost_bps=0.0)
    net = np.array([0.1, -0.2, 0.1])
    assert out["sharpe"] == pytest.approx(net.mean() / net.std(ddof=1) * np.sqrt(252))
    assert out["max_drawdown"] == pytest.approx(1 - 0.88 / 1.1)
    assert out["turnover"] == pytest.approx(1 / 3)  # enter once from flat, then hold
    # Flipping every day at 10 bps: turnover 1, 2, 2 -> costs 0.001, 0.002, 0.002.
    out = trading_view(np.array([1.0, -1.0, 1.0]), y, cost_bps=10.0)
    curve = equity_curve(np.array([1.0, -1.0, 1.0]), y, cost_bps=10.0)
    np.testing.assert_allclose(curve.to_numpy(), np.cumprod(1 + np.array([0.099, 0.198, 0.098])))
    assert out["turnover"] == pytest.approx(5 / 3) and out["max_drawdown"] == 0.0


def test_trading_view_holds_h_days_and_scales_by_vol():
    y = np.log([1.1, 5.0, 0.95, 5.0])  # with horizon 2 only rows 0 and 2 are traded
    view = trading_view(np.array([1.0, -1.0, -1.0, 1.0]), y, horizon=2, cost_bps=0.0)
    net = np.array([0.1, 0.05])
    assert view["sharpe"] == pytest.approx(net.mean() / net.std(ddof=1) * np.sqrt(252 / 2))
    assert view["turnover"] == pytest.approx((1 + 2) / 2)
    curve = equity_curve(np.array([1.0, 1.0]), np.log([1.1, 1.1]), position="vol_scaled",
                         vol=np.array([0.2, 0.05]), target_vol=0.1, max_leverage=1.5, cost_bps=0.0)
    np.testing.assert_allclose(curve.to_numpy(), [1.05, 1.05 * 1.15])  # positions 0.5 then capped 1.5


def test_return_forecast_metrics_use_table_vol_for_vol_scaled(prices):
    strategy = get_strategy("return_forecast", {**SMALL["return_forecast"], "position": "vol_scaled", "horizon": 1})
    train, test = split(strategy.build(prices), 300, 50)
    pred = test.y.to_numpy() + 0.01
    out = strategy.metrics(test.y.to_numpy(), pred, strategy.baseline(train, test), test)
    expected = trading_view(pred, test.y.to_numpy(), position="vol_scaled", vol=test.X["vol_21"].to_numpy(),
                            cost_bps=1.0)
    assert out["sharpe"] == pytest.approx(expected["sharpe"])
    assert set(out) == {"hit_rate", "ic", "sharpe", "max_drawdown", "turnover"}
    bare = Table(X=pd.DataFrame(index=range(len(test))), y=test.y.reset_index(drop=True), dates=test.dates, horizon=1)
    with pytest.raises(HarnessError, match="vol_21"):
        strategy.metrics(test.y.to_numpy(), pred, pred, bare)


def test_qlike_by_hand_and_floor():
    assert qlike_loss(np.array([0.2]), np.array([0.2]))[0] == 0.0
    ratio = 0.3**2 / 0.2**2
    assert qlike_loss(np.array([0.3]), np.array([0.2]))[0] == pytest.approx(ratio - np.log(ratio) - 1)
    floored = qlike_loss(np.array([0.2, 0.2]), np.array([-1.0, 0.0]))
    ratio = 0.2**2 / VOL_FLOOR**2
    np.testing.assert_allclose(floored, ratio - np.log(ratio) - 1)
    strategy = get_strategy("volatility_forecast")
    assert strategy.metrics(np.array([0.3]), np.array([0.2]), np.array([0.3]), None)["qlike"] == pytest.approx(
        0.3**2 / 0.2**2 - np.log(0.3**2 / 0.2**2) - 1)


def test_option_iv_error_in_vol_points_and_fail_rate(prices):
    strategy = get_strategy("option_pricer", SMALL["option_pricer"])
    _, test = split(strategy.build(prices), 300, 30)
    y = test.y.to_numpy()
    exact = strategy.metrics(y, y, y, test)
    assert exact["iv_error_volpts"] == pytest.approx(0.0, abs=1e-6) and exact["iv_fail_rate"] == 0.0
    k, tau = test.X["log_moneyness"].to_numpy(), test.X["maturity"].to_numpy()
    bumped = strategy.price_over_strike(k, tau, strategy.implied_vols(y, test) + 0.01)  # +1 vol point
    pred = bumped.copy()
    pred[:10] = -0.01  # unpriceable
    out = strategy.metrics(y, pred, y, test)
    assert out["iv_error_volpts"] == pytest.approx(1.0, rel=1e-6)
    assert out["iv_fail_rate"] == pytest.approx(10 / len(y))
    np.testing.assert_allclose(implied_vol(bumped[10:], np.exp(-k[10:]), 1.0, tau[10:], 0.02, 0.0, k[10:] >= 0),
                               strategy.implied_vols(y, test)[10:] + 0.01, rtol=1e-7)


# -------------------------------------------------------------------------- params and loading

@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("return_forecast", {"horizn": 2}, r"strategy.params.horizn: unknown parameter .*did you mean 'horizon'"),
        ("volatility_forecast", {"lookbak": 10}, r"did you mean 'lookback'"),
        ("option_pricer", {"moneyness": "wide"}, r"strategy.params.moneyness: must be a non-empty list"),
        ("return_forecast", {"horizon": 1.5}, r"strategy.params.horizon: must be an integer \(like the default 1\) for 'return_forecast', got 1.5"),
        ("return_forecast", {"horizon": 0}, r"strategy.params.horizon: must be >= 1, got 0"),
        ("return_forecast", {"position": "long"}, r"position: must be 'sign' or 'vol_scaled'"),
        ("volatility_forecast", {"lookback": 5}, r"lookback: must be > 5"),
        ("option_pricer", {"moneyness": [0.9, -1.0]}, r"moneyness: must all be > 0"),
        ("option_pricer", {"maturities": [5, 5]}, r"maturities: must not repeat"),
        ("option_pricer", {"kind": "straddle"}, r"kind: must be 'otm', 'call' or 'put'"),
    ],
)
def test_bad_params_are_one_line_errors(name, params, message):
    with pytest.raises(HarnessError, match=message) as info:
        get_strategy(name, params)
    assert "\n" not in str(info.value)


def test_params_resolve_to_attributes_and_values():
    strategy = get_strategy("return_forecast", {"momentum": [10, 20], "cost_bps": 2})
    assert strategy.momentum == (10, 20) and strategy.cost_bps == 2.0 and isinstance(strategy.cost_bps, float)
    assert strategy.values["lags"] == 5 and set(strategy.values) == set(strategy.params)


def test_unknown_strategy_name_suggests_the_closest():
    with pytest.raises(HarnessError, match=r"'volatility_forcast' \(did you mean 'volatility_forecast'\?\)"):
        get_strategy("volatility_forcast")


class TinyStrategy(Strategy):
    """A user strategy: yesterday's return → today's."""

    name = "tiny"
    params = {"scale": 1.0}

    def build(self, prices):
        r = np.log(prices["adj_close"]).diff() * self.scale
        X = pd.DataFrame({"r": r}, index=prices.index).iloc[1:-1]
        return Table(X=X, y=r.shift(-1).iloc[1:-1].rename("target"), dates=X.index, horizon=1)

    def baseline(self, train, test):
        return np.zeros(len(test))


def test_user_class_loads_from_module_path(prices):
    strategy = get_strategy(f"{__name__}:TinyStrategy", {"scale": 2.0})
    assert isinstance(strategy, TinyStrategy) and strategy.scale == 2.0
    assert len(strategy.build(prices)) == len(prices) - 2
    with pytest.raises(HarnessError, match=r"did you mean 'scale'"):
        get_strategy(f"{__name__}:TinyStrategy", {"scael": 2.0})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_pkg_xyz.mod:Thing", r"cannot import module 'no_such_pkg_xyz.mod'.*PYTHONPATH"),
        (f"{__name__}:TinyStrateg", r"has no class 'TinyStrateg' \(did you mean 'TinyStrategy'\?\)"),
        (f"{__name__}:gbm_prices", r"'gbm_prices' is not a subclass of strategies.Strategy"),
        (":Thing", r"write it as 'package.module:ClassName'"),
    ],
)
def test_user_class_errors(spec, message):
    with pytest.raises(HarnessError, match=message) as info:
        get_strategy(spec)
    assert "\n" not in str(info.value)


def test_user_module_failing_at_import_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "broken_user_strategy.py").write_text(textwrap.dedent("""
        raise RuntimeError("bad constant")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(HarnessError, match=r"importing 'broken_user_strategy' failed with RuntimeError: bad constant"):
        get_strategy("broken_user_strategy:Anything")
    sys.modules.pop("broken_user_strategy", None)


def test_param_names_must_not_shadow_methods():
    with pytest.raises(TypeError, match="baseline"):
        type("Clash", (Strategy,), {"params": {"baseline": 1}})


# -------------------------------------------------------------------------------- bad prices

@pytest.mark.parametrize("name", ONE_ASSET)
def test_bad_prices_are_data_errors(name, prices):
    strategy = get_strategy(name, SMALL[name])
    broken = prices.copy()
    broken.iloc[100, broken.columns.get_loc("adj_close")] = -1.0
    with pytest.raises(DataError, match=r"adj_close has 1 missing or non-positive"):
        strategy.build(broken)
    with pytest.raises(DataError, match=r"needs at least \d+ price rows"):
        strategy.build(prices.iloc[:20])
    with pytest.raises(DataError, match="no 'adj_close' column"):
        strategy.build(prices.drop(columns="adj_close"))


def test_table_rejects_mismatched_lengths():
    with pytest.raises(HarnessError, match="X has 3 rows, y 2"):
        Table(X=pd.DataFrame({"a": [1.0, 2.0, 3.0]}), y=pd.Series([1.0, 2.0]),
              dates=pd.bdate_range("2020-01-01", periods=3), horizon=1)
