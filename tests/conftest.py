"""Shared fixtures: small, fast configs on the bundled data, and CLI runners (in-process and subprocess).

Tests slower than ~2 s are marked ``slow`` (``make test-fast`` leaves them out; ``make test`` runs all).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# Tests never touch the internet; the yfinance path reads its cache or fails offline.
os.environ["HARNESS_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(1)


def load_error(path: Path, **kwargs) -> str:
    """The one-line DataError ``load_prices("csv", path=path, **kwargs)`` raises (asserted one line)."""
    from harness.data import load_prices
    from harness.errors import DataError

    with pytest.raises(DataError) as info:
        load_prices("csv", path=path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def gbm_prices(n: int, seed: int, vols: tuple[float, ...], start: str) -> pd.DataFrame:
    """A daily price path (OHLC all the close) whose annual vol jumps every 100 days among ``vols``."""
    rng = np.random.default_rng(seed)
    vol = np.repeat(rng.choice(list(vols), size=n // 100 + 1), 100)[:n] / np.sqrt(252)
    close = 100 * np.exp(np.cumsum(vol * rng.standard_normal(n)))
    index = pd.bdate_range(start, periods=n, name="date")
    return pd.DataFrame({"open": close, "high": close, "low": close, "close": close, "adj_close": close,
                         "volume": 1.0}, index=index)


def small_config(tmp_path: Path, **sections) -> dict:
    """A backtest of ~6 windows on two years of S&P 500 data that trains in seconds."""
    raw = {
        "experiment": "test-small",
        "data": {"source": "csv", "path": str(ROOT / "data" / "sp500.csv"), "start": "2010-01-01", "end": "2011-12-31"},
        "strategy": {"name": "volatility_forecast", "params": {"lookback": 22, "horizon": 5}},
        "model": {"hidden": [16, 16]},
        "training": {"epochs": 4, "batch_size": 64, "seeds": 2},
        "windows": {"train": 252, "test": 42, "purge": 5},
        "schedules": ["constant", {"name": "cosine", "warmup": 0.1}],
        "tracking": {"uri": str(tmp_path / "mlruns")},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return raw


@pytest.fixture
def one_thread():
    """One torch thread for the test, whatever an earlier test set; restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class CliResult(NamedTuple):
    """What one ``harness`` command did: its exit status and what it printed."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """Run ``harness.cli.main(ARGS)`` in this process from the repo root: ``(returncode, stdout, stderr)``.

    For commands that need no process of their own; kills, signals and import-time checks keep
    :func:`run_cli`. The environment is :func:`run_cli`'s (offline, MLflow store in ``tmp_path``).
    argparse's ``SystemExit`` (``--help``: 0, a usage error: 2) becomes the exit status, as in a
    shell; anything else ``main`` raises fails the test with its traceback. The ``harness: warning:``
    lines of the CLI's logging land in ``stderr``, and MLflow logs at WARNING as ``main`` sets it up in a
    fresh process (here MLflow was imported before); ``harness run``'s SIGTERM handler is undone after.
    """
    from harness.cli import main

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("HARNESS_OFFLINE", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(tmp_path / "mlruns"))
    monkeypatch.setenv("MLFLOW_LOGGING_LEVEL", os.environ.get("MLFLOW_LOGGING_LEVEL", "WARNING"))

    def run(*args: str) -> CliResult:
        capsys.readouterr()  # only this command's output
        root, mlflow_log = logging.getLogger(), logging.getLogger("mlflow")
        handlers, level, mlflow_level = root.handlers[:], root.level, mlflow_log.level
        root.handlers.clear()  # so main's logging.basicConfig writes to the captured stderr, as in a shell
        mlflow_log.setLevel(logging.WARNING)  # what MLFLOW_LOGGING_LEVEL=WARNING gives a fresh process
        sigterm = signal.getsignal(signal.SIGTERM)
        try:
            code = main(list(args))
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        finally:
            signal.signal(signal.SIGTERM, sigterm)
            for handler in root.handlers:
                handler.close()
            root.handlers[:] = handlers
            root.setLevel(level)
            mlflow_log.setLevel(mlflow_level)
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


@pytest.fixture
def run_cli(tmp_path):
    """Run ``python -m harness ARGS`` in a subprocess from the repo root (kills, signals, a fresh interpreter)."""

    def run(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
        full_env = {**os.environ, "HARNESS_OFFLINE": "1", "MLFLOW_TRACKING_URI": str(tmp_path / "mlruns"), **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", "harness", *args], cwd=ROOT, env=full_env,
            capture_output=True, text=True, timeout=timeout,
        )

    return run
