"""Shared fixtures: small, fast configs on the bundled data, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# Tests never touch the internet; the yfinance path reads its cache or fails offline.
os.environ["HARNESS_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(1)


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


@pytest.fixture
def run_cli(tmp_path):
    """Run ``python -m harness ARGS`` in a subprocess from the repo root."""

    def run(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
        full_env = {**os.environ, "HARNESS_OFFLINE": "1", "MLFLOW_TRACKING_URI": str(tmp_path / "mlruns"), **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", "harness", *args], cwd=ROOT, env=full_env,
            capture_output=True, text=True, timeout=timeout,
        )

    return run
