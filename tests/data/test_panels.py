"""Panels (several assets): the bundled S&P 500 panel, wide and long files and several yfinance
tickers give the same numbers; assets with shorter histories; validation and repairs per asset."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from harness.config import load_config, parse_config
from harness.data import cache_path, fingerprint, is_panel, load_data, load_prices
from harness.errors import ConfigError, DataError
from tests.conftest import load_error

ROOT = Path(__file__).resolve().parents[2]
PANEL = ROOT / "data" / "sp500_panel.csv"
TICKERS = ["AAPL", "AMD", "BAC", "BBY", "CVX", "GE", "HD", "JNJ", "JPM", "KO", "LLY", "MRK", "MSFT", "PEP",
           "PFE", "PG", "RRC", "UNH", "WMT", "XOM"]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HARNESS_OFFLINE", "1")


@pytest.fixture(scope="module")
def wide() -> pd.DataFrame:
    """A small wide panel from the bundled file: 4 tickers, 120 dates; MSFT enters on row 40."""
    raw = pd.read_csv(PANEL, nrows=120)[["Date", "AAPL", "KO", "MSFT", "XOM"]]
    raw.loc[:39, "MSFT"] = np.nan
    return raw


def to_long(wide: pd.DataFrame, column: str = "Adj Close") -> pd.DataFrame:
    """The same numbers in the long layout: one row per (date, ticker) with a price, by ticker."""
    long = wide.melt(id_vars="Date", var_name="Ticker", value_name=column).dropna()
    return long.sort_values(["Ticker", "Date"]).reset_index(drop=True)


# -- the bundled panel --------------------------------------------------------------------------


def test_bundled_panel_is_skfolios_twenty_stocks_as_in_the_file():
    prices = load_prices("csv", path="data/sp500_panel.csv")  # relative: found under the repository
    raw = pd.read_csv(PANEL, parse_dates=["Date"])
    assert is_panel(prices) and prices.columns.tolist() == TICKERS and prices.columns.name == "ticker"
    assert prices.index.name == "date" and prices.index.is_monotonic_increasing and prices.index.is_unique
    assert len(prices) == 8313 and prices.index[0] == pd.Timestamp("1990-01-02")
    assert prices.index[-1] == pd.Timestamp("2022-12-28")
    assert prices.loc["1990-01-02", "AAPL"] == 0.264 and prices.loc["2022-12-28", "XOM"] == 106.627
    np.testing.assert_array_equal(prices.to_numpy(), raw[TICKERS].to_numpy(np.float64))
    assert all(dtype == np.float64 for dtype in prices.dtypes)


def test_bundled_panel_licence_is_named():
    note = (ROOT / "data" / "README.md").read_text()
    assert "sp500_panel.csv" in note and "BSD-3-Clause" in note and "skfolio" in note
    assert "survivorship" in note.lower()


def test_load_data_gives_the_panel_for_the_cross_section_config():
    config = load_config(ROOT / "configs" / "sp500_cross_section.yaml")
    prices = load_data(config)
    assert is_panel(prices) and prices.shape == (8313, 20)


def test_a_one_asset_file_is_unchanged():
    prices = load_prices("csv", path=ROOT / "data" / "sp500.csv")
    assert not is_panel(prices) and prices.columns.tolist() == ["open", "high", "low", "close", "adj_close", "volume"]


# -- wide and long layouts ----------------------------------------------------------------------


def test_wide_long_and_parquet_give_the_same_panel(tmp_path, wide):
    wide.to_csv(tmp_path / "wide.csv", index=False)
    to_long(wide).to_csv(tmp_path / "long.csv", index=False)
    to_long(wide, "close").sample(frac=1.0, random_state=0).to_parquet(tmp_path / "long.parquet")  # any row order
    wide.assign(Date=pd.to_datetime(wide["Date"])).set_index("Date").to_parquet(tmp_path / "wide.parquet")
    reference = load_prices("csv", path=tmp_path / "wide.csv", repair=False)
    for name in ("long.csv", "long.parquet", "wide.parquet"):
        other = load_prices("csv", path=tmp_path / name, repair=name == "long.parquet")
        pd.testing.assert_frame_equal(other, reference, check_exact=True)
    assert fingerprint(load_prices("csv", path=tmp_path / "long.csv")) == fingerprint(reference)


def test_long_file_takes_the_adjusted_close_beside_other_columns(tmp_path, wide):
    long = to_long(wide)
    long["Close"] = long["Adj Close"] * 2.0
    long["Volume"] = 1e6
    long.to_csv(tmp_path / "long.csv", index=False)
    wide.to_csv(tmp_path / "wide.csv", index=False)
    pd.testing.assert_frame_equal(load_prices("csv", path=tmp_path / "long.csv"),
                                  load_prices("csv", path=tmp_path / "wide.csv"))


def test_assets_with_shorter_histories_enter_later_without_any_repair(tmp_path, wide, caplog):
    wide.to_csv(tmp_path / "wide.csv", index=False)
    with caplog.at_level(logging.WARNING, logger="harness.data"):
        prices = load_prices("csv", path=tmp_path / "wide.csv", repair=False)
    assert caplog.text == ""
    assert prices["MSFT"].iloc[:40].isna().all() and prices["MSFT"].iloc[40:].notna().all()
    assert prices[["AAPL", "KO", "XOM"]].notna().all().all()


def test_an_asset_that_leaves_keeps_nan_after_its_last_price(tmp_path, wide):
    left = wide.copy()
    left.loc[100:, "KO"] = np.nan
    left.to_csv(tmp_path / "wide.csv", index=False)
    prices = load_prices("csv", path=tmp_path / "wide.csv", repair=False)
    assert prices["KO"].iloc[100:].isna().all() and prices["KO"].iloc[:100].notna().all()


def test_a_ticker_column_in_a_file_whose_dates_do_not_repeat_stays_one_asset(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("Date,Close,Ticker\n2001-01-02,5,a\n2001-01-03,6,b\n")
    prices = load_prices("csv", path=path)
    assert not is_panel(prices) and prices["close"].tolist() == [5, 6]


def test_a_file_with_one_unknown_column_is_still_no_price_column(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("Date,Foo\n2001-01-02,5\n2001-01-03,6\n")
    assert "no price column among ['Date', 'Foo']" in load_error(path)


def test_start_and_end_trim_a_panel_and_leave_out_assets_with_no_prices_there(tmp_path, wide, caplog):
    wide.to_csv(tmp_path / "wide.csv", index=False)
    to_long(wide).to_csv(tmp_path / "long.csv", index=False)
    start, end = str(wide["Date"].iloc[5]), str(wide["Date"].iloc[30])
    for name in ("wide.csv", "long.csv"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="harness.data"):
            prices = load_prices("csv", path=tmp_path / name, start=start, end=end)
        assert len(prices) == 25 and prices.index[0] == pd.Timestamp(start) and prices.index[-1] < pd.Timestamp(end)
        assert prices.columns.tolist() == ["AAPL", "KO", "XOM"]  # MSFT enters after `end`
        assert "asset MSFT has no prices in [" in caplog.text and "left out" in caplog.text


# -- validation and repairs, per asset ----------------------------------------------------------


def test_a_gap_inside_an_assets_history_is_filled_and_logged_naming_the_asset(tmp_path, wide, caplog):
    holed = wide.copy()
    holed.loc[[60, 61], "KO"] = np.nan
    holed.to_csv(tmp_path / "wide.csv", index=False)
    long = to_long(holed)  # the long layout simply has no row there
    long.to_csv(tmp_path / "long.csv", index=False)
    for name in ("wide.csv", "long.csv"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="harness.data"):
            prices = load_prices("csv", path=tmp_path / name)
        assert f"{tmp_path / name}, asset KO: no price on 2 dates where other assets have one" in caplog.text
        assert "carried the last price forward (longest gap 2 dates)" in caplog.text
        assert prices["KO"].iloc[60] == prices["KO"].iloc[61] == wide["KO"].iloc[59]
        message = load_error(tmp_path / name, repair=False)
        assert "asset KO: no price on 2 dates" in message and message.endswith("fill them or set data.repair: true")


def test_a_long_gap_is_an_error_naming_the_asset(tmp_path, wide):
    holed = wide.copy()
    holed.loc[50:57, "XOM"] = np.nan
    holed.to_csv(tmp_path / "wide.csv", index=False)
    message = load_error(tmp_path / "wide.csv")
    assert "asset XOM: no price on 8 dates of the panel in a row from" in message and "at most 5 are filled" in message


def test_a_non_positive_price_names_the_asset_and_the_date(tmp_path, wide):
    bad = wide.copy()
    bad.loc[70, "AAPL"] = -1.0
    bad.to_csv(tmp_path / "wide.csv", index=False)
    to_long(bad).to_csv(tmp_path / "long.csv", index=False)
    day = pd.Timestamp(wide["Date"].iloc[70]).strftime("%Y-%m-%d")
    for name in ("wide.csv", "long.csv"):
        message = load_error(tmp_path / name)
        assert f"asset AAPL: non-positive price -1 in 'adj_close' on {day}; prices must be > 0" in message


def test_a_non_numeric_value_names_the_ticker(tmp_path, wide):
    bad = wide.astype({"KO": object})
    bad.loc[3, "KO"] = "abc"
    bad.to_csv(tmp_path / "wide.csv", index=False)
    assert "non-numeric value 'abc' in column 'KO'" in load_error(tmp_path / "wide.csv")
    to_long(bad).to_csv(tmp_path / "long.csv", index=False)
    assert "asset KO: non-numeric value 'abc' in column 'adj_close'" in load_error(tmp_path / "long.csv")


def test_duplicated_rows_of_one_asset_are_repaired_naming_the_asset(tmp_path, wide, caplog):
    long = to_long(wide)
    long = pd.concat([long, long[long["Ticker"] == "XOM"].iloc[[10]]], ignore_index=True)
    long.to_csv(tmp_path / "long.csv", index=False)
    with caplog.at_level(logging.WARNING, logger="harness.data"):
        prices = load_prices("csv", path=tmp_path / "long.csv")
    assert "asset XOM: 1 duplicated dates" in caplog.text and "asset XOM: dates are not sorted" in caplog.text
    assert prices.shape == (120, 4)
    assert "asset XOM: dates are not sorted" in load_error(tmp_path / "long.csv", repair=False)


def test_unsorted_wide_file_is_sorted_once_and_unknown_long_columns_dropped_once(tmp_path, wide, caplog):
    wide.iloc[::-1].to_csv(tmp_path / "wide.csv", index=False)
    long = to_long(wide).assign(Name="x")
    long.to_csv(tmp_path / "long.csv", index=False)
    with caplog.at_level(logging.WARNING, logger="harness.data"):
        a = load_prices("csv", path=tmp_path / "wide.csv")
        b = load_prices("csv", path=tmp_path / "long.csv")
    assert caplog.text.count("dates are not sorted") == 1 and caplog.text.count("unknown columns ['Name']") == 1
    pd.testing.assert_frame_equal(a, b)


def test_a_long_row_without_a_ticker_is_an_error(tmp_path, wide):
    long = to_long(wide).astype({"Ticker": object})
    long.loc[5, "Ticker"] = None
    long.to_csv(tmp_path / "long.csv", index=False)
    assert "row 6 has no ticker in column 'Ticker'; fill or remove that row" in load_error(tmp_path / "long.csv")


def test_tickers_without_a_name_and_twice_the_same_ticker(tmp_path, wide, caplog):
    wide.assign(extra=1.0).rename(columns={"extra": "Unnamed: 5"}).to_csv(tmp_path / "wide.csv", index=False)
    with caplog.at_level(logging.WARNING, logger="harness.data"):
        assert load_prices("csv", path=tmp_path / "wide.csv").columns.tolist() == ["AAPL", "KO", "MSFT", "XOM"]
    assert "columns without a ticker name ['Unnamed: 5']" in caplog.text
    (tmp_path / "twice.csv").write_text("Date,AAPL,AAPL ,KO\n2001-01-02,1,2,3\n2001-01-03,1,2,3\n")
    assert "tickers ['AAPL'] have more than one column" in load_error(tmp_path / "twice.csv")


# -- yfinance: one cached file per ticker (never the network) -----------------------------------


def _cache(wide: pd.DataFrame, ticker: str, folder: Path, start: str, end: str) -> None:
    """What the download path writes for one ticker: yfinance's frame, tz-aware dates."""
    own = wide[["Date", ticker]].dropna().rename(columns={ticker: "Adj Close"})
    own = own.assign(Close=own["Adj Close"], Date=pd.to_datetime(own["Date"]).dt.tz_localize("America/New_York"))
    own.to_parquet(cache_path(ticker, "1d", start, end, folder))


def test_several_yfinance_tickers_read_their_caches_into_the_same_panel(tmp_path, wide):
    start, end = "1990-01-01", "1991-01-01"
    for ticker in ("AAPL", "KO", "MSFT", "XOM"):
        _cache(wide, ticker, tmp_path, start, end)
    prices = load_prices("yfinance", tickers=["XOM", "AAPL", "MSFT", "KO"], start=start, end=end, cache_dir=tmp_path)
    wide.to_csv(tmp_path / "wide.csv", index=False)
    pd.testing.assert_frame_equal(prices, load_prices("csv", path=tmp_path / "wide.csv", start=start, end=end))
    raw = {"data": {"source": "yfinance", "tickers": ["AAPL", "KO"], "start": start, "end": end,
                    "cache_dir": str(tmp_path)}}
    assert load_data(parse_config(raw)).columns.tolist() == ["AAPL", "KO"]
    one = load_prices("yfinance", tickers=["KO"], start=start, end=end, cache_dir=tmp_path)
    assert not is_panel(one) and one["adj_close"].tolist() == prices["KO"].tolist()


def test_a_missing_yfinance_cache_names_its_ticker(tmp_path, wide):
    _cache(wide, "AAPL", tmp_path, "1990-01-01", None)
    with pytest.raises(DataError) as info:
        load_prices("yfinance", tickers=["AAPL", "KO"], start="1990-01-01", cache_dir=tmp_path)
    message = str(info.value)
    assert message.startswith("yfinance KO: no network") and "KO_1d_1990-01-01_none.parquet" in message


@pytest.mark.parametrize(("tickers", "message"), [
    ([], "data.tickers: no ticker given"),
    (["AAPL", "KO", "AAPL"], r"data.tickers: \['AAPL'\] listed more than once"),
])
def test_bad_ticker_lists(tmp_path, tickers, message):
    with pytest.raises(ConfigError, match=message):
        load_prices("yfinance", tickers=tickers, cache_dir=tmp_path)


def test_the_config_file_reads_the_panel_through_the_cli_path(tmp_path, wide):
    wide.to_csv(tmp_path / "wide.csv", index=False)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"source": "csv", "path": str(tmp_path / "wide.csv")}}))
    prices = load_data(load_config(path))
    assert is_panel(prices) and prices.shape == (120, 4)
