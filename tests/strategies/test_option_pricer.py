"""The option pricer in the precision regime: the inputs that make the map smooth, the log-price
target space (and its torch inverse for the exported model), the shipped config's whole-grid chains,
and a short backtest whose predictions all stay inside the no-arbitrage bounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from harness.config import load_config, parse_config
from harness.errors import HarnessError
from strategies import get_strategy
from tests.conftest import gbm_prices as shared_gbm_prices, small_config

ROOT = Path(__file__).resolve().parents[2]
SMOOTH = {"target_space": "log", "sqrt_maturity": True, "log_maturity": True, "std_moneyness": True, "log_state": True}


def gbm_prices(n: int = 500, seed: int = 5) -> pd.DataFrame:
    return shared_gbm_prices(n, seed, vols=(0.1, 0.2, 0.35), start="2015-01-01")


@pytest.fixture(scope="module")
def prices():
    return gbm_prices()


def test_inputs_are_log_moneyness_maturity_its_root_and_log_standardized_moneyness_and_log_state(prices):
    strategy = get_strategy("option_pricer", {**SMOOTH, "contracts_per_day": 0, "state_windows": [5]})
    table = strategy.build(prices)
    X = table.X
    assert list(X.columns) == ["log_moneyness", "maturity", "sqrt_maturity", "log_maturity", "std_moneyness",
                               "log_rv_5", "log_rv_21"]
    tau = X.index.get_level_values("maturity_days").to_numpy() / 252
    np.testing.assert_allclose(X["maturity"], tau, rtol=1e-15)
    np.testing.assert_allclose(X["sqrt_maturity"], np.sqrt(tau), rtol=1e-15)
    np.testing.assert_allclose(X["log_maturity"], np.log(tau), rtol=1e-15)
    rv = np.exp(X["log_rv_21"].to_numpy())
    np.testing.assert_allclose(X["std_moneyness"], X["log_moneyness"] / (np.maximum(rv, 0.05) * np.sqrt(tau)),
                               rtol=1e-12)
    per_day = pd.Series(1, index=table.dates).groupby(level=0).sum()
    assert per_day.max() <= 72 and per_day.median() > 50  # the whole 9 x 8 grid, less quotes under min_price


def test_the_defaults_keep_the_original_table(prices):
    strategy = get_strategy("option_pricer", {"contracts_per_day": 4})
    assert strategy.target_space == "price"
    assert list(strategy.build(prices).X.columns) == ["log_moneyness", "maturity", "rv_5", "rv_21", "rv_63"]


def test_a_flat_price_path_gives_finite_log_state_inputs():
    flat = gbm_prices(200).assign(adj_close=100.0)
    table = get_strategy("option_pricer", {**SMOOTH, "contracts_per_day": 3}).build(flat)
    assert np.isfinite(table.X.to_numpy()).all()


@pytest.mark.parametrize("space", ["log", "price"])
def test_target_space_round_trips_and_the_torch_inverse_matches(space, prices):
    strategy = get_strategy("option_pricer", {"target_space": space, "contracts_per_day": 4})
    y = strategy.build(prices).y.to_numpy()
    z = strategy.target_transform(y)
    np.testing.assert_allclose(z, np.log(y) if space == "log" else y, rtol=1e-15)
    np.testing.assert_allclose(strategy.target_inverse(z), y, rtol=1e-14)
    torch_inverse = strategy.torch_target_inverse(torch.tensor(z)).numpy()
    np.testing.assert_allclose(torch_inverse, strategy.target_inverse(z), rtol=1e-15)


def test_log_space_predictions_are_positive_prices():
    strategy = get_strategy("option_pricer", {"target_space": "log"})
    assert (strategy.target_inverse(np.array([-50.0, -5.0, 0.0])) > 0).all()


@pytest.mark.parametrize(("params", "message"), [
    ({"target_space": "implied_vol"}, r"strategy.params.target_space: must be 'log' or 'price', got 'implied_vol'"),
    ({"min_price": 0.0, "target_space": "log"}, r"strategy.params.min_price: must be > 0 with target_space 'log'"),
    ({"log_state": "yes"}, r"strategy.params.log_state: must be true or false"),
])
def test_bad_params_are_one_line_errors(params, message):
    with pytest.raises(HarnessError, match=message) as info:
        get_strategy("option_pricer", params)
    assert "\n" not in str(info.value)


def test_the_price_space_still_takes_a_zero_min_price():
    assert get_strategy("option_pricer", {"target_space": "price", "min_price": 0.0}).min_price == 0.0


def test_the_shipped_config_quotes_whole_chains_in_the_precision_regime():
    config = load_config(ROOT / "configs" / "option_pricer.yaml")
    params = config.strategy.params
    assert params["contracts_per_day"] == 0 and params["target_space"] == "log"
    strategy = get_strategy(config.strategy.name, params)
    assert len(strategy.moneyness) * len(strategy.maturities) == 72
    assert config.training.epochs * config.windows.train >= 60 * 504  # a budget where decay matters
    assert {s if isinstance(s, str) else s["name"] for s in config.schedules} >= {"constant", "cosine"}


def test_the_shipped_heston_config_loads():
    config = load_config(ROOT / "configs" / "heston_pricer.yaml")
    assert config.strategy.name == "heston_pricer"
    get_strategy(config.strategy.name, config.strategy.params)


@pytest.mark.slow
def test_a_short_backtest_beats_black_scholes_and_stays_inside_the_no_arbitrage_bounds(tmp_path):
    from harness.backtest import run_backtest
    from harness.evaluation.metrics import seed_mean, test_table

    config = parse_config(small_config(
        tmp_path, strategy={"name": "option_pricer", "params": {**SMOOTH, "contracts_per_day": 0, "state_windows": [21]}},
        model={"hidden": [16, 16], "activation": "silu"}, windows={"train": 126, "test": 63, "purge": 0},
        training={"epochs": 6, "batch_size": 256, "seeds": 1, "lr": 1e-2},
        data={"start": "2012-01-01", "end": "2012-12-31"}, schedules=["constant", "cosine"]))
    backtest = run_backtest(config, progress=False)
    agg = backtest.aggregates.set_index(["schedule", "metric"])["value"]
    first = seed_mean(backtest.predictions)
    first = first[first["schedule"] == "constant"]
    y, base = first["target"].to_numpy(), first["baseline"].to_numpy()
    baseline_error = backtest.strategy.metrics(y, base, base, test_table(backtest.table, first))["iv_error_volpts"]
    for schedule in ("constant", "cosine"):
        assert agg[(schedule, "pooled_iv_fail_rate")] < 0.01  # only an at-the-money call can fall under its bound
        assert agg[(schedule, "pooled_iv_error_volpts")] < 0.6 * baseline_error
        assert agg[(schedule, "pooled_r2_oos")] > 0.5
    assert (backtest.predictions["prediction"] > 0).all()  # the log space never prices below zero
