"""Price loading: bundled files, sources, validation and repairs, synthetic paths, fingerprint."""

from __future__ import annotations

import csv
import gzip
import io
import logging
import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import arch
from harness.data import (
    COLUMNS, cache_path, fingerprint, load_prices, simulate, validate_prices, yfinance_frame,
)
from harness.errors import ConfigError, DataError, HarnessError

ROOT = Path(__file__).resolve().parents[1]
SPX = ROOT / "data" / "sp500.csv"
HEADER = "Date,Open,High,Low,Close,Adj Close,Volume"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HARNESS_OFFLINE", "1")


def spx_lines(n: int = 10) -> list[str]:
    """The first ``n`` data lines of the bundled S&P 500 file (real rows to perturb)."""
    return SPX.read_text().splitlines()[1:n + 1]


def write(tmp_path: Path, lines: list[str], name: str = "prices.csv", header: str = HEADER) -> Path:
    path = tmp_path / name
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def set_field(line: str, column: int, value: str) -> str:
    fields = line.split(",")
    fields[column] = value
    return ",".join(fields)


def load_error(path: Path, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        load_prices("csv", path=path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# -- bundled data ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sp500", "nasdaq"])
def test_bundled_files_are_the_arch_data_sets(name):
    packaged = Path(arch.__file__).parent / "data" / name / f"{name}.csv.gz"
    assert (ROOT / "data" / f"{name}.csv").read_bytes() == gzip.decompress(packaged.read_bytes())


@pytest.mark.parametrize("name", ["sp500", "nasdaq"])
def test_bundled_files_load_as_in_the_file(name):
    prices = load_prices("csv", path=f"data/{name}.csv")
    with open(ROOT / "data" / f"{name}.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(prices.columns) == list(COLUMNS) and prices.index.name == "date"
    assert all(dtype == np.float64 for dtype in prices.dtypes)
    assert prices.index.is_monotonic_increasing and prices.index.is_unique
    assert len(prices) == len(rows) == 5031
    assert prices.index[0] == pd.Timestamp("1999-01-04") and prices.index[-1] == pd.Timestamp("2018-12-31")
    expected_dates = [datetime.strptime(row["Date"], "%m/%d/%Y") for row in rows]
    assert list(prices.index.to_pydatetime()) == expected_dates
    for ours, theirs in [("open", "Open"), ("high", "High"), ("low", "Low"), ("close", "Close"),
                         ("adj_close", "Adj Close"), ("volume", "Volume")]:
        assert prices[ours].tolist() == [float(row[theirs]) for row in rows]


def test_default_is_the_bundled_sp500_from_any_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert len(load_prices()) == 5031


# -- file layouts ---------------------------------------------------------------------------


def test_parquet_with_a_date_index_equals_the_csv(tmp_path):
    prices = load_prices("csv", path=SPX)
    path = tmp_path / "spx.parquet"
    prices.iloc[:300].rename(columns={"adj_close": "Adj Close"}).to_parquet(path)
    again = load_prices("parquet", path=path)
    pd.testing.assert_frame_equal(again, prices.iloc[:300])
    assert fingerprint(again) == fingerprint(prices.iloc[:300])


@pytest.mark.parametrize("header", [
    "timestamp,open,high,low,close,adj_close,volume",
    "DATETIME,Open,High,Low,Close,AdjClose,Volume",
    ",Open,High,Low,Close,Adj Close,Volume",  # unnamed first column of dates
])
def test_date_and_price_column_names_are_normalised(tmp_path, header):
    lines = [line.replace("1/", "01/", 1) for line in spx_lines(5)]
    prices = load_prices("csv", path=write(tmp_path, lines, header=header))
    assert list(prices.columns) == list(COLUMNS) and prices.index[0] == pd.Timestamp("1999-01-04")
    assert prices["adj_close"].iloc[1] == 1244.780029


def test_a_close_only_file_gets_synthesised_open_high_low(tmp_path):
    lines = ["2001-01-02,100", "2001-01-03,102", "2001-01-04,101"]
    prices = load_prices("csv", path=write(tmp_path, lines, header="Date,Close"))
    assert prices["open"].tolist() == [100, 100, 102]
    assert prices["high"].tolist() == [100, 102, 102]
    assert prices["low"].tolist() == [100, 100, 101]
    assert prices["adj_close"].tolist() == prices["close"].tolist() == [100, 102, 101]
    assert prices["volume"].isna().all()


def test_adj_close_stands_in_for_close(tmp_path):
    prices = load_prices("csv", path=write(tmp_path, ["2001-01-02,5", "2001-01-03,6"], header="date,Adj Close"))
    assert prices["close"].tolist() == [5, 6] == prices["adj_close"].tolist()


def test_no_price_column_names_the_columns_found(tmp_path):
    message = load_error(write(tmp_path, ["2001-01-02,5,x"], header="Date,Volume,Ticker"))
    assert "no price column among ['Date', 'Volume', 'Ticker']" in message and "'Close'" in message


def test_unknown_columns_are_dropped_or_refused(tmp_path, caplog):
    path = write(tmp_path, ["2001-01-02,5,a", "2001-01-03,6,b"], header="Date,Close,Ticker")
    with caplog.at_level(logging.WARNING, logger="harness.data"):
        assert list(load_prices("csv", path=path).columns) == list(COLUMNS)
    assert "unknown columns ['Ticker']" in caplog.text and "dropped them" in caplog.text
    assert "unknown columns ['Ticker']; remove them or set data.repair: true" in load_error(path, repair=False)


def test_start_and_end_trim_every_source(tmp_path):
    prices = load_prices("csv", path=SPX, start="2005-01-03", end="2005-02-01")
    assert prices.index[0] == pd.Timestamp("2005-01-03") and prices.index[-1] == pd.Timestamp("2005-01-31")
    synthetic = load_prices("synthetic", synthetic={"n_days": 30}, end="2000-01-10")
    assert synthetic.index[-1] == pd.Timestamp("2000-01-07")
    assert "no rows in [2030-01-01, None)" in load_error(SPX, start="2030-01-01")
    with pytest.raises(ConfigError, match="data.start: cannot read 'soon' as a date"):
        load_prices("csv", path=SPX, start="soon")


# -- validation and repairs -----------------------------------------------------------------


def unsorted(lines):
    return [lines[1], lines[0], *lines[2:]]


def duplicated(lines):
    return [*lines[:3], set_field(lines[2], 4, "9999"), *lines[3:]]


def gap(lines):
    return [*lines[:3], set_field(lines[3], 4, "null"), set_field(lines[4], 4, ""), *lines[5:]]


def leading(lines):
    return [set_field(lines[0], 1, "null"), *lines[1:]]


REPAIRS = [
    (unsorted, "dates are not sorted (1999-01-04 comes after 1999-01-05)", "sorted them"),
    (duplicated, "1 duplicated dates (first 1999-01-06)", "kept the last row of each"),
    (gap, "2 missing prices (first in 'close' on 1999-01-07)", "carried the last price forward (longest gap 2 rows)"),
    (leading, "1 leading rows with missing prices (before 1999-01-05)", "dropped them"),
]


@pytest.mark.parametrize("perturb,problem,done", REPAIRS, ids=[r[0].__name__ for r in REPAIRS])
def test_repairs_are_logged_and_refused_without_repair(tmp_path, caplog, perturb, problem, done):
    path = write(tmp_path, perturb(spx_lines()))
    with caplog.at_level(logging.WARNING, logger="harness.data"):
        prices = load_prices("csv", path=path)
    assert problem in caplog.text and done in caplog.text
    assert prices.index.is_monotonic_increasing and prices.index.is_unique and not prices.isna().any().any()
    assert problem in load_error(path, repair=False) and "set data.repair: true" in load_error(path, repair=False)


def frame(lines: list[str]) -> pd.DataFrame:
    return pd.read_csv(io.StringIO("\n".join([HEADER, *lines])))


def test_repaired_values():
    lines = spx_lines()
    reference = load_prices("csv", path=SPX).iloc[:10]
    pd.testing.assert_frame_equal(validate_prices(frame(unsorted(lines))), reference)
    kept = validate_prices(frame(duplicated(lines)))
    assert kept.loc["1999-01-06", "close"] == 9999 and len(kept) == 10
    filled = validate_prices(frame(gap(lines)))
    assert filled["close"].iloc[3] == filled["close"].iloc[4] == reference["close"].iloc[2]
    assert filled["open"].iloc[3] == reference["open"].iloc[3]  # only the missing cells change
    pd.testing.assert_frame_equal(validate_prices(frame(leading(lines))), reference.iloc[1:])


def test_duplicates_keep_the_last_row_in_the_file_even_when_unsorted(tmp_path):
    lines = spx_lines(400)[::-1]
    lines.insert(300, set_field(lines[50], 4, "1111"))  # a later line for the date of line 50
    lines.insert(10, set_field(lines[200], 4, "2222"))  # an earlier line for the date of line 200
    prices = load_prices("csv", path=write(tmp_path, lines))
    reference = load_prices("csv", path=SPX).iloc[:400]
    assert len(prices) == 400 and prices.index.equals(reference.index)
    changed = prices["close"] != reference["close"]
    assert prices["close"][changed].tolist() == [1111.0]


def test_a_long_gap_is_an_error_unless_trimmed_away(tmp_path):
    lines = spx_lines(12)
    lines[3:9] = [set_field(line, 5, "null") for line in lines[3:9]]
    path = write(tmp_path, lines)
    message = load_error(path)
    assert "6 missing prices in a row in 'adj_close' from 1999-01-07; at most 5 are filled" in message
    assert len(load_prices("csv", path=path, max_gap=6)) == 12
    assert len(load_prices("csv", path=path, start="1999-01-15", repair=False)) == 3


def test_non_positive_price_names_the_first_date_and_column(tmp_path):
    lines = spx_lines()
    lines[6] = set_field(lines[6], 4, "0")
    lines[4] = set_field(lines[4], 3, "-1.5")
    message = load_error(write(tmp_path, lines))
    assert "non-positive price -1.5 in 'low' on 1999-01-08; prices must be > 0" in message
    lines[4] = spx_lines()[4]
    lines[2] = set_field(lines[2], 6, "-3")
    assert "negative volume -3 in 'volume' on 1999-01-06" in load_error(write(tmp_path, lines))


@pytest.mark.parametrize("content,expected", [
    ("", "empty file"),
    (HEADER + "\n", "the CSV has a header but no rows"),
    (HEADER + "\n1/4/1999,1,2,3,4,5,6\n1/5/1999,1,2,3,4,5,6,7,8\n", "malformed CSV (Error tokenizing data"),
    ("just some words\nand more words\n", "no date column among ['just some words']"),
    (HEADER + "\n1/4/1999,1,2,3,4,5,6\nyesterday,1,2,3,4,5,6\n", "unparseable date 'yesterday' in column 'Date' (row 2)"),
    (HEADER + "\n1/4/1999,1,2,3,4,5,6\n,1,2,3,4,5,6\n", "row 2 has no date in column 'Date'"),
    (HEADER + "\n1/4/1999,1,2,3,abc,5,6\n", "non-numeric value 'abc' in column 'close' on 1999-01-04"),
    ("date,close\n20010102,5\n", "column 'date' holds numbers, not dates"),
])
def test_bad_files(tmp_path, content, expected):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    assert expected in load_error(path)


def test_missing_file_folder_and_bad_parquet(tmp_path):
    assert "nope.csv: not found; check data.path (bundled: data/sp500.csv" in load_error(tmp_path / "nope.csv")
    assert "is a folder, not a file" in load_error(tmp_path)
    fake = tmp_path / "fake.parquet"
    fake.write_text("not parquet at all")
    assert "not a readable parquet file" in load_error(fake)


def test_too_few_rows(tmp_path):
    message = load_error(write(tmp_path, spx_lines(10)), min_rows=100)
    assert "10 rows, but at least 100 are needed" in message


def test_unknown_source():
    with pytest.raises(HarnessError, match="unknown data source 'yahoo'.*valid: csv, parquet, synthetic, yfinance"):
        load_prices("yahoo")


# -- yfinance (never the network) -----------------------------------------------------------


def test_cache_path_layout(tmp_path):
    assert cache_path("^GSPC", "1d", "2000-01-01", None, tmp_path) == tmp_path / "^GSPC_1d_2000-01-01_none.parquet"
    assert cache_path("BRK/B", "1h", None, "2020-01-01", "c").name == "BRK-B_1h_none_2020-01-01.parquet"


def test_yfinance_uses_the_cache(tmp_path):
    reference = load_prices("csv", path=SPX, start="2000-01-01", end="2001-01-01")
    # What the download path writes: yfinance's frame, tz-aware dates at the exchange.
    yahoo = reference.rename(columns={"open": "Open", "high": "High", "low": "Low", "close": "Close",
                                      "adj_close": "Adj Close", "volume": "Volume"})
    yahoo.index = yahoo.index.tz_localize("America/New_York")
    yahoo.index.name = "Date"
    yahoo.reset_index().to_parquet(cache_path("^GSPC", "1d", "2000-01-01", "2001-01-01", tmp_path))
    prices = load_prices("yfinance", tickers=["^GSPC"], start="2000-01-01", end="2001-01-01", cache_dir=tmp_path)
    pd.testing.assert_frame_equal(prices, reference)


def test_yfinance_offline_without_cache_is_one_line(tmp_path):
    with pytest.raises(DataError) as info:
        load_prices("yfinance", tickers="^GSPC", start="2000-01-01", cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert "\n" not in message and "no network" in message and "no cache at" in message
    assert "^GSPC_1d_2000-01-01_none.parquet" in message
    assert message.endswith("use the bundled data: data: {source: csv, path: data/sp500.csv}")


def test_yfinance_takes_one_ticker(tmp_path):
    with pytest.raises(ConfigError, match=r"data.tickers: one ticker per backtest, got \['\^GSPC', '\^IXIC'\]"):
        load_prices("yfinance", tickers=["^GSPC", "^IXIC"], cache_dir=tmp_path)


def test_yfinance_multi_level_columns_are_flattened():
    dates = pd.DatetimeIndex(["2020-01-02", "2020-01-03"], name="Date")
    columns = pd.MultiIndex.from_product([["Adj Close", "Close", "Open"], ["^GSPC"]], names=["Price", "Ticker"])
    raw = pd.DataFrame(np.arange(6.0).reshape(2, 3) + 1, index=dates, columns=columns)
    flat = yfinance_frame(raw, "^GSPC")
    assert flat.columns.tolist() == ["Date", "Adj Close", "Close", "Open"]
    prices = validate_prices(flat)
    assert prices["adj_close"].tolist() == [1, 4] and prices["open"].tolist() == [3, 6]


# -- synthetic ------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["gbm", "heston", "regime"])
def test_synthetic_is_seeded(model):
    spec = {"model": model, "n_days": 500, "seed": 7}
    first, again = load_prices("synthetic", synthetic=spec), load_prices("synthetic", synthetic=dict(spec))
    pd.testing.assert_frame_equal(first, again)
    assert fingerprint(first) != fingerprint(load_prices("synthetic", synthetic={**spec, "seed": 8}))
    assert first.index[0] == pd.Timestamp("2000-01-03") and len(first) == 500
    assert (first.index.day_of_week < 5).all() and first["close"].iloc[0] == 100.0


def test_gbm_log_returns_match_theory():
    mu, sigma, n = 0.3, 1.0, 200_000  # a large sigma makes the Ito term -sigma^2/2 visible
    path = simulate({"model": "gbm", "mu": mu, "sigma": sigma, "n_days": n + 1, "seed": 1})
    r = np.diff(np.log(path.close))
    dt = 1 / 252
    mean, std = (mu - sigma**2 / 2) * dt, sigma * math.sqrt(dt)
    assert abs(r.mean() - mean) < 4 * std / math.sqrt(n)
    assert abs(r.std() / std - 1) < 4 / math.sqrt(2 * n)
    assert stats.kstest((r - mean) / std, "norm").pvalue > 1e-3


def test_heston_variance_is_positive_and_mean_reverts():
    kappa, theta, v0, days = 2.0, 0.04, 0.16, 253
    paths = [simulate({"model": "heston", "kappa": kappa, "theta": theta, "v0": v0, "n_days": days, "seed": s})
             for s in range(300)]
    v = np.stack([path.state for path in paths])
    assert (v > 0).all()
    for day in (63, 126, 252):
        expected = theta + (v0 - theta) * math.exp(-kappa * day / 252)  # CIR conditional mean
        assert abs(v[:, day].mean() - expected) < 4 * v[:, day].std() / math.sqrt(len(v))
    long = simulate({"model": "heston", "n_days": 50_000, "seed": 3, "rho": -0.7})
    assert abs(long.state.mean() - 0.04) < 0.006
    r = np.diff(np.log(long.close))
    assert -0.8 < np.corrcoef(r, np.diff(long.state))[0, 1] < -0.6


def test_heston_variance_stays_non_negative_when_feller_fails():
    path = simulate({"model": "heston", "xi": 1.0, "n_days": 5000, "seed": 2})
    assert (path.state >= 0).all() and np.isfinite(path.close).all() and (path.close > 0).all()


def test_regime_path_visits_both_states_with_their_volatility():
    transition = [[0.99, 0.01], [0.03, 0.97]]
    sigmas = [0.10, 0.35]
    path = simulate({"model": "regime", "n_days": 60_001, "seed": 4, "sigmas": sigmas, "transition": transition})
    state, r = path.state[1:], np.diff(np.log(path.close))
    assert set(np.unique(state)) == {0, 1}
    assert abs((state == 0).mean() - 0.03 / (0.01 + 0.03)) < 0.06  # stationary share of state 0
    leave0 = ((path.state[:-1] == 0) & (path.state[1:] == 1)).sum() / (path.state[:-1] == 0).sum()
    assert abs(leave0 - 0.01) < 0.003
    for s, sigma in enumerate(sigmas):
        assert abs(r[state == s].std() / (sigma * math.sqrt(1 / 252)) - 1) < 0.05


@pytest.mark.parametrize("spec,message", [
    ({"model": "garch"}, "unknown synthetic model (data.synthetic.model) 'garch'"),
    ({"model": "gbm", "sigm": 0.2}, "data.synthetic.sigm: not a parameter of model 'gbm' (did you mean 'sigma'?)"),
    ({"model": "gbm", "sigma": -1}, "data.synthetic.sigma: must be > 0, got -1"),
    ({"model": "heston", "rho": 2}, "data.synthetic.rho: must be in [-1, 1], got 2"),
    ({"model": "regime", "transition": [[0.9, 0.2], [0.5, 0.5]]}, "data.synthetic.transition: each row must sum to 1"),
    ({"model": "regime", "sigmas": [0.1]}, "data.synthetic.sigmas: must be a list of two numbers"),
    ({"model": "regime", "state0": 2}, "data.synthetic.state0: must be an integer in [0, 1], got 2"),
    ({"n_days": 1}, "data.synthetic.n_days: must be an integer >= 2, got 1"),
    ({"seed": "a"}, "data.synthetic.seed: must be an integer >= 0, got 'a'"),
    ({"mu": "fast"}, "data.synthetic.mu: must be a number, got 'fast'"),
])
def test_bad_synthetic_specs(spec, message):
    with pytest.raises(HarnessError) as info:
        load_prices("synthetic", synthetic=spec)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


# -- fingerprint ----------------------------------------------------------------------------


def test_fingerprint_is_stable_and_content_sensitive():
    prices = load_prices("csv", path=SPX)
    assert fingerprint(prices) == "6ac639af2e960521"  # pinned: the bundled data, as loaded
    assert fingerprint(prices.copy()) == fingerprint(prices)
    nudged = prices.copy()
    nudged.iloc[2000, 3] *= 1 + 1e-12
    assert fingerprint(nudged) != fingerprint(prices)
    shifted = prices.copy()
    shifted.index = shifted.index.where(shifted.index != shifted.index[-1], pd.Timestamp("2019-01-02"))
    assert fingerprint(shifted) != fingerprint(prices)
    assert fingerprint(prices.iloc[:-1]) != fingerprint(prices)
