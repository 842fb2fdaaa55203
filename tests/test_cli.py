"""The CLI as a user meets it: subprocesses, help texts, and the bad-input contract."""

from __future__ import annotations

import os

import pytest
import yaml

from harness.config import Config
from tests.conftest import small_config


def _write(tmp_path, raw, name="config.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.mark.parametrize("command", [[], ["run"], ["plan"], ["config"], ["schedules"], ["bench"]])
def test_every_command_has_help(run_cli, command):
    done = run_cli(*command, "--help")
    assert done.returncode == 0, done.stderr
    assert "usage: harness" in done.stdout


def test_run_help_documents_the_config(run_cli):
    out = run_cli("run", "--help").stdout
    for section in ("experiment:", "data:", "strategy:", "model:", "training:", "windows:", "schedules:", "tracking:"):
        assert section in out


def test_config_show_prints_the_resolved_default(run_cli):
    done = run_cli("config", "--show")
    assert done.returncode == 0, done.stderr
    assert Config.model_validate(yaml.safe_load(done.stdout)) == Config()


def test_plan_prints_the_window_plan(run_cli, tmp_path):
    done = run_cli("plan", _write(tmp_path, small_config(tmp_path)))
    assert done.returncode == 0, done.stderr
    assert "rolling windows" in done.stdout and "train from" in done.stdout


def test_schedules_lists_the_catalogue(run_cli):
    done = run_cli("schedules")
    assert done.returncode == 0, done.stderr
    for name in ("constant", "cosine_restarts", "onecycle", "wsd", "plateau", "schedule_free"):
        assert name in done.stdout


def test_schedules_plot_writes_a_png(run_cli, tmp_path):
    path = tmp_path / "curves.png"
    done = run_cli("schedules", "--plot", str(path), "--steps", "300", "cosine", "step", "onecycle")
    assert done.returncode == 0, done.stderr
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


BAD_INPUTS = [
    # (id, config sections or None, extra CLI args, expected words in the one stderr line)
    ("missing-config", None, ["does-not-exist.yaml"], "does not exist"),
    ("negative-train", {"windows": {"train": -5}}, [], "windows.train: must be > 0, got -5"),
    ("lr-zero", {"training": {"lr": 0}}, [], "training.lr: must be > 0"),
    ("unknown-schedule", {"schedules": ["cosin"]}, [], "did you mean 'cosine'"),
    ("bad-schedule-param", {"schedules": [{"name": "step", "gamma": -1}]}, [], "gamma"),
    ("unknown-key", {"trainig": {"epochs": 3}}, [], "did you mean 'training'"),
    ("unknown-strategy", {"strategy": {"name": "volatility_forecst", "params": {}}}, [], "did you mean 'volatility_forecast'"),
    ("missing-data-file", {"data": {"path": "nope.csv"}}, [], "nope.csv"),
    ("windows-too-long", {"windows": {"train": 100000}}, [], "100000"),
    ("short-purge", {"windows": {"purge": 1}}, [], "windows.purge"),
    ("offline-no-cache", {"data": {"source": "yfinance", "tickers": ["^NOPE"], "cache_dir": "CACHE"}}, [], "network"),
    ("bad-set", None, ["--set", "training.epochs"], "KEY=VALUE"),
]


@pytest.mark.parametrize(("sections", "args", "expected"), [case[1:] for case in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_2(run_cli, tmp_path, sections, args, expected):
    cli_args = ["plan"]
    if sections is not None:
        raw = small_config(tmp_path, **sections)
        if "CACHE" in str(raw["data"].get("cache_dir")):
            raw["data"]["cache_dir"] = str(tmp_path / "cache")
        cli_args.append(_write(tmp_path, raw))
    done = run_cli(*cli_args, *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert expected in lines[0]


def test_invalid_yaml_is_one_line(run_cli, tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("training: {epochs: [1,\n")
    done = run_cli("config", str(path))
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "not valid YAML" in done.stderr
