"""What the tracking functions hand back to other code: plain values, no MLflow import.

:class:`Store` (where runs go), :class:`BacktestLog` (what a backtest's logging wrote) and
:class:`Comparison` (a backtest's schedule runs as the UI compares them) are read by processes
that leave their MLflow work to another: ``harness run`` has its store calls made by its side
process (:mod:`harness.backtest.sidecar`) and unpickles what comes back without importing MLflow.
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

WORKFLOW_TYPE = "machine_learning"  # the UI's "Model training" workflow (the other is "genai")
DEFAULT_FOLDER = "./mlruns"
DB_NAME = "mlflow.db"
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+:")  # a scheme of >= 2 letters: not "C:\..."


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


def store_location(uri: str | Path | None = None) -> Store:
    """The store ``uri`` names, unchecked (:func:`harness.tracking.resolve_store` checks it):
    explicit, else ``$MLFLOW_TRACKING_URI``, else ``./mlruns``. A folder is
    ``sqlite:///<abs folder>/mlflow.db`` with artifacts in ``<folder>/artifacts``; a ``sqlite:///``
    URI keeps its artifacts beside the database file; any other URI is itself."""
    text = store_text(uri)
    if not is_uri(text):
        folder = Path(text).expanduser().resolve()
        return Store(f"sqlite:///{(folder / DB_NAME).as_posix()}", folder / "artifacts", folder, folder / DB_NAME)
    database = _sqlite_file(text)
    return Store(text) if database is None else Store(text, database.parent / "artifacts", None, database)


def store_text(uri: str | Path | None = None) -> str:
    """``uri`` as text, else ``$MLFLOW_TRACKING_URI``, else ``./mlruns``."""
    return str(uri) if uri not in (None, "") else os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_FOLDER


def is_uri(text: str) -> bool:
    """Whether a store's text is a URI (a scheme of two letters or more), not a folder."""
    return _URI.match(text) is not None


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///path`` URI (relative to the cwd), or None."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    if path in ("", ":memory:"):
        return None
    return Path(path).expanduser().resolve()


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
