"""Price loading: bundled files, sources, validation and repairs, synthetic paths, fingerprint."""

from __future__ import annotations

import csv
import gzip
import io
import logging
import math
import warnings
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
from tests.conftest import load_error

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
    lines = [line.replace("1/", "01/", 1) for line in spx_lines(8)]  # to 01/13/1999: month first
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
    (HEADER + "\n1999-01-04,1,2,3,abc,5,6\n", "non-numeric value 'abc' in column 'close' on 1999-01-04"),
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


def test_yfinance_with_several_tickers_names_the_first_one_without_a_cache(tmp_path):
    with pytest.raises(DataError, match=r"yfinance \^GSPC: no network .* no cache at .*\^GSPC_1d"):
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


# -- other CSV dialects and date orders: read when the file decides, else one line naming the option


@pytest.fixture(scope="module")
def spx300() -> pd.DataFrame:
    """Three hundred rows of the bundled S&P 500, as loaded: what every dialect below must equal."""
    return load_prices("csv", path=SPX).iloc[:300]


def dialect_file(tmp_path: Path, prices: pd.DataFrame, *, sep: str = ",", decimal: str = ".",
                 thousands: bool = False, dates: str = "%Y-%m-%d", name: str = "dialect.csv") -> Path:
    """``prices`` written as another spreadsheet would: separator, decimal mark, grouping, date format."""
    def number(value: float) -> str:
        text = f"{value:,.6f}" if thousands else f"{value:.6f}"
        return text.translate(str.maketrans({",": "\x00", ".": decimal})).replace("\x00", "." if decimal == "," else ",")

    header = sep.join(["Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"])
    rows = [sep.join([date.strftime(dates), *(number(v) for v in row[:5]), f"{row[5]:.0f}"])
            for date, row in zip(prices.index, prices.to_numpy())]
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


DIALECTS = [
    ("semicolon", {"sep": ";"}),
    ("tab", {"sep": "\t"}),
    ("pipe", {"sep": "|"}),
    ("decimal-comma", {"sep": ";", "decimal": ","}),
    ("decimal-comma-thousands-dot", {"sep": ";", "decimal": ",", "thousands": True}),
    ("thousands-comma-in-semicolon-file", {"sep": ";", "thousands": True}),
    ("day-first", {"dates": "%d/%m/%Y"}),
    ("day-first-dots-decimal-comma", {"sep": ";", "decimal": ",", "thousands": True, "dates": "%d.%m.%Y"}),
    ("month-first", {"dates": "%m/%d/%Y"}),
    ("day-first-with-time", {"dates": "%d/%m/%Y %H:%M"}),
]


@pytest.mark.parametrize(("name", "how"), DIALECTS, ids=[d[0] for d in DIALECTS])
def test_other_dialects_read_to_the_same_prices_without_a_warning(tmp_path, spx300, name, how):
    path = dialect_file(tmp_path, spx300, **how)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no library warning may reach the user
        prices = load_prices("csv", path=path)
    expected = spx300.round(6)
    pd.testing.assert_frame_equal(prices, expected, check_exact=False, rtol=1e-12)


def test_the_bundled_files_read_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("sp500", "nasdaq", "sp500_panel"):
            load_prices("csv", path=ROOT / "data" / f"{name}.csv")


@pytest.mark.parametrize(("content", "option", "expected"), [
    ("date|x;close\n2010-01-04|1;2\n2010-01-05|1;3\n", "data.delimiter",
     "fields could be separated by ';' and '|'; set data.delimiter"),
    ("date;close\n2010-01-04;1,234\n2010-01-05;1,236\n", "data.decimal",
     "'1,234' could be a decimal or a thousands separator; set data.decimal"),
    ("date;close\n2010-01-04;1,5\n2010-01-05;1.5\n", "data.decimal",
     "numbers are written both as '1,5' and as '1.5'; set data.decimal"),
    ("date,close\n01/02/2010,5\n02/02/2010,6\n03/02/2010,7\n", "data.dayfirst",
     "dates such as '01/02/2010' in column 'date' read both day first (2010-02-01) and month first (2010-01-02); "
     "set data.dayfirst: true or false"),
    ("timestamp;price\n2010-01-04;5\n2010-01-05\n", "data.delimiter",
     "no date column among ['timestamp;price']; name the date column 'date' (or put the dates first), or set "
     "data.delimiter if the fields are separated by ';'"),
])
def test_a_file_that_leaves_the_dialect_open_names_the_option(tmp_path, content, option, expected):
    path = tmp_path / "open.csv"
    path.write_text(content)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        message = load_error(path)
    assert expected in message and option in message


def test_the_options_settle_what_the_file_leaves_open(tmp_path):
    path = tmp_path / "open.csv"
    path.write_text("date;close;note|x\n2010-01-04;2;a|b\n2010-01-05;3;c|d\n")
    assert "set data.delimiter" in load_error(path)
    assert load_prices("csv", path=path, delimiter=";")["close"].tolist() == [2.0, 3.0]
    path.write_text("date;close\n2010-01-04;1,234\n2010-01-05;1,236\n")
    assert load_prices("csv", path=path, decimal=",")["close"].tolist() == [1.234, 1.236]
    assert load_prices("csv", path=path, decimal=".")["close"].tolist() == [1234.0, 1236.0]
    path.write_text("date,close\n01/02/2010,5\n02/02/2010,6\n03/02/2010,7\n")
    assert load_prices("csv", path=path, dayfirst=True).index[0] == pd.Timestamp("2010-02-01")
    assert load_prices("csv", path=path, dayfirst=False).index[0] == pd.Timestamp("2010-01-02")


def test_dates_the_file_makes_unambiguous_need_no_option(tmp_path):
    """A day past 12 settles the order; so does the one order of the two that keeps the dates sorted."""
    path = tmp_path / "dates.csv"
    path.write_text("date,close\n12/01/2012,5\n13/01/2012,6\n")
    assert load_prices("csv", path=path).index.tolist() == [pd.Timestamp("2012-01-12"), pd.Timestamp("2012-01-13")]
    path.write_text("date,close\n01/12/2012,5\n01/13/2012,6\n")
    assert load_prices("csv", path=path).index.tolist() == [pd.Timestamp("2012-01-12"), pd.Timestamp("2012-01-13")]
    path.write_text("date,close\n03/01/2012,5\n02/04/2012,6\n")  # sorted only day first
    assert load_prices("csv", path=path).index.tolist() == [pd.Timestamp("2012-01-03"), pd.Timestamp("2012-04-02")]
    path.write_text("date,close\n01/03/2012,5\n04/02/2012,6\n")  # sorted only month first
    assert load_prices("csv", path=path).index.tolist() == [pd.Timestamp("2012-01-03"), pd.Timestamp("2012-04-02")]
    path.write_text("date,close\n13/01/2012,5\n14/01/2012,6\n")
    message = load_error(path, dayfirst=False)
    assert "unparseable date '13/01/2012'" in message and "(data.dayfirst: false is set)" in message


def test_the_config_options_reach_the_reader(tmp_path):
    from harness.config import parse_config
    from harness.data import load_data

    path = tmp_path / "open.csv"
    path.write_text("date,close\n01/02/2010,5\n02/02/2010,6\n03/02/2010,7\n")
    config = parse_config({"data": {"path": str(path), "dayfirst": True}})
    assert load_data(config).index[0] == pd.Timestamp("2010-02-01")
    path.write_text("date;close;note|x\n2010-01-04;2;a|b\n2010-01-05;3;c|d\n")
    assert load_data(parse_config({"data": {"path": str(path), "delimiter": ";"}}))["close"].tolist() == [2.0, 3.0]
    path.write_text("date;close\n2010-01-04;1,234\n2010-01-05;1,236\n")
    assert load_data(parse_config({"data": {"path": str(path), "decimal": ","}}))["close"].iloc[0] == 1.234


# -- one-day price spikes: a logged repair, or an error naming the date


def spiked(prices: pd.DataFrame, row: int, factor: float, rows: int = 1, columns=("close", "adj_close")) -> pd.DataFrame:
    out = prices.copy()
    for column in columns:
        out.iloc[row:row + rows, out.columns.get_loc(column)] *= factor
    return out


@pytest.mark.parametrize(("factor", "rows"), [(100.0, 1), (0.01, 1), (12.0, 1), (1000.0, 3), (50.0, 5)])
def test_a_price_spike_is_a_logged_repair_or_an_error_naming_the_date(tmp_path, caplog, spx300, factor, rows):
    path = tmp_path / "spike.csv"
    spiked(spx300, 150, factor, rows).rename_axis("Date").to_csv(path)
    day = f"{spx300.index[150]:%Y-%m-%d}"
    with caplog.at_level(logging.WARNING, logger="harness.data"):
        prices = load_prices("csv", path=path)
    assert "price spike" in caplog.text and f"on {day}" in caplog.text and "carried the last price forward" in caplog.text
    for column in ("close", "adj_close"):
        repaired = prices[column].to_numpy()
        assert (repaired[150:150 + rows] == spx300[column].iloc[149]).all()  # the last good price
        np.testing.assert_array_equal(np.delete(repaired, range(150, 150 + rows)),
                                      np.delete(spx300[column].to_numpy(), range(150, 150 + rows)))
    message = load_error(path, repair=False)
    assert "a price spike: 'close' jumps from" in message and f"on {day}" in message
    assert "set data.repair: true" in message


def test_moves_that_are_not_spikes_are_kept(tmp_path, caplog, spx300):
    """A big but real day (x3 and back), a lasting jump (an unadjusted split) and the edges stay as they are."""
    cases = {
        "threefold": spiked(spx300, 150, 3.0),
        "lasting": spiked(spx300, 150, 100.0, rows=150),
        "spike-too-long": spiked(spx300, 150, 100.0, rows=6),
        "first-row": spiked(spx300, 0, 100.0),
        "last-row": spiked(spx300, 299, 100.0),
    }
    for name, prices in cases.items():
        path = tmp_path / f"{name}.csv"
        prices.rename_axis("Date").to_csv(path)
        with caplog.at_level(logging.WARNING, logger="harness.data"):
            loaded = load_prices("csv", path=path, repair=False)
        np.testing.assert_allclose(loaded["close"].to_numpy(), prices["close"].to_numpy(), rtol=1e-12, err_msg=name)
    assert "spike" not in caplog.text


def test_the_bundled_data_has_no_spikes(caplog):
    with caplog.at_level(logging.WARNING, logger="harness.data"):
        for name in ("sp500", "nasdaq", "sp500_panel"):
            load_prices("csv", path=ROOT / "data" / f"{name}.csv", repair=False)
    assert not caplog.records


def test_a_spike_in_one_asset_of_a_panel_names_the_asset(tmp_path, caplog):
    panel = load_prices("csv", path=ROOT / "data" / "sp500_panel.csv", start="2010-01-01", end="2011-01-01")
    bad = panel.copy()
    bad.iloc[100, bad.columns.get_loc("MSFT")] *= 100
    path = tmp_path / "wide.csv"
    bad.rename_axis("Date").to_csv(path)
    with caplog.at_level(logging.WARNING, logger="harness.data"):
        repaired = load_prices("csv", path=path)
    assert "asset MSFT" in caplog.text and f"on {panel.index[100]:%Y-%m-%d}" in caplog.text
    assert repaired["MSFT"].iloc[100] == panel["MSFT"].iloc[99]
    assert "asset MSFT" in load_error(path, repair=False)


# -- bars a year: what strategies annualise by


@pytest.mark.parametrize(("dates", "expected"), [
    (pd.bdate_range("2020-01-01", periods=300), 252),
    (pd.date_range("2020-01-01", periods=300), 252),  # calendar days (crypto): still daily bars
    (pd.DatetimeIndex([d + pd.Timedelta(hours=h, minutes=30) for d in pd.bdate_range("2020-01-01", periods=60)
                       for h in range(9, 16)]), 252 * 7),  # yfinance 1h bars of a US session
    (pd.DatetimeIndex([d + pd.Timedelta(minutes=570 + 30 * k) for d in pd.bdate_range("2020-01-01", periods=60)
                       for k in range(13)]), 252 * 13),  # 30-minute bars
    (pd.date_range("2020-01-01", periods=2000, freq="h"), 252 * 24),
    (pd.date_range("2020-01-03", periods=100, freq="W-FRI"), 52),
    (pd.date_range("2000-01-31", periods=100, freq="ME"), 12),
    (pd.date_range("2000-03-31", periods=40, freq="QE"), 4),
    (pd.date_range("2000-12-31", periods=20, freq="YE"), 1),
    (pd.DatetimeIndex(["2020-01-02"]), 252),
])
def test_bars_a_year_from_the_spacing_of_the_dates(dates, expected):
    from harness.data.frequency import periods_per_year

    assert periods_per_year(dates) == expected
    assert periods_per_year(dates[::-1].append(dates[:1])) == expected  # order and repeated dates do not matter


def hourly_prices(days: int = 400, per_day: int = 7, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    dates = pd.DatetimeIndex([d + pd.Timedelta(hours=h, minutes=30) for d in pd.bdate_range("2020-01-01", periods=days)
                              for h in range(9, 9 + per_day)], name="date")
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.004, len(dates))))
    return pd.DataFrame({"date": dates, "close": close})


def test_intraday_bars_are_annualised_by_their_frequency(tmp_path):
    """Hourly bars: ``data.periods_per_year`` is inferred as 252 x 7 and the strategies use it
    (realized vol sqrt(P) |r|, the trading view's Sharpe); set, it wins."""
    from harness.backtest.planning import plan
    from harness.config import parse_config
    from strategies import get_strategy

    path = tmp_path / "hourly.csv"
    hourly_prices().to_csv(path, index=False)
    raw = {"data": {"path": str(path)}, "windows": {"train": 700, "test": 70, "purge": 5}}
    the_plan = plan(parse_config(raw))
    assert the_plan.config.data.periods_per_year == 1764 and the_plan.strategy.periods_per_year == 1764
    returns = np.log(the_plan.prices["adj_close"]).diff()
    rv_1 = the_plan.table.X["rv_1"]
    np.testing.assert_allclose(rv_1.to_numpy(), np.sqrt(1764) * np.abs(returns.loc[rv_1.index].to_numpy()), rtol=1e-12)
    daily = get_strategy("volatility_forecast").build(the_plan.prices)  # what annualising as daily gave
    np.testing.assert_allclose(the_plan.table.y.to_numpy(), daily.y.to_numpy() * np.sqrt(7), rtol=1e-12)
    given = plan(parse_config({**raw, "data": {"path": str(path), "periods_per_year": 2000}}))
    assert given.strategy.periods_per_year == 2000
    np.testing.assert_allclose(given.table.X["rv_1"].to_numpy(), rv_1.to_numpy() * np.sqrt(2000 / 1764), rtol=1e-12)
    daily_plan = plan(parse_config({"data": {"start": "2010-01-01", "end": "2012-01-01"},
                                    "windows": {"train": 252, "test": 21}}))
    assert daily_plan.config.data.periods_per_year == 252 and daily_plan.strategy.periods_per_year == 252


def test_the_trading_view_annualises_with_the_strategy_periods():
    from strategies import get_strategy
    from strategies.base import Table

    rng = np.random.default_rng(1)
    y, pred = rng.normal(0, 0.01, 500), rng.normal(0, 0.01, 500)
    index = pd.bdate_range("2020-01-01", periods=500)
    test = Table(X=pd.DataFrame({"a": np.zeros(500)}, index=index), y=pd.Series(y, index=index), dates=index, horizon=1)
    daily = get_strategy("return_forecast")
    hourly = get_strategy("return_forecast", periods_per_year=1764)
    assert daily.periods_per_year == 252 and hourly.periods_per_year == 1764
    ratio = hourly.metrics(y, pred, pred, test)["sharpe"] / daily.metrics(y, pred, pred, test)["sharpe"]
    assert ratio == pytest.approx(np.sqrt(7), rel=1e-12)
    summary = hourly.trading_summary({"m": pred}, test).set_index("candidate")
    assert summary.loc["m", "sharpe_1x_cost"] == pytest.approx(hourly.metrics(y, pred, pred, test)["sharpe"], rel=1e-12)
