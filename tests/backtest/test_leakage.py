"""The leakage proof, beside tests/backtest/test_run.py (garbage after the test slice; a planted outlier
for the volatility strategy): what is fitted per window sees its train rows only, for every built-in
strategy; the purge covers the label horizon (an error or a warning, as configured); the embargo
keeps the rows after each test slice out of every later train window."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import yaml

from harness.backtest import plan, run_windows
from harness.backtest.boundary import policy
from harness.backtest.result import assemble
from harness.backtest.window import take
from harness.config import parse_config
from harness.data import load_prices
from harness.errors import HarnessError
from strategies import STRATEGIES, get_strategy

ONE_ASSET = [name for name, cls in STRATEGIES.items() if not getattr(cls, "needs_panel", False)]
"""Strategies of one price series (cross_section, which needs a panel, has tests/strategies/)."""
from tests.conftest import ROOT, small_config

PRICE_COLUMNS = ["open", "high", "low", "close", "adj_close"]


def _predictions(the_plan) -> pd.DataFrame:
    """The backtest's predictions frame of ``the_plan`` (every window trained and assembled)."""
    done = run_windows(the_plan, progress=False)
    return assemble(the_plan, policy(the_plan.config, the_plan.windows), done).predictions


@pytest.fixture(scope="module")
def prices():
    return load_prices("csv", path=ROOT / "data" / "sp500.csv", start="2009-01-01", end="2011-12-31")


def _config(tmp_path, strategy: str, **sections):
    return parse_config(small_config(
        tmp_path, strategy={"name": strategy, "params": {}},
        training={"epochs": 1, "seeds": 1}, schedules=["constant"],
        **{"windows": {"train": 200, "test": 42, "purge": 5}, **sections},
    ))


@pytest.mark.parametrize("strategy", sorted(ONE_ASSET))
def test_every_baseline_never_reads_the_test_targets(prices, strategy):
    model = get_strategy(strategy, {})
    table = model.build(prices)
    rows = np.arange(len(table.y))
    cut = len(rows) // 2
    train, test = take(table, rows[:cut]), take(table, rows[cut:])
    garbage = replace(test, y=pd.Series(np.random.default_rng(0).uniform(-1e6, 1e6, len(test.y)), index=test.y.index))
    clean = np.asarray(model.baseline(train, test))
    assert clean.shape == (len(test.y),) and np.isfinite(clean).all()
    np.testing.assert_array_equal(clean, np.asarray(model.baseline(train, garbage)))
    moved = replace(train, y=train.y * 1.5)  # sanity: the baseline is fitted on the train targets
    assert not np.array_equal(clean, np.asarray(model.baseline(moved, test)))


@pytest.mark.parametrize("strategy", sorted(ONE_ASSET))
def test_a_planted_outlier_in_a_test_slice_changes_nothing_fitted_for_every_strategy(tmp_path, prices, strategy):
    config = _config(tmp_path, strategy)
    the_plan = plan(config, prices)
    k = 1
    window = the_plan.windows[k]
    dates = pd.DatetimeIndex(the_plan.table.dates)
    outlier = dates[window.test_rows[len(window.test_rows) // 2]]
    planted = prices.copy()
    planted.loc[outlier, PRICE_COLUMNS] *= 50.0
    clean = run_windows(the_plan, progress=False, keep_fitted=True)[k]
    dirty = run_windows(plan(config, planted), progress=False, keep_fitted=True)[k]
    assert clean.index == dirty.index == k
    for scaler in ("x_scaler", "y_scaler"):
        for name in ("mean", "std"):
            np.testing.assert_array_equal(getattr(getattr(clean.fitted, scaler), name),
                                          getattr(getattr(dirty.fitted, scaler), name))
    for key, value in clean.fitted.result.state.items():
        assert np.array_equal(value.numpy(), dirty.fitted.result.state[key].numpy()), key
    a, b = (frame[frame["date"] < outlier] for frame in (clean.predictions, dirty.predictions))
    assert len(a) and a["date"].equals(b["date"])
    for column in ("baseline", "prediction"):  # rows before the outlier: their inputs did not move
        np.testing.assert_array_equal(a[column], b[column])
    assert not clean.predictions["target"].equals(dirty.predictions["target"])  # the outlier is in this slice


@pytest.mark.parametrize("strategy", sorted(ONE_ASSET))
@pytest.mark.parametrize("horizon", [1, 5, 10])
def test_the_purge_must_cover_the_label_horizon_and_then_no_train_label_reaches_the_test_slice(
        tmp_path, prices, strategy, horizon):
    params = {"horizon": horizon} if "horizon" in STRATEGIES[strategy].params else {}  # pricers: horizon 0
    h = get_strategy(strategy, params).build(prices).horizon
    for purge in sorted({max(h - 1, 0), h, h + 3}):
        for mode in ("rolling", "expanding"):
            raw = small_config(tmp_path, strategy={"name": strategy, "params": params},
                               windows={"train": 200, "test": 42, "purge": purge, "mode": mode, "embargo": 2})
            if purge < h:
                with pytest.raises(HarnessError, match=f"windows.purge: {purge} is shorter than the label horizon {h}"):
                    plan(parse_config(raw), prices)
                continue
            the_plan = plan(parse_config(raw), prices)
            dates = np.unique(the_plan.table.dates)
            position = np.searchsorted(dates, np.asarray(the_plan.table.dates))
            for window in the_plan.windows:
                last_label = position[window.train_rows].max() + h  # the last date a train label looks at
                assert last_label < position[window.test_rows].min(), (purge, mode, window.index)


@pytest.mark.parametrize(("short_purge", "status"), [("error", 2), ("warn", 0)])
def test_a_short_purge_is_an_error_or_a_warning_as_configured_through_the_cli(cli, tmp_path, short_purge, status):
    raw = small_config(tmp_path, windows={"train": 252, "test": 42, "purge": 2, "short_purge": short_purge})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    done = cli("plan", str(path))
    assert done.returncode == status, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert "windows.purge: 2 is shorter than the label horizon 5" in lines[0]
    assert ("short_purge: warn to accept it" in lines[0]) == (short_purge == "error")
    assert ("train from" in done.stdout) == (short_purge == "warn")


def _embargo_rows(the_plan, embargo: int) -> np.ndarray:
    """Rows dated in the ``embargo`` dates after each test slice but the last."""
    dates = np.unique(the_plan.table.dates)
    position = np.searchsorted(dates, np.asarray(the_plan.table.dates))
    zone = np.concatenate([np.arange(1, embargo + 1) + position[w.test_rows].max() for w in the_plan.windows[:-1]])
    return np.flatnonzero(np.isin(position, zone))


def test_the_embargo_keeps_the_rows_after_each_test_slice_out_of_later_training(tmp_path, prices):
    embargo = 10
    config = parse_config(small_config(tmp_path, training={"epochs": 1, "seeds": 1}, schedules=["constant"],
                                       windows={"train": 200, "test": 42, "purge": 5, "embargo": embargo}))
    the_plan = plan(config, prices)
    rows = _embargo_rows(the_plan, embargo)
    assert len(rows) == embargo * (len(the_plan.windows) - 1)
    for window in the_plan.windows:  # in the plan: no train window holds an embargoed row
        assert not np.isin(window.train_rows, rows).any()
    y = the_plan.table.y.copy()
    y.iloc[rows] = np.random.default_rng(1).uniform(1.0, 1e3, len(rows))
    garbage = replace(the_plan.table, y=y)
    clean = _predictions(the_plan)
    dirty = _predictions(replace(the_plan, table=garbage))
    for column in ("prediction", "baseline"):  # in the engine: nothing fitted saw them
        np.testing.assert_array_equal(clean[column], dirty[column])
    # Sanity: without the embargo the same rows are trained on, and the numbers move.
    open_plan = plan(config.model_copy(update={"windows": config.windows.model_copy(update={"embargo": 0})}), prices)
    assert np.isin(np.concatenate([w.train_rows for w in open_plan.windows]), rows).any()
    a = _predictions(open_plan)
    b = _predictions(replace(open_plan, table=replace(open_plan.table, y=y)))
    assert not np.array_equal(a["prediction"], b["prediction"])
