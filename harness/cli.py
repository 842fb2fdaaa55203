"""The ``harness`` command line.

Every user mistake (:class:`~harness.errors.HarnessError`) becomes one line on stderr and exit
status 2, without a traceback. Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import yaml

from harness.errors import HarnessError

CONFIG_HELP = """\
config file (YAML; every field has a default, so an empty file is valid). Sections:
  experiment: NAME                      MLflow experiment (one per backtest)
  data:       source (csv|parquet|yfinance|synthetic), path, tickers, start, end, interval,
              cache_dir, synthetic {model: gbm|heston|regime, n_days, seed, ...}, repair
  strategy:   name (return_forecast|volatility_forecast|option_pricer|pkg.mod:Class), params {...}
  model:      type (mlp|gru|lstm), hidden [64, 64], activation (relu|tanh|gelu|silu), dropout,
              sequence 21 (gru/lstm: each input is the row's last 21 table rows)
  training:   optimizer (adamw|sgd), lr, weight_decay, momentum, epochs, batch_size, seeds, seed,
              validation (tail fraction), patience, grad_clip,
              boundary (fresh|warm_restart|warm_continue)
  windows:    mode (rolling|expanding), train, test, step (observations or "3Y"/"6M"/"63D"),
              purge, embargo, short_purge (error|warn)
  schedules:  list of names or {name: ..., params}; see `harness schedules`
  selection:  metric, alpha, rule (mcs_stable|best_pooled|best_worst_window)
  tracking:   uri (a folder -> sqlite:///FOLDER/mlflow.db + FOLDER/artifacts, or any MLflow URI)
  execution:  executor (local|process|ray), workers, address
`harness config --show` prints the resolved default config."""


def main(argv: list[str] | None = None) -> int:
    _quiet_logging()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    try:
        return int(args.handler(args) or 0)
    except HarnessError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130


def _quiet_logging() -> None:
    """Warnings (data repairs, short purge) as one ``harness: warning:`` line each; MLflow's INFO chatter off."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.basicConfig(level=logging.WARNING, format="harness: %(levelname)s: %(message)s")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Walk-forward backtests of learning-rate decay schedules for neural financial models.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

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

    schedules = commands.add_parser("schedules", help="list the schedule catalogue, or plot LR curves")
    schedules.add_argument("names", nargs="*", help="schedules to plot (names; default: the whole catalogue)")
    schedules.add_argument("--plot", metavar="PNG", help="write the LR curves of NAMES to this PNG")
    schedules.add_argument("--steps", type=int, default=1000, help="total optimizer steps T (default 1000)")
    schedules.add_argument("--log", action="store_true", help="log-scale LR axis")
    schedules.set_defaults(handler=_cmd_schedules)

    bench = commands.add_parser(
        "bench", help="measure the batched trainer against a plain torch loop",
        description="Without --windows: one window's members, trained by a plain torch loop (one AdamW + "
        "LambdaLR + DataLoader per member, the way users write it) and by the batched trainer, in one process; "
        "prints the speedup, the achieved GFLOP/s, this machine's fp32 matmul peak, their ratio "
        "(peak_fraction) and max_rel_diff between the two results, then the batched trainer alone on a wider "
        "MLP (3x256, batch 512, 10 epochs; wide_peak_fraction). Members: M = S schedules x M/S seeds, S the "
        "largest divisor of M up to 10, schedules the first S of constant, step, multistep, exponential, "
        "inverse_sqrt, linear, polynomial, cosine, cosine_restarts, onecycle (30 -> 10 x 3, 15 -> 5 x 3). "
        "Defaults: the reference workload, 30 members, MLP 2x64, 20 features, 1000 rows, batch 64, 50 epochs. "
        "With --windows N: the walk-forward workload (N rolling windows of S&P 500 returns, 3 schedules x "
        "--seeds members each) trained three ways: a plain torch loop per member, each window's members "
        "stacked (windows in turn), and all windows' members in one stack.",
    )
    bench.add_argument("--windows", type=int, help="measure the walk-forward workload over N windows")
    bench.add_argument("--members", type=int, default=30,
                       help="members (schedules x seeds, see above), default 30 = 10 schedules x 3 seeds")
    bench.add_argument("--width", type=int, default=64, help="hidden width of the MLP, default 64")
    bench.add_argument("--depth", type=int, default=2, help="hidden layers of the MLP, default 2")
    bench.add_argument("--seeds", type=int, default=2, help="--windows: seeds per schedule, default 2")
    bench.add_argument("--rows", type=int, help="training rows per window, default 1000 (--windows: 504)")
    bench.add_argument("--features", type=int, default=20, help="input features, default 20")
    bench.add_argument("--epochs", type=int, help="epochs, default 50 (--windows: 20)")
    bench.add_argument("--batch-size", type=int, help="batch size, default 64")
    bench.add_argument("--repeats", type=int, default=3, help="timed repeats (medians), default 3")
    bench.add_argument("--threads", type=int,
                       help="torch threads for every side (and the peak), default torch's default (all cores)")
    bench.add_argument("--no-wide", action="store_true", help="skip the wider workload (3x256, batch 512)")
    bench.add_argument("--scale", action="store_true",
                       help="also measure cost as members and rows grow, and whole backtests as windows, members "
                       "and rows double, local against process (harness.bench_scale)")
    bench.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    bench.set_defaults(handler=_cmd_bench)
    _select_parser(commands)
    return parser


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
    from harness.config import load_config

    overrides: dict[str, Any] = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise HarnessError(f"--set {item!r}: expected KEY=VALUE, e.g. --set training.epochs=5")
        try:
            overrides[key.strip()] = yaml.safe_load(value)
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
    from harness.engine import plan

    print(plan(_load(args)).render())
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from harness.engine import Interrupted, run_and_log

    paths = args.config or [None]
    configs = [_load(args, path) for path in paths]  # every file is validated before any training
    signal.signal(signal.SIGTERM, _interrupt)  # `kill PID` stops like Ctrl-C: the run ends KILLED, resumable
    outcomes = []
    for config in configs:
        try:
            outcomes.append(run_and_log(config, progress=not args.no_progress, rerun=args.rerun))
        except Interrupted as stop:
            print(f"harness: {stop}", file=sys.stderr)
            return 130
        print(outcomes[-1].render())
    if len(outcomes) > 1:
        from harness.engine import batch_summary

        print("\n" + batch_summary(outcomes))
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _cmd_schedules(args: argparse.Namespace) -> int:
    from harness import schedules

    if args.steps <= 0:
        raise HarnessError(f"--steps: must be > 0, got {args.steps}")
    if not args.plot:
        if args.names:
            for name in args.names:
                schedules.get_schedule(name)
        print(schedules.format_catalogue())
        return 0
    from harness.schedule_plot import plot_schedules

    names = args.names or [name for name in schedules.SCHEDULES]
    path = plot_schedules(list(names), args.steps, args.plot, log_scale=args.log)
    print(f"wrote {path}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from harness import bench

    windowed = args.windows is not None
    args.rows = args.rows if args.rows is not None else (504 if windowed else bench.REFERENCE["rows"])
    args.epochs = args.epochs if args.epochs is not None else (20 if windowed else bench.REFERENCE["epochs"])
    args.batch_size = args.batch_size if args.batch_size is not None else 64
    args.threads = args.threads if args.threads is not None else torch.get_num_threads()
    names = ("windows", "seeds") if windowed else ("members",)
    for name in (*names, "width", "depth", "rows", "features", "epochs", "batch_size", "repeats", "threads"):
        if getattr(args, name) <= 0:
            raise HarnessError(f"--{name.replace('_', '-')}: must be > 0, got {getattr(args, name)}")
    if args.json and not Path(args.json).resolve().parent.is_dir():
        raise HarnessError(f"--json: the folder of {args.json} does not exist")
    torch.set_num_threads(args.threads)
    sizes = dict(rows=args.rows, features=args.features, hidden=(args.width,) * args.depth, epochs=args.epochs,
                 batch_size=args.batch_size, repeats=args.repeats)
    if windowed:
        figures = bench.bench_windows(n_windows=args.windows, seeds=args.seeds, **sizes)
        print(bench.format_windows_report(figures))
    else:
        figures = bench.bench_members(n_members=args.members, wide=None if args.no_wide else bench.WIDE, **sizes)
        if args.scale:
            figures["scaling"] = bench.bench_scaling(n_members=args.members, **sizes)
        print(bench.format_report(figures))
    if args.scale:
        from harness.bench_scale import bench_scale, format_scale

        figures["end_to_end"] = bench_scale(repeats=args.repeats)
        print("\n" + format_scale(figures["end_to_end"]))
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(figures, indent=2, default=float))
        except OSError as exc:
            raise HarnessError(f"--json: cannot write {args.json}: {exc.strerror}") from None
    return 0


# --- harness select ------------------------------------------------------------------------------


def _select_parser(commands: Any) -> None:
    select = commands.add_parser(
        "select",
        help="choose the production schedule of a finished backtest with statistics, and register it",
        description="Rank the schedules of a finished backtest with Diebold-Mariano tests, the Model Confidence "
        "Set, bootstrap intervals and the probability of backtest overfitting; pick one by the rule "
        "(selection.rule); print the report and log it (selection.md, PNGs, tag selected_schedule) to the "
        "backtest's parent run. With --register, retrain the chosen schedule on the most recent train window "
        "and register the seed ensemble in the MLflow model registry with the alias 'champion'.",
    )
    select.add_argument("experiment", metavar="EXPERIMENT",
                        help="experiment name (its newest finished backtest) or a backtest's parent run id")
    select.add_argument("--tracking-uri",
                        help="MLflow store (a folder or URI); default $MLFLOW_TRACKING_URI, else ./mlruns")
    select.add_argument("--register", metavar="NAME", help="register the production model under NAME (alias champion)")
    select.add_argument("--metric", help="override selection.metric of the logged config (e.g. rmse, mae, qlike)")
    select.add_argument("--alpha", type=float, help="override selection.alpha (MCS size, interval level 1 - alpha)")
    select.add_argument("--rule", help="override selection.rule: mcs_stable | best_pooled | best_worst_window")
    select.set_defaults(handler=_cmd_select)


def _cmd_select(args: argparse.Namespace) -> int:
    from harness import selection, tracking
    from harness.selection_plots import log_report

    if args.register is not None:
        tracking.check_model_name(args.register)
    store = tracking.resolve_store(args.tracking_uri)
    loaded = tracking.load_backtest(store, args.experiment)
    overrides = {"metric": args.metric, "alpha": args.alpha, "rule": args.rule}
    report, config = selection.select_from_logged(loaded, overrides)
    print(report.markdown(), flush=True)
    if args.register is not None:
        registered = _register(store, config, report, args.register)
        print("## Production model\n\n" + "\n".join(report.production))
        print(f"load it with mlflow.pytorch.load_model(\"{registered.uri}\") "
              f"(tracking uri {store.tracking_uri})")
    files = log_report(store, report)
    print(f"\nlogged {', '.join(files)} and tag selected_schedule={report.selected} "
          f"to parent run {report.run_id}")
    print(selection.selection_summary(report))
    return 0


EXAMPLE_ROWS = 64  # rows of the logged input example (the round-trip check uses every test row)


def _register(store: Any, config: Any, report: Any, name: str) -> Any:
    """Retrain the selected schedule on the last train window, register it, and check the round trip."""
    import numpy as np
    import torch

    from harness import tracking
    from harness.production import train_production

    production = train_production(config, report.selected)
    registered = tracking.register_model(
        store, config.experiment, production.model, name=name, input_example=production.example[:EXAMPLE_ROWS],
        run_name=f"production-{name}", params=production.params(),
        tags={"source_backtest": report.run_id, "selected_schedule": report.selected,
              "strategy": config.strategy.name},
    )
    loaded = tracking.load_registered_model(store, name, registered.alias)
    with torch.no_grad():
        again = loaded(torch.as_tensor(production.example)).numpy()
    gap = float(np.max(np.abs(again - production.expected)))
    if not gap <= 1e-6:
        raise RuntimeError(f"the registered model's predictions differ from the harness's by {gap:.3g}")
    report.production = production.describe() + [
        f"- registered as `{name}` version {registered.version}, alias `{registered.alias}` "
        f"(run `{registered.run_id}`); `mlflow.pytorch.load_model(\"{registered.uri}\")` reproduces the "
        f"harness's predictions on window {production.window}'s {len(production.expected)} test rows "
        f"(max abs difference {gap:.1e})",
    ]
    return registered


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
