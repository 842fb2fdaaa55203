"""The CLI as a user meets it: subprocesses, help texts, and the bad-input contract."""

from __future__ import annotations

import os

import pytest
import yaml

from harness.config import Config, default_config
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
    assert Config.model_validate(yaml.safe_load(done.stdout)) == default_config()


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


# The bad-input contract (exit 2, one stderr line, store untouched) is tests/test_bad_input.py.
