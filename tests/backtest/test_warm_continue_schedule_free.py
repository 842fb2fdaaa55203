"""``warm_continue`` spans schedule_free's warmup over all windows, as it spans every schedule
(design section 5): the warmup runs once, from window 0, and the later windows continue at the
base LR; ``warm_restart`` warms up again in every window. They are different backtests."""

from __future__ import annotations

import numpy as np
import pytest

from harness.backtest import run_backtest
from harness.config import parse_config
from harness.data import load_prices
from harness.schedules import get_schedule, window_lr_table
from harness.training import train
from tests.conftest import ROOT, small_config

SCHEDULE_FREE = {"name": "schedule_free", "warmup": 0.3}


@pytest.fixture(scope="module")
def prices():
    return load_prices("csv", path=ROOT / "data" / "sp500.csv", start="2010-01-01", end="2011-12-31")


@pytest.fixture(scope="module")
def backtests(prices, tmp_path_factory):
    folder = tmp_path_factory.mktemp("warm")
    out = {}
    for boundary in ("warm_restart", "warm_continue"):
        config = parse_config(small_config(folder, training={"epochs": 2, "seeds": 1, "boundary": boundary},
                                           schedules=[SCHEDULE_FREE, "constant"]))
        out[boundary] = run_backtest(config, prices=prices, progress=False)
    return out


@pytest.mark.slow
def test_warm_continue_warms_schedule_free_up_once_over_all_windows(backtests):
    continued, restarted = backtests["warm_continue"], backtests["warm_restart"]
    label = continued.labels[0]
    spanned = continued.lr_curve(label)  # every window's LRs, one after another
    n = continued.n_windows
    assert n >= 4 and len(spanned) % n == 0
    expected = get_schedule(SCHEDULE_FREE).nominal_table(len(spanned), continued.config.training.lr)
    np.testing.assert_array_equal(spanned, expected)  # one ramp over all windows' steps, then the base LR
    ramp = get_schedule(SCHEDULE_FREE).warmup_steps(len(spanned))
    assert ramp > len(spanned) // n  # the warmup reaches past window 0 ...
    assert (spanned[ramp:] == continued.config.training.lr).all()  # ... and never starts again
    restart = restarted.lr_curve(label)  # the first window's LRs: a warmup of its own steps
    np.testing.assert_array_equal(restart, get_schedule(SCHEDULE_FREE).nominal_table(len(restart), 1e-3))


@pytest.mark.slow
def test_warm_continue_and_warm_restart_schedule_free_members_differ(backtests):
    continued, restarted = backtests["warm_continue"], backtests["warm_restart"]
    label = continued.labels[0]
    ours = continued.predictions.loc[continued.predictions["schedule"] == label, "prediction"].to_numpy()
    theirs = restarted.predictions.loc[restarted.predictions["schedule"] == label, "prediction"].to_numpy()
    assert ours.shape == theirs.shape and not np.array_equal(ours, theirs)
    # the constant members do not warm up: warm_continue and warm_restart train them alike
    same = [b.predictions.loc[b.predictions["schedule"] == "constant", "prediction"].to_numpy()
            for b in (continued, restarted)]
    np.testing.assert_array_equal(*same)


def test_a_schedule_free_member_follows_its_lr_table(one_thread):
    """``train(..., lr_tables=...)``: a schedule-free member steps at its row's LRs (warmup included),
    so window k of a warm_continue backtest continues the ramp window 0 started; without a table it
    keeps its own warmup (bitwise as before)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(96, 3)).astype(np.float32)
    y = (X[:, 0] + 0.1 * rng.normal(size=96)).astype(np.float32)
    settings = {"schedules": [SCHEDULE_FREE], "seeds": 2, "epochs": 3, "batch_size": 32, "lr": 0.01,
                "model": {"hidden": [8]}}
    steps = 3 * 3  # epochs x batches
    own = train(X, y, **settings)
    np.testing.assert_array_equal(np.asarray(own.lr).reshape(2, -1)[0],
                                  get_schedule(SCHEDULE_FREE).nominal_table(steps, 0.01))
    for k in range(4):
        table = window_lr_table(SCHEDULE_FREE, steps, k, "warm_continue", 4, 0.01)
        result = train(X, y, lr_tables=np.stack([table, table]), **settings)
        np.testing.assert_array_equal(np.asarray(result.lr).reshape(2, -1), np.stack([table, table]))
        if k > 0:  # past the ramp (30% of 4 windows' steps ends in window 1): the base LR from step one
            assert table[-1] == 0.01
    first = window_lr_table(SCHEDULE_FREE, steps, 0, "warm_continue", 4, 0.01)
    assert first[-1] < 0.01  # window 0 alone is still warming up
