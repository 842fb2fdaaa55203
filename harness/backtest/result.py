"""The one result type: a finished backtest as tidy frames plus its config.

``harness run`` builds it from the windows it trained (:func:`assemble`); ``harness select`` and a
rerun of a finished backtest read the same type back from MLflow
(:func:`harness.tracking.load_backtest`). Everything else (the ranking table, loss matrices, the
selection, the MLflow payload, the figures) is derived from it. Frame layouts:
``docs/ARCHITECTURE.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from harness.backtest import frames
from harness.backtest.boundary import Boundary
from harness.backtest.planning import Plan
from harness.backtest.window import WindowResult
from harness.config import Config
from harness.evaluation import metrics as M
from harness.evaluation.diagnosis import aggregate_rows
from strategies import get_strategy


@dataclass
class Backtest:
    """A finished backtest.

    ``predictions``: date, window, schedule, seed, prediction, target, baseline (one row per test
    row per member). ``training``: per-member diagnostics per window. ``curves``: validation loss
    per epoch per member. ``churn``: window k's test inputs through window k-1's and k's models.
    ``lr_curves``: schedule, step, lr. ``metrics`` (window, schedule, seed, metric, value),
    ``seed_mean_metrics`` (window, schedule, metric, value) and ``aggregates`` (schedule, metric,
    value) are the scores, computed once from the predictions and the strategy table.
    ``run_id`` is the MLflow parent run once logged.
    """

    config: Config
    data_hash: str
    predictions: pd.DataFrame
    training: pd.DataFrame
    curves: pd.DataFrame
    churn: pd.DataFrame
    lr_curves: pd.DataFrame
    metrics: pd.DataFrame
    seed_mean_metrics: pd.DataFrame
    aggregates: pd.DataFrame
    run_id: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    @cached_property
    def strategy(self) -> Any:
        """The strategy as the backtest scored it (seen through ``training.loss``,
        :func:`harness.evaluation.losses.loss_view`)."""
        from harness.evaluation.losses import loss_view

        strategy = loss_view(get_strategy(self.config.strategy.name, self.config.strategy.params,
                                          periods_per_year=self.config.data.periods_per_year), self.config.training)
        if getattr(strategy, "loss", None) == "huber" and strategy.huber_delta is None:  # its delta comes from the data
            from harness.backtest.planning import plan

            the_plan = plan(self.config)
            self.__dict__.setdefault("table", the_plan.table)
            return the_plan.strategy
        return strategy

    @cached_property
    def table(self) -> Any:
        """The strategy table the predictions came from (rebuilt from the data when read back)."""
        from harness.backtest.planning import plan

        return plan(self.config).table

    @property
    def labels(self) -> list[str]:
        """The candidate labels (schedule x budget x LR; the schedule labels without those axes), in config order."""
        return self.config.schedule_labels()

    def candidate_tags(self) -> dict[str, dict[str, str]]:
        """Each candidate label's MLflow tags: ``epochs``, ``lr``, ``base_schedule`` (its schedule's label)."""
        return {candidate.label: candidate.tags() for candidate in self.config.candidates()}

    def undertrained(self) -> pd.DataFrame:
        """Per candidate, the share of members still improving when training stopped
        (:func:`harness.evaluation.diagnosis.undertrained`)."""
        from harness.evaluation.diagnosis import undertrained

        return undertrained(self.curves, self.training)

    @property
    def metric(self) -> str:
        """The selection metric: ``selection.metric``, else the strategy's default."""
        return self.config.selection.metric or self.strategy.default_metric

    @property
    def n_windows(self) -> int:
        return int(self.predictions["window"].nunique())

    @property
    def horizon(self) -> int:
        """The label horizon (Newey–West lags are at least horizon − 1)."""
        return int(getattr(self.strategy, "horizon", 1))

    def summary(self, metric: str | None = None) -> pd.DataFrame:
        """The ranking table by pooled ``metric`` (default ``selection.metric``), best first."""
        return M.ranking_table(self.aggregates, metric=metric or self.metric,
                               strategy=self.strategy)

    def lr_curve(self, label: str) -> np.ndarray:
        """Schedule ``label``'s LR per optimizer step (its first seed)."""
        return self.lr_curves.loc[self.lr_curves["schedule"] == label, "lr"].to_numpy(np.float64)

    def schedule_params(self) -> dict[str, dict[str, Any]]:
        """Each schedule label's spec: its name and parameters."""
        return {c.label: {"name": c.schedule.name, **c.schedule.params} for c in self.config.candidates()}

    def equity_curves(self) -> dict[str, pd.Series]:
        """Each schedule's equity curve over all out-of-sample windows, from its seed-mean predictions,
        for strategies with a trading view (an ``equity(pred, test)`` method); else empty."""
        if not callable(getattr(self.strategy, "equity", None)):
            return {}
        mean = M.seed_mean(self.predictions, self.training)
        return {label: self.strategy.equity(rows["prediction"].to_numpy(), M.test_table(self.table, rows))
                for label, rows in mean.groupby("schedule", sort=False)}


def assemble(the_plan: Plan, boundary: Boundary, done: list[WindowResult]) -> Backtest:
    """The backtest of a plan from its windows' results (in any order)."""
    config, strategy, table = the_plan.config, the_plan.strategy, the_plan.table
    done = sorted(done, key=lambda w: w.index)
    churn = frames.concat([frames.churn(b.index, b.labels, a.next_predictions, _member_predictions(b))
                           for a, b in zip(done, done[1:])
                           if a.next_predictions is not None and b.index == a.index + 1], frames.CHURN_COLUMNS)
    predictions = pd.concat([w.predictions for w in done], ignore_index=True)
    training = pd.concat([w.training for w in done], ignore_index=True)
    metrics, seed_mean_metrics, aggregates = score(config, strategy, table, predictions, training, churn)
    curves = pd.concat([w.curves for w in done], ignore_index=True)
    aggregates = pd.concat([aggregates, aggregate_rows(curves, training)], ignore_index=True)  # still_improving
    backtest = Backtest(
        config=config, data_hash=the_plan.data_hash, predictions=predictions, training=training,
        curves=curves, churn=churn,
        lr_curves=frames.lr_curves(_lr_curves(config, boundary.lr_windows(done))), metrics=metrics,
        seed_mean_metrics=seed_mean_metrics, aggregates=aggregates,
    )
    backtest.__dict__.update(strategy=strategy, table=table)  # already at hand: no need to rebuild them
    return backtest


def score(config: Config, strategy: Any, table: Any, predictions: pd.DataFrame, training: pd.DataFrame,
          churn: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per-member per-window metrics, seed-mean per-window metrics, and aggregates per schedule."""
    metric = config.selection.metric or strategy.default_metric
    per_member = M.window_metrics(predictions, strategy, table=table, training=training)
    means = M.seed_mean(predictions, training).assign(seed=-1)
    per_window = M.window_metrics(means, strategy, table=table).drop(columns="seed")
    aggregates = M.aggregate_metrics(predictions, per_member, training, strategy, metric=metric,
                                     churn_preds=churn, table=table)
    return per_member, per_window, aggregates


def _member_predictions(result: WindowResult) -> np.ndarray:
    """A window's predictions as ``[members, n_test]`` (members in label order)."""
    return result.predictions["prediction"].to_numpy().reshape(len(result.labels), -1)


def _lr_curves(config: Config, windows: list[WindowResult]) -> dict[str, np.ndarray]:
    """Each candidate's LR per step for its first seed over ``windows`` (its own budget's steps)."""
    seeds, longest = config.training.seeds, max(config.training.budgets)
    return {c.label: np.concatenate([w.lr[i * seeds, :c.epochs * (w.lr.shape[1] // longest)] for w in windows])
            for i, c in enumerate(config.candidates())}
