"""The production window and model: trained on the most recent train window, the one ending at the
data's last labelled row (the strategy table's last row), as long as the backtest's train windows."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from harness.backtest.planning import Plan, plan, production_window
from harness.config import parse_config
from harness.production import EXAMPLE_ROWS, train_production
from harness.windows import parse_size
from tests.conftest import small_config


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return parse_config(small_config(tmp_path_factory.mktemp("production"), training={"epochs": 1, "seeds": 2}))


@pytest.fixture(scope="module")
def the_plan(config):
    return plan(config)


def test_production_window_ends_at_the_last_labelled_row(the_plan):
    window = production_window(the_plan)
    dates, last = the_plan.dates, the_plan.windows[-1]
    assert window.train_rows[-1] == len(the_plan.table.y) - 1  # the table holds only labelled rows
    assert dates[window.train_rows[-1]] == dates[-1]
    assert dates[window.train_rows[-1]] > dates[last.train_rows[-1]]  # newer than the last backtest window
    assert window.test_rows.size == 0 and window.index == len(the_plan.windows)
    # rolling: the last windows.train dates, contiguous
    assert len(window.train_rows) == the_plan.config.windows.train == 252
    np.testing.assert_array_equal(window.train_rows, np.arange(len(dates) - 252, len(dates)))


def test_expanding_takes_every_row_from_the_start(config):
    expanding = plan(config.model_copy(update={"windows": config.windows.model_copy(update={"mode": "expanding"})}))
    window = production_window(expanding)
    np.testing.assert_array_equal(window.train_rows, np.arange(len(expanding.dates)))
    assert len(window.train_rows) > len(expanding.windows[-1].train_rows)


def test_a_calendar_train_length_converts_through_the_dates(config):
    one_year = plan(config.model_copy(update={"windows": config.windows.model_copy(update={"train": "1Y"})}))
    window = production_window(one_year)
    unique = pd.DatetimeIndex(np.unique(one_year.dates.values))
    assert len(window.train_rows) == parse_size("1Y", unique, "windows.train")
    assert len(window.train_rows) == len(one_year.windows[-1].train_rows)  # same length as the backtest's
    assert window.train_rows[-1] == len(one_year.dates) - 1


def test_a_date_is_never_split_between_taken_and_left_rows(config):
    """Several rows per date (an option chain): the last ``train`` dates, every row of each."""
    dates = pd.DatetimeIndex(np.repeat(pd.bdate_range("2020-01-01", periods=10), 3))
    rolling = config.model_copy(update={"windows": config.windows.model_copy(update={"train": 4, "embargo": 2})})
    fake = Plan(rolling, None, None, SimpleNamespace(dates=dates), [None] * 3, "")
    window = production_window(fake)
    np.testing.assert_array_equal(window.train_rows, np.arange(18, 30))  # 4 dates x 3 rows, no embargo gap
    assert window.index == 3 and window.test_rows.size == 0


def test_production_model_trains_on_the_production_window(config, the_plan):
    production = train_production(config, "constant")
    window = production_window(the_plan)
    last = the_plan.windows[-1]
    assert production.train_end == the_plan.dates[-1]
    assert production.train_end > the_plan.dates[last.train_rows[-1]]
    assert production.train_start == the_plan.dates[window.train_rows[0]]
    assert production.n_train == len(window.train_rows) == 252
    assert production.window == len(the_plan.windows)
    span = {"train_start": f"{production.train_start:%Y-%m-%d}", "train_end": f"{the_plan.dates[-1]:%Y-%m-%d}",
            "train_rows": "252"}
    assert production.span() == span and span.items() <= production.params().items()
    # the example is the window's last train rows, and the plain module reproduces the trainer's seed mean
    assert production.example.shape == (EXAMPLE_ROWS, 4)
    np.testing.assert_array_equal(production.example_dates, the_plan.dates[window.train_rows[-EXAMPLE_ROWS:]])
    np.testing.assert_array_equal(production.example,
                                  the_plan.table.X.to_numpy(np.float64)[window.train_rows[-EXAMPLE_ROWS:]])
    np.testing.assert_allclose(production.predict(production.example), production.expected, rtol=0, atol=1e-6)
    assert "ending at the data's last labelled row" in production.describe()[0]
