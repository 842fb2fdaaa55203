"""``harness run``, ``harness plan`` and ``harness config``: a backtest from its config."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

from harness.errors import HarnessError

CONFIG_HELP = """\
config file (YAML; every field has a default, so an empty file is valid). Sections:
  experiment: NAME                      MLflow experiment (one per backtest)
  data:       source (csv|parquet|yfinance|synthetic), path, tickers, start, end, interval,
              cache_dir, synthetic {model: gbm|heston|regime, n_days, seed, ...}, repair,
              delimiter, decimal, dayfirst (CSV; null: read from the file),
              periods_per_year (null: from the dates: 252 daily, 252 x bars a day intraday)
  strategy:   name (return_forecast|volatility_forecast|option_pricer|pkg.mod:Class), params {...}
  model:      type (mlp|gru|lstm|"pkg.mod:Class"), hidden [64, 64], activation (relu|tanh|gelu|silu), dropout,
              sequence 21 (gru/lstm: each input is the row's last 21 table rows), params {...} (a user's
              class, built as Class(n_features=..., n_outputs=..., **params))
  training:   optimizer (adamw|sgd), lr, weight_decay, momentum, epochs, batch_size, seeds, seed,
              validation (tail fraction), patience, grad_clip,
              boundary (fresh|warm_restart|warm_continue), loss (mse|mae|huber|bce), huber_delta;
              epochs and lr take lists ([20, 80, 320]): every schedule at every value, one candidate each
  windows:    mode (rolling|expanding), train, test, step (observations or "3Y"/"6M"/"63D"),
              purge, embargo, short_purge (error|warn)
  schedules:  list of names or {name: ..., params}; see `harness schedules`
  selection:  metric, alpha, rule (mcs_stable|best_pooled|best_worst_window)
  tracking:   uri (a folder -> sqlite:///FOLDER/mlflow.db + FOLDER/artifacts, or any MLflow URI)
  execution:  executor (local|process|ray), workers, address
`harness config --show` prints the resolved default config."""



def add_parsers(commands: Any) -> None:
    run = commands.add_parser(
        "run",
        help="run a backtest and log it to MLflow",
        description="Retrain the model in every window under every schedule and seed, evaluate out of "
        "sample, print the ranking table and log everything to MLflow.",
        epilog=CONFIG_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _config_args(run, many=True)
    run.add_argument("--tracking-uri", help="MLflow store (a folder or URI); overrides tracking.uri")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--rerun", action="store_true",
                     help="run again even if this backtest (same config, data and code) already finished "
                     "or was interrupted; by default a finished one is reported and an interrupted one resumed")
    run.set_defaults(handler=_cmd_run)

    plan = commands.add_parser(
        "plan", help="load the data, build the strategy table and print the window plan (no training)"
    )
    _config_args(plan)
    plan.set_defaults(handler=_cmd_plan)

    config = commands.add_parser("config", help="show the resolved config", epilog=CONFIG_HELP,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    _config_args(config)
    config.add_argument("--show", action="store_true", help="print the resolved config as YAML (the default action)")
    config.set_defaults(handler=_cmd_config)


def _config_args(parser: argparse.ArgumentParser, many: bool = False) -> None:
    if many:
        parser.add_argument("config", nargs="*", help="YAML configs, run one after another (default: the built-in default config)")
    else:
        parser.add_argument("config", nargs="?", help="YAML config (default: the built-in default config)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a field, e.g. --set training.epochs=5 (repeatable; VALUE is YAML)",
    )


def _load(args: argparse.Namespace, path: str | None = None):
    """The config at ``path`` (``harness run``'s files, one at a time), else ``args.config`` (a single
    file or None for the default config), with ``--set`` and ``--tracking-uri`` applied."""
    from harness.config import load_config, read_yaml

    overrides: dict[str, Any] = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise HarnessError(f"--set {item!r}: expected KEY=VALUE, e.g. --set training.epochs=5")
        try:
            overrides[key.strip()] = read_yaml(value)  # YAML 1.2 numbers: --set training.lr=1e-2
        except yaml.YAMLError:
            raise HarnessError(f"--set {item!r}: VALUE is not valid YAML") from None
    if getattr(args, "tracking_uri", None):
        overrides["tracking.uri"] = args.tracking_uri
    if path is None and not isinstance(args.config, list):
        path = args.config
    return load_config(path, overrides)


def _cmd_config(args: argparse.Namespace) -> int:
    print(_load(args).to_yaml(), end="")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from harness.backtest import plan
    from harness.cli.render import plan_text

    print(plan_text(plan(_load(args))))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from harness.backtest import sidecar

    sidecar.start()  # first: it imports MLflow while this reads the configs and imports torch
    paths = args.config or [None]
    configs = [_load(args, path) for path in paths]  # every file is validated before any training
    sidecar.start(configs[0])  # it opens the first config's store
    from harness.backtest import Interrupted, resume, run_and_log
    from harness.cli.render import batch_summary, outcome_text

    outcomes = []
    # Ctrl-C, and `kill PID` likewise, stop the run in every phase: it ends KILLED, resumable, exit 130
    # (also when the KeyboardInterrupt was lost inside a finalizer or C code: resume.interrupts).
    with resume.interrupts():
        for config in configs:
            try:
                outcomes.append(run_and_log(config, progress=not args.no_progress, rerun=args.rerun))
            except Interrupted as stop:
                print(f"harness: {stop}", file=sys.stderr)
                return 130
            print(outcome_text(outcomes[-1]))
            resume.check_interrupted()
        if len(outcomes) > 1:
            print("\n" + batch_summary(outcomes))
        resume.check_interrupted()  # main: "harness: interrupted", 130
    return 0
