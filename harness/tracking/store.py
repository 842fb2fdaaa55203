"""The store: where runs go, one MLflow client per store, and the experiment (design section 9).

MLflow is reached through an explicit :class:`mlflow.MlflowClient` per tracking URI, never through
the global tracking URI, so two stores in one process do not interfere. A local SQLite store is
opened under a file lock beside its database: several processes creating a new schema at once
corrupt it.
"""

from __future__ import annotations

import os
import re
import tempfile
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from harness.errors import HarnessError, first_line
from harness.provenance import reachable

DEFAULT_FOLDER = "./mlruns"
DB_NAME = "mlflow.db"

# The kind MLflow >= 3 reads to tell a model-training experiment from a GenAI one (whose layout is
# traces and token usage). The 3.17 UI's GenAI / Model training switch overrides it: that follows
# the URL parameter workflowType (see tracking/links.py), else the browser's last choice.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

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


def resolve_store(uri: str | Path | None = None, *, create: bool = True) -> Store:
    """The store for ``uri``: explicit argument, else ``$MLFLOW_TRACKING_URI``, else ``./mlruns``.

    A folder becomes ``sqlite:///<abs folder>/mlflow.db`` with artifacts in ``<folder>/artifacts``;
    the folder is created and must be writable. Any MLflow URI is used as is; a ``sqlite:///`` one
    keeps its artifacts in an ``artifacts`` folder beside the database file. With ``create=False``
    (a reader such as ``harness ui``) nothing is created: a local store whose database does not
    exist yet raises :class:`HarnessError`.
    """
    text = str(uri) if uri not in (None, "") else os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_FOLDER
    if not _URI.match(text):
        folder = Path(text).expanduser().resolve()
        store = Store(f"sqlite:///{(folder / DB_NAME).as_posix()}", folder / "artifacts", folder, folder / DB_NAME)
    else:
        database = _sqlite_file(text)
        store = Store(text) if database is None else Store(text, database.parent / "artifacts", None, database)
    if store.database is None:
        return store
    if create:
        _check_writable(store.database.parent, store.database)
    elif not store.database.is_file():
        raise HarnessError(
            f"no tracking store at {store.folder or store.database}: {store.database.name} does not exist; "
            "run `harness run` first or choose the store with --tracking-uri (or $MLFLOW_TRACKING_URI)"
        )
    return store


def ensure_experiment(store: Store, name: str) -> str:
    """Create (once) the store's schema and the experiment ``name``; return its id.

    The experiment carries ``mlflow.experimentKind=custom_model_development`` (set on an existing
    one that lacks the tag; a kind the user chose is kept), which marks it as model training, not
    GenAI, for MLflow. Call it before fanning out to workers: several processes creating a new
    SQLite schema at once corrupt it, so local stores are opened under a file lock beside the database.
    """
    with store_lock(store):
        client = open_client(store)
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return client.create_experiment(name, artifact_location=_artifact_location(store, name),
                                                tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
            except MlflowException as exc:  # created meanwhile by another client of a remote store
                if "already exists" not in str(exc):
                    raise
                experiment = client.get_experiment_by_name(name)
        if experiment.lifecycle_stage != "deleted" and EXPERIMENT_KIND_TAG not in experiment.tags:
            client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    if experiment.lifecycle_stage == "deleted":
        raise HarnessError(deleted_message(store, name, experiment.experiment_id))
    return experiment.experiment_id


def deleted_message(store: Store, name: str, experiment_id: str) -> str:
    return (f"experiment '{name}' is deleted in {store.tracking_uri}; restore it with `mlflow experiments "
            f"restore --experiment-id {experiment_id}` or choose another experiment name")


def check_server(store: Store, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when an ``http(s)`` tracking server does not answer.

    MLflow's client retries an unreachable server for minutes before it gives up.
    """
    parts = urllib.parse.urlsplit(store.tracking_uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    error = reachable(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), timeout)
    if error is not None:
        raise HarnessError(
            f"tracking server {store.tracking_uri} does not answer ({error.strerror or error}); start it "
            "(mlflow server ...) or choose another store with tracking.uri or --tracking-uri"
        )


# --- the client and the lock (used by the other tracking modules) --------------------------------

_CLIENTS: dict[str, MlflowClient] = {}
_LOCKS: dict[Path, FileLock] = {}


def open_client(store: Store) -> MlflowClient:
    """One client per tracking URI; the first opens the store (creating a new schema) under lock."""
    client = _CLIENTS.get(store.tracking_uri)
    if client is None:
        with store_lock(store):
            try:
                client = MlflowClient(tracking_uri=store.tracking_uri, registry_uri=store.tracking_uri)
                client.search_experiments(max_results=1)
            except MlflowException as exc:
                raise HarnessError(
                    f"cannot open tracking store {store.tracking_uri}: {first_line(exc)}; "
                    "fix or change it with tracking.uri or --tracking-uri"
                ) from None
        _CLIENTS[store.tracking_uri] = client
    return client


@contextmanager
def store_lock(store: Store) -> Iterator[None]:
    """The file lock beside a local store's database; nothing for remote stores."""
    if store.database is None:  # remote stores serialise schema creation themselves
        yield
        return
    lock_path = store.database.with_name(store.database.name + ".lock")
    lock = _LOCKS.setdefault(lock_path, FileLock(lock_path, timeout=300))
    with lock:
        yield


def _check_writable(folder: Path, database: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
        if database.exists() and not os.access(database, os.W_OK):
            raise PermissionError(f"{database.name} is read-only")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise HarnessError(
            f"tracking folder {folder} is not writable: {reason}; "
            "choose another with tracking.uri or --tracking-uri"
        ) from None


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///path`` URI (relative to the cwd), or None."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    if path in ("", ":memory:"):
        return None
    return Path(path).expanduser().resolve()


def _artifact_location(store: Store, experiment: str) -> str | None:
    if store.artifact_root is None:
        return None  # the server's default
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", experiment).strip("-.") or "experiment"
    return (store.artifact_root / slug).as_uri()
