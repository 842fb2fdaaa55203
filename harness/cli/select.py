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
    from harness import tracking
    from harness.evaluation.selection import select, selection_summary
    from harness.figures import selection_figures

    if args.register is not None:
        tracking.check_model_name(args.register)
    store = tracking.resolve_store(args.tracking_uri)
    backtest = tracking.load_backtest(store, args.experiment)
    report = select(backtest, {"metric": args.metric, "alpha": args.alpha, "rule": args.rule})
    config = backtest.config
    print(report.markdown(), flush=True)
    if args.register is not None:
        registered = _register(store, config, report, args.register)
        print("## Production model\n\n" + "\n".join(report.production))
        print(f"load it with mlflow.pytorch.load_model(\"{registered.uri}\") "
              f"(tracking uri {store.tracking_uri})")
    with tempfile.TemporaryDirectory(prefix="harness-select-") as folder:
        files = selection_figures(report, folder)
        tracking.log_selection(store, report.run_id, files, report.tags())
    print(f"\nlogged {', '.join(files)} and tag selected_schedule={report.selected} "
          f"to parent run {report.run_id}")
    print(selection_summary(report))
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
