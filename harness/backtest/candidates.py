"""A backtest's candidates (schedule × ``training.epochs`` × ``training.lr``): the config one of them
trains with, and the grid tables that lay the candidates out by budget and LR.

The candidates themselves (their order and labels) are :mod:`harness.schedules.candidates`'s;
``Config.candidates()`` lists a config's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from harness.config import Config
from harness.schedules.candidates import Candidate, find

if TYPE_CHECKING:
    from harness.backtest.result import Backtest


def candidate(config: Config, label: str) -> Candidate:
    """The candidate of ``config`` labelled ``label`` (one-line error naming the valid ones)."""
    return find(config.candidates(), label)


def single_config(config: Config, label: str, **training: Any) -> Config:
    """``config`` reduced to the one candidate ``label``: its schedule, budget and LR (the
    production model trains so); ``training`` overrides further fields of the training section."""
    chosen = candidate(config, label)
    section = config.training.model_copy(update={"epochs": chosen.epochs, "lr": chosen.lr, **training})
    return config.model_copy(update={"schedules": [chosen.spec], "training": section})


def has_axes(config: Config) -> bool:
    """Whether the config lists several budgets or base LRs (its candidates carry them in their labels)."""
    return len(config.training.budgets) > 1 or len(config.training.lrs) > 1


def grid_table(backtest: Backtest, metric: str | None = None, key: str = "pooled") -> pd.DataFrame:
    """The aggregate ``<key>_<metric>`` of every candidate laid out as a grid: one row per schedule
    (and base LR, when several), one column per budget (``epochs``), in config order. ``key``
    may also be a whole aggregate name (``still_improving``)."""
    metric = metric or backtest.metric
    name = key if key in set(backtest.aggregates["metric"]) else f"{key}_{metric}"
    values = backtest.aggregates[backtest.aggregates["metric"] == name].set_index("schedule")["value"]
    rows = []
    for c in backtest.config.candidates():
        rows.append({"schedule": c.schedule.label, "lr": c.lr, "epochs": c.epochs,
                     "value": float(values.get(c.label, np.nan))})
    frame = pd.DataFrame(rows)
    index = ["schedule", "lr"] if len(backtest.config.training.lrs) > 1 else ["schedule"]
    grid = frame.pivot_table(index=index, columns="epochs", values="value", aggfunc="first", sort=False, dropna=False)
    grid = grid.reindex(columns=backtest.config.training.budgets)
    grid.columns = [f"{epochs} epochs" for epochs in grid.columns]
    return grid


def grid_markdown(grid: pd.DataFrame, fmt: str = "{:.4g}", best: str = "min") -> str:
    """A grid as a markdown table, the best value of each column in bold."""
    frame = grid.reset_index()
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" if i < grid.index.nlevels else "---:" for i in range(frame.shape[1])) + "|"
    body = []
    for _, row in frame.iterrows():
        cells = [str(row[c]) for c in frame.columns[:grid.index.nlevels]]
        for column in grid.columns:
            value = row[column]
            column_values = grid[column].to_numpy(np.float64)
            target = np.nanmin(column_values) if best == "min" else np.nanmax(column_values)
            text = "—" if not np.isfinite(value) else fmt.format(value)
            cells.append(f"**{text}**" if np.isfinite(value) and value == target else text)
        body.append("| " + " | ".join(cells) + " |")
    return "\n".join([header, rule, *body])
