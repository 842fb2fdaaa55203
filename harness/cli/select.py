"""``harness select``: the production schedule of a finished backtest, chosen with statistics and
registered in the MLflow model registry."""

from __future__ import annotations

import argparse
import tempfile
from typing import Any


def add_parsers(commands: Any) -> None:
    select = commands.add_parser(
        "select",
        help="choose the production schedule of a finished backtest with statistics, and register it",
        description="Rank the schedules of a finished backtest with Diebold-Mariano tests, the Model Confidence "
        "Set, bootstrap intervals and the probability of backtest overfitting; pick one by the rule "
        "(selection.rule); print which backtest it took and the report, and log it (selection.md, PNGs, tag "
        "selected_schedule) to the backtest's parent run. With --register, retrain the chosen schedule on the "
        "most recent train window (ending at the data's last labelled row) and register the seed ensemble in "
        "the MLflow model registry with the alias 'champion'; refused when no schedule beats the baseline, "
        "unless --force.",
    )
    select.add_argument("experiment", metavar="EXPERIMENT",
                        help="a backtest's parent run id, or an experiment name (its finished backtest; when it "
                        "holds backtests of different configs, pass a run id or --latest)")
    select.add_argument("--tracking-uri",
                        help="MLflow store (a folder or URI); default $MLFLOW_TRACKING_URI, else ./mlruns")
    select.add_argument("--latest", action="store_true",
                        help="take the experiment's newest finished backtest even if it holds backtests of "
                        "different configs")
    select.add_argument("--register", metavar="NAME", help="register the production model under NAME (alias champion)")
    select.add_argument("--force", action="store_true",
                        help="with --register: register even when no schedule beats the baseline (the version is "
                        "tagged beats_baseline=false)")
    select.add_argument("--metric", help="override selection.metric of the logged config (e.g. rmse, mae, qlike)")
    select.add_argument("--alpha", type=float, help="override selection.alpha (MCS size, interval level 1 - alpha)")
    select.add_argument("--rule", help="override selection.rule: mcs_stable | best_pooled | best_worst_window")
    select.set_defaults(handler=_cmd_select)


def _cmd_select(args: argparse.Namespace) -> int:
    from harness import tracking
    from harness.errors import HarnessError
    from harness.evaluation import selection

    if args.register is not None:
        tracking.check_model_name(args.register)
    elif args.force:
        raise HarnessError("--force only applies with --register NAME; add --register or drop --force")
    store = tracking.resolve_store(args.tracking_uri)
    tracking.check_server(store)  # a server that does not answer: one line in seconds, not MLflow's retries
    taken = _which_backtest(store, args.experiment, latest=args.latest)
    backtest = tracking.load_backtest(store, taken.run_id)
    report = selection.select(backtest, {"metric": args.metric, "alpha": args.alpha, "rule": args.rule})
    config = backtest.config
    print(_took(taken, backtest.n_windows), flush=True)
    print(report.markdown(), flush=True)
    if args.register is not None and not report.beats_baseline and not args.force:
        _log_selection(store, report)
        raise HarnessError(
            f"--register {args.register}: no schedule beats the baseline '{report.baseline}' on {report.metric}, "
            "so nothing was registered; pass --force to register the selected schedule anyway"
        )
    if args.register is not None:
        registered = _register(store, config, report, args.register, taken)
        print("## Production model\n\n" + "\n".join(report.production))
        print(f"load it with mlflow.pytorch.load_model(\"{registered.uri}\") "
              f"(tracking uri {store.tracking_uri})")
    _log_selection(store, report)
    return 0


def _log_selection(store: Any, report: Any) -> None:
    """Log the report and its figures to the backtest's parent run; print what was logged and the summary."""
    from harness import tracking
    from harness.evaluation.selection import selection_summary
    from harness.figures import selection_figures

    with tempfile.TemporaryDirectory(prefix="harness-select-") as folder:
        files = selection_figures(report, folder)
        tracking.log_selection(store, report.run_id, files, report.tags())
    print(f"\nlogged {', '.join(files)} and tag selected_schedule={report.selected} "
          f"to parent run {report.run_id}")
    print(selection_summary(report))


def _which_backtest(store: Any, key: str, *, latest: bool) -> Any:
    """The backtest parent run ``harness select`` takes: the run itself for a run id; for an
    experiment its newest finished backtest, provided they all share one config (``config_hash``)
    or ``latest`` is set; otherwise list them and ask for a run id."""
    from harness.errors import HarnessError
    from harness.tracking.runs import backtest_runs

    runs, by_id = backtest_runs(store, key)
    if by_id or latest or len({run.config_hash for run in runs}) <= 1:
        return runs[0]
    print(f"experiment '{key}' holds finished backtests of {len({run.config_hash for run in runs})} configs:")
    print(_listing(runs), flush=True)
    raise HarnessError(
        f"experiment '{key}' holds finished backtests of different configs (listed above); pass the run id of "
        f"the one to select (e.g. harness select {runs[0].run_id}), or --latest for the newest"
    )


def _listing(runs: list[Any]) -> str:
    """One line per backtest run: run id, config hash, end time, window sizes and epochs (from params)."""
    rows = [("run id", "config hash", "finished", "windows", "epochs")]
    for run in runs:
        p = run.params
        windows = " ".join(f"{key} {p[f'windows.{key}']}" for key in ("mode", "train", "test")
                           if f"windows.{key}" in p)
        rows.append((run.run_id, run.config_hash or "?", run.finished, windows or "?", p.get("training.epochs", "?")))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  " + "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
                     for row in rows)


def _took(run: Any, n_windows: int) -> str:
    """The line that says which backtest the selection is about."""
    return (f"backtest: parent run {run.run_id} of experiment '{run.experiment}', config_hash "
            f"{run.config_hash or '?'}, {n_windows} windows, finished {run.finished}")


def _register(store: Any, config: Any, report: Any, name: str, taken: Any) -> Any:
    """Retrain the selected schedule on the production window and register it (the version tagged with
    its train span and ``beats_baseline``). The alias moves only after the new version loads back and
    reproduces the harness's predictions (``tracking.register_model``); a Ctrl-C, even one lost on the
    way, stops it before the alias moves (exit 130), and a kill leaves the alias where it was."""
    import numpy as np
    import torch

    from harness import tracking
    from harness.backtest import resume
    from harness.production import train_production

    with resume.interrupts():
        try:
            production = train_production(config, report.selected)
            version_tags = {**production.span(), "beats_baseline": "true" if report.beats_baseline else "false",
                            "baseline": report.baseline, "source_backtest": report.run_id,
                            "config_hash": taken.config_hash, "selected_schedule": report.selected,
                    "epochs": str(production.epochs), "lr": f"{production.lr:g}"}
            gaps: list[float] = []

            def verify(loaded: Any) -> None:  # the version as users will load it, before the alias points at it
                with torch.no_grad():
                    again = loaded(torch.as_tensor(production.example)).numpy()
                gaps.append(float(np.max(np.abs(again - production.expected))))
                if not gaps[-1] <= 1e-6:
                    raise RuntimeError(f"the registered model's predictions differ from the harness's by "
                                       f"{gaps[-1]:.3g}")
                resume.check_interrupted()

            registered = tracking.register_model(
                store, config.experiment, production.model, name=name, input_example=production.example,
                run_name=f"production-{name}", params=production.params(),
                tags={"source_backtest": report.run_id, "selected_schedule": report.selected,
                      "strategy": config.strategy.name, "beats_baseline": version_tags["beats_baseline"]},
                version_tags=version_tags, verify=verify,
            )
        except BaseException:
            if resume.interrupted():  # a Ctrl-C that C code turned into another error is still a Ctrl-C
                raise KeyboardInterrupt from None
            raise
    gap = gaps[-1]
    forced = "" if report.beats_baseline else (
        f"; registered with --force although no schedule beats the baseline '{report.baseline}' "
        "(version tag beats_baseline=false)")
    report.production = production.describe() + [
        f"- registered as `{name}` version {registered.version}, alias `{registered.alias}` "
        f"(run `{registered.run_id}`; version tags train_start={production.span()['train_start']}, "
        f"train_end={production.span()['train_end']}, train_rows={production.n_train}){forced}; "
        f"`mlflow.pytorch.load_model(\"{registered.uri}\")` reproduces the harness's predictions on the "
        f"last {len(production.expected)} train rows (max abs difference {gap:.1e})",
    ]
    return registered
