"""The CLI as a user meets it: help texts, exit statuses and output, run in-process through ``main``."""

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
def test_every_command_has_help(cli, command):
    done = cli(*command, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(" ".join(["usage: harness", *command]))


def test_python_dash_m_harness_is_the_command(run_cli):
    done = run_cli("--help")  # the one subprocess here: `python -m harness` reaches main
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: harness") and "select" in done.stdout


def test_no_command_prints_the_help_and_a_usage_error_exits_2(cli):
    done = cli()
    assert done.returncode == 0 and done.stdout.startswith("usage: harness") and "COMMAND" in done.stdout
    done = cli("frobnicate")
    assert done.returncode == 2 and done.stdout == ""
    assert "harness: error: argument COMMAND: invalid choice: 'frobnicate'" in done.stderr


def test_a_harness_error_is_one_line_and_exit_2(cli):
    done = cli("schedules", "--steps", "0")
    assert (done.returncode, done.stdout, done.stderr) == (2, "", "harness: error: --steps: must be > 0, got 0\n")


def test_run_help_documents_the_config(cli):
    out = cli("run", "--help").stdout
    for section in ("experiment:", "data:", "strategy:", "model:", "training:", "windows:", "schedules:", "tracking:"):
        assert section in out


def test_config_show_prints_the_resolved_default(cli):
    done = cli("config", "--show")
    assert done.returncode == 0, done.stderr
    assert Config.model_validate(yaml.safe_load(done.stdout)) == default_config()


def test_plan_prints_the_window_plan(cli, tmp_path):
    done = cli("plan", _write(tmp_path, small_config(tmp_path)))
    assert done.returncode == 0, done.stderr
    assert "rolling windows" in done.stdout and "train from" in done.stdout


def test_schedules_lists_the_catalogue(cli):
    done = cli("schedules")
    assert done.returncode == 0, done.stderr
    for name in ("constant", "cosine_restarts", "onecycle", "wsd", "plateau", "schedule_free"):
        assert name in done.stdout


def test_schedules_plot_writes_a_png(cli, tmp_path):
    path = tmp_path / "curves.png"
    done = cli("schedules", "--plot", str(path), "--steps", "300", "cosine", "step", "onecycle")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"wrote {path}\n"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# The bad-input contract (exit 2, one stderr line, store untouched) is tests/test_bad_input.py.
