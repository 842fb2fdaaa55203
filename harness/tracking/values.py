"""What the tracking functions hand back to other code: plain values, no MLflow import.

:class:`Store` (where runs go), :class:`BacktestLog` (what a backtest's logging wrote) and
:class:`Comparison` (a backtest's schedule runs as the UI compares them) are read by processes
that leave their MLflow work to another: ``harness run`` has its store calls made by its side
process (:mod:`harness.backtest.sidecar`) and unpickles what comes back without importing MLflow.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

WORKFLOW_TYPE = "machine_learning"  # the UI's "Model training" workflow (the other is "genai")


@dataclass(frozen=True)
class Store:
    """Where runs go: an MLflow tracking URI and, for local stores, the artifact root.

    ``folder`` is set when the user named a folder (SQLite ``<folder>/mlflow.db`` and artifacts
    under ``<folder>/artifacts``); ``artifact_root`` and ``database`` (the SQLite file, locked
    while a schema is created) are set for every local SQLite store.
    """

    tracking_uri: str
    artifact_root: Path | None = None
    folder: Path | None = None
    database: Path | None = None


@dataclass
class BacktestLog:
    """What :func:`~harness.tracking.finish_backtest` logged, and the seconds it took (drawing the figures excluded)."""

    experiment_id: str
    parent_run_id: str
    child_run_ids: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class Comparison:
    """A finished backtest's schedule runs, in schedule order, as the UI's comparison shows them."""

    experiment: str
    experiment_id: str
    parent_run_id: str
    run_ids: tuple[str, ...]
    schedules: tuple[str, ...]

    def url(self, base: str) -> str:
        return compare_url(base, self.experiment_id, self.run_ids)


def compare_url(base: str, experiment_id: str, run_ids: tuple[str, ...] | list[str]) -> str:
    """The UI at ``base`` (``http://host:port``) on the comparison of ``run_ids``, model-training view."""
    values = {
        "runs": json.dumps(list(run_ids), separators=(",", ":")),
        "experiments": json.dumps([str(experiment_id)], separators=(",", ":")),
        "workflowType": WORKFLOW_TYPE,
    }
    query = "&".join(f"{key}={urllib.parse.quote(value, safe=',')}" for key, value in values.items())
    return f"{base.rstrip('/')}/#/compare-runs?{query}"
