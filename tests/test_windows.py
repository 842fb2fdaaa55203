"""The walk-forward splitter: formulas, invariants over parameter grids, sklearn agreement."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score
from sklearn.model_selection import TimeSeriesSplit, cross_val_score

from harness.data import load_prices
from harness.errors import ConfigError, HarnessError
from harness.windows import WalkForward, parse_size


def reference_windows(n, train, test, step, purge, embargo, mode):
    """The design's definition, written naively with Python sets (independent of bounds())."""
    windows, embargoed, k = [], set(), 0
    while True:
        end = train + k * step
        start = 0 if mode == "expanding" else k * step
        test_rows = list(range(end + purge, end + purge + test))
        if test_rows[-1] >= n:
            return windows
        train_rows = [i for i in range(start, end) if i not in embargoed]
        windows.append((train_rows, test_rows))
        embargoed |= set(range(test_rows[-1] + 1, test_rows[-1] + 1 + embargo))
        k += 1


def splits(cv, X):
    return [(train.tolist(), test.tolist()) for train, test in cv.split(X)]


# -- exact windows -----------------------------------------------------------------------------


def test_rolling_windows_by_hand():
    cv = WalkForward(train=4, test=2, purge=1)
    assert splits(cv, np.zeros(12)) == [
        ([0, 1, 2, 3], [5, 6]),
        ([2, 3, 4, 5], [7, 8]),
        ([4, 5, 6, 7], [9, 10]),
    ]


def test_expanding_windows_with_step_and_embargo_by_hand():
    cv = WalkForward(train=3, test=2, step=3, purge=0, embargo=1, mode="expanding")
    # tests [3,5) [6,8) [9,11); the row after each test slice (5, 8) leaves every later train
    assert splits(cv, np.zeros(11)) == [
        ([0, 1, 2], [3, 4]),
        ([0, 1, 2, 3, 4], [6, 7]),
        ([0, 1, 2, 3, 4, 6, 7], [9, 10]),
    ]
    plan = cv.describe(11)
    assert plan.columns.tolist() == ["k", "train_start", "train_end", "test_start", "test_end", "n_train"]
    assert plan.to_numpy().tolist() == [[0, 0, 3, 3, 5, 3], [1, 0, 6, 6, 8, 5], [2, 0, 9, 9, 11, 7]]


# -- invariants over a parameter grid ----------------------------------------------------------

params = st.fixed_dictionaries({
    "train": st.integers(1, 40),
    "test": st.integers(1, 15),
    "step": st.one_of(st.none(), st.integers(1, 20)),
    "purge": st.integers(0, 8),
    "embargo": st.integers(0, 6),
    "mode": st.sampled_from(["rolling", "expanding"]),
})


@settings(max_examples=400, deadline=None)
@given(p=params, extra=st.integers(0, 120))
def test_invariants_and_reference(p, extra):
    n = p["train"] + p["purge"] + p["test"] + extra
    cv = WalkForward(**p)
    step = p["test"] if p["step"] is None else p["step"]
    expected = reference_windows(n, p["train"], p["test"], step, p["purge"], p["embargo"], p["mode"])
    if any(not train for train, _ in expected):  # the embargo ate a whole train window
        with pytest.raises(HarnessError, match="windows.embargo"):
            list(cv.split(np.zeros((n, 2))))
        return
    got = list(cv.split(np.zeros((n, 2))))
    assert [(a.tolist(), b.tolist()) for a, b in got] == expected
    assert len(got) == cv.get_n_splits(np.zeros((n, 2))) == len(cv.describe(n)) >= 1
    embargoed: set[int] = set()
    for train, test in got:
        assert train.dtype == np.int64 and test.dtype == np.int64
        assert not set(train) & set(test)
        assert train.max() < test.min() - p["purge"]
        assert np.array_equal(test, np.arange(test[0], test[0] + p["test"])) and test[-1] < n
        assert not embargoed & set(train)
        embargoed |= set(range(test[-1] + 1, test[-1] + 1 + p["embargo"]))
    if step == p["test"]:
        tests = np.concatenate([test for _, test in got])
        start = p["train"] + p["purge"]
        assert np.array_equal(tests, np.arange(start, start + len(got) * p["test"]))  # once each, in order
        assert n - tests[-1] - 1 < p["test"]  # only a partial slice is left over


@settings(max_examples=200, deadline=None)
@given(p=params, extra=st.integers(0, 60))
def test_rolling_train_length_and_expanding_start(p, extra):
    p["embargo"] = 0
    n = p["train"] + p["purge"] + p["test"] + extra
    for train, _ in WalkForward(**p).split(np.zeros(n)):
        if p["mode"] == "rolling":
            assert len(train) == p["train"]
        else:
            assert train[0] == 0


@pytest.mark.parametrize("mode", ["rolling", "expanding"])
@pytest.mark.parametrize("train,test,purge,n_splits", [
    (10, 3, 0, 2), (10, 3, 2, 5), (50, 7, 5, 9), (1, 1, 0, 4), (100, 21, 5, 12),
])
def test_agrees_with_sklearn_time_series_split(mode, train, test, purge, n_splits):
    n = train + purge + n_splits * test
    X = np.zeros((n, 1))
    ours = WalkForward(train=train, test=test, purge=purge, mode=mode)
    theirs = TimeSeriesSplit(
        n_splits=n_splits, max_train_size=train if mode == "rolling" else None, test_size=test, gap=purge
    )
    assert ours.get_n_splits(X) == theirs.get_n_splits(X) == n_splits
    for (a_train, a_test), (b_train, b_test) in zip(ours.split(X), theirs.split(X), strict=True):
        assert np.array_equal(a_train, b_train) and np.array_equal(a_test, b_test)


def test_cross_val_score_uses_the_splits():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.standard_normal(300)
    cv = WalkForward(train=100, test=40, purge=5)
    scores = cross_val_score(LinearRegression(), X, y, cv=cv)
    manual = [
        r2_score(y[test], LinearRegression().fit(X[train], y[train]).predict(X[test]))
        for train, test in cv.split(X)
    ]
    assert len(scores) == cv.get_n_splits(X) == 4
    np.testing.assert_allclose(scores, manual, rtol=1e-12)


# -- calendar sizes on the bundled S&P 500 dates -----------------------------------------------


@pytest.fixture(scope="module")
def spx() -> pd.DataFrame:
    return load_prices("csv", path="data/sp500.csv")


def calendar_reference(dates: pd.DatetimeIndex, offset: pd.DateOffset) -> int:
    counts = [
        int(((dates >= day) & (dates < day + offset)).sum())
        for day in dates if day + offset <= dates[-1]
    ]
    return sorted(counts)[(len(counts) - 1) // 2]


@pytest.mark.parametrize("size,offset,low,high", [
    ("1Y", pd.DateOffset(years=1), 250, 253),
    ("3Y", pd.DateOffset(years=3), 750, 758),
    ("6M", pd.DateOffset(months=6), 124, 127),
    ("63d", pd.DateOffset(days=63), 42, 45),
    ("2W", pd.DateOffset(weeks=2), 10, 10),
])
def test_calendar_sizes_on_spx(spx, size, offset, low, high):
    rows = parse_size(size, spx.index, "windows.train")
    assert rows == calendar_reference(spx.index, offset)
    assert low <= rows <= high


def test_calendar_size_is_the_lower_median_count():
    dates = pd.DatetimeIndex(["2001-01-01", "2001-01-02", "2001-01-04", "2001-01-05", "2001-01-07", "2001-01-08"])
    # starts with d + 2 days <= Jan 8: Jan 1, 2, 4, 5 hold 2, 1, 2, 1 rows in [d, d + 2 days)
    assert parse_size("2D", dates) == 1
    assert parse_size("1W", dates) == 5  # only Jan 1 starts a whole week: [Jan 1, Jan 8) holds 5 rows


def test_calendar_windows_equal_the_converted_integer_windows(spx):
    by_calendar = WalkForward(train="3Y", test="1M", step="2W", purge=5, embargo=2)
    rows = {name: parse_size(size, spx.index) for name, size in (("train", "3Y"), ("test", "1M"), ("step", "2W"))}
    by_rows = WalkForward(**rows, purge=5, embargo=2)
    with_dates = WalkForward(train="3Y", test="1M", step="2W", purge=5, embargo=2, dates=spx.index)
    expected = splits(by_rows, spx)
    assert splits(by_calendar, spx) == expected
    assert splits(with_dates, np.arange(len(spx))) == expected
    assert by_calendar.get_n_splits(spx) == with_dates.get_n_splits() == len(expected) > 100


def test_parse_size_rows_and_digit_strings():
    assert parse_size(21) == 21 and parse_size("756") == 756 and parse_size(np.int64(5)) == 5


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,message", [
    ({"train": -5, "test": 21}, "windows.train: must be > 0, got -5"),
    ({"train": 10, "test": 0}, "windows.test: must be > 0, got 0"),
    ({"train": 10, "test": 5, "step": -1}, "windows.step: must be > 0, got -1"),
    ({"train": 10, "test": 5, "purge": -1}, "windows.purge: must be >= 0, got -1"),
    ({"train": 10, "test": 5, "embargo": -2}, "windows.embargo: must be >= 0, got -2"),
    ({"train": 10, "test": 5, "purge": 1.5}, "windows.purge: must be a whole number of rows >= 0, got 1.5"),
    ({"train": 10, "test": 5, "mode": "roling"}, "windows.mode: must be 'rolling' or 'expanding', got 'roling' (did you mean 'rolling'?)"),
    ({"train": "3X", "test": 5}, "windows.train: cannot read '3X' as a size; use a number of rows"),
    ({"train": "0Y", "test": 5}, "windows.train: must be > 0, got '0Y'"),
    ({"train": 2.5, "test": 5}, "windows.train: must be a whole number of rows or a calendar length like '3Y', got 2.5"),
    ({"train": True, "test": 5}, "windows.train: must be a whole number"),
])
def test_invalid_settings_name_the_field(kwargs, message):
    with pytest.raises(ConfigError) as info:
        WalkForward(**kwargs)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_windows_longer_than_the_data():
    with pytest.raises(HarnessError, match=r"the data has 50 rows but one window needs train 40 \+ purge 5 \+ test 10 = 55"):
        WalkForward(train=40, test=10, purge=5).get_n_splits(np.zeros(50))


def test_calendar_errors(spx):
    with pytest.raises(ConfigError, match="windows.train: calendar size '3Y' needs dates"):
        list(WalkForward(train="3Y", test=21).split(np.zeros(2000)))
    with pytest.raises(HarnessError, match=r"windows.train: '30Y' is longer than the data \(1999-01-04 to 2018-12-31\)"):
        WalkForward(train="30Y", test=21).get_n_splits(spx)
    with pytest.raises(HarnessError, match=r"has 5031 rows but one window needs train \d+ \('19Y'\) \+ purge 0 \+ test \d+ \('2Y'\)"):
        WalkForward(train="19Y", test="2Y").get_n_splits(spx)
    with pytest.raises(HarnessError, match="dates has 5031 entries but X has 10 rows"):
        WalkForward(train=2, test=2, dates=spx.index).get_n_splits(np.zeros(10))
    with pytest.raises(HarnessError, match="pass X"):
        WalkForward(train=2, test=2).get_n_splits()


def test_embargo_that_empties_a_train_window():
    with pytest.raises(HarnessError, match="windows.embargo: 10 removes every train row of window 2; lower it"):
        list(WalkForward(train=2, test=1, step=2, embargo=10).split(np.zeros(20)))


def test_repr_shows_the_settings():
    cv = WalkForward(train="3Y", test=21, purge=5, mode="expanding")
    assert repr(cv) == "WalkForward(train='3Y', test=21, step=None, purge=5, embargo=0, mode='expanding')"
