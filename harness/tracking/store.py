"""The store: where runs go, one MLflow client per store, and the experiment (design section 9).

MLflow is reached through an explicit :class:`mlflow.MlflowClient` per tracking URI, never through
the global tracking URI, so two stores in one process do not interfere. A local SQLite store is
opened under a file lock beside its database: several processes creating a new schema at once
corrupt it.

A new local SQLite store starts as a copy of an empty schema (:func:`schema_template`): MLflow
creates a schema by running its ~60 migrations, one committed transaction each (1.5 s or more),
and every new store's schema is the same, so it is built once per installed MLflow, kept in the
user's cache folder, and copied (milliseconds).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from harness.errors import HarnessError, first_line
from harness.provenance import reachable
from harness.tracking.faults import install as _install_fault_hook
from harness.tracking.values import Store, is_uri, store_location, store_text

# The kind MLflow >= 3 reads to tell a model-training experiment from a GenAI one (whose layout is
# traces and token usage). The 3.17 UI's GenAI / Model training switch overrides it: that follows
# the URL parameter workflowType (see tracking/links.py), else the browser's last choice.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

_install_fault_hook()  # test-only: a no-op unless $HARNESS_TEST_KILL_AT or $HARNESS_TEST_WRITES is set



def resolve_store(uri: str | Path | None = None, *, create: bool = True) -> Store:
    """The store for ``uri``: explicit argument, else ``$MLFLOW_TRACKING_URI``, else ``./mlruns``.

    A folder becomes ``sqlite:///<abs folder>/mlflow.db`` with artifacts in ``<folder>/artifacts``;
    the folder is created and must be writable. Any MLflow URI is used as is; a ``sqlite:///`` one
    keeps its artifacts in an ``artifacts`` folder beside the database file. A URI that cannot work
    (``sqlite:/x.db``, ``sqlite:///`` without a file, ``http://`` without a host or with a bad port, a
    database whose driver is not installed) is a one-line :class:`HarnessError` (:func:`_checked_uri`).
    With ``create=False`` (a reader such as ``harness ui``) nothing is created: a local store whose
    database does not exist yet raises :class:`HarnessError`.
    """
    text = store_text(uri)
    store = store_location(_checked_uri(text) if is_uri(text) else text)
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
    parts = _http_parts(store.tracking_uri)
    if parts is None:
        return
    host, port = parts
    error = reachable(host, port, timeout)
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
                _seed_schema(store)
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


# --- new stores from a schema template ---------------------------------------------------------

SCHEMA_CACHE_ENV = "HARNESS_CACHE_DIR"


def schema_template() -> Path | None:
    """An empty MLflow SQLite schema for the installed MLflow, built once and kept in the cache
    folder (``$HARNESS_CACHE_DIR``, else ``$XDG_CACHE_HOME/harness``, else ``~/.cache/harness``);
    None where it cannot be built or kept there (a new store is then created by MLflow itself).

    The template is what MLflow itself creates (its migrations, on a file of its own) without the
    ``Default`` experiment, whose artifact location MLflow derives from the working folder of the
    process that opens the store: MLflow adds it when a copy is first opened, as for any new store.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        key = "-".join(f"{name}{version(name)}" for name in ("mlflow", "sqlalchemy", "alembic"))
    except PackageNotFoundError:
        return None
    folder = _cache_folder()
    template = folder / f"mlflow-schema-{re.sub(r'[^A-Za-z0-9._-]', '_', key)}.db"
    if template.is_file():
        return template
    try:
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{template.name}.{uuid.uuid4().hex}"
        try:
            _build_schema(partial)
            os.replace(partial, template)  # atomic: concurrent builders each leave a whole template
        finally:
            partial.unlink(missing_ok=True)
    except Exception:  # noqa: BLE001 - any failure: MLflow creates the store's schema itself
        return None
    return template


def _cache_folder() -> Path:
    explicit = os.environ.get(SCHEMA_CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "harness"


def _build_schema(path: Path) -> None:
    """MLflow's own schema creation on ``path``, unsynced (nothing else reads the file while it is
    built), then its default experiment removed."""
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    uri = f"sqlite:///{path.as_posix()}"

    def unsynced(connection, record):
        if _is_file(connection, path):
            cursor = connection.cursor()
            cursor.execute("PRAGMA synchronous=OFF")
            cursor.execute("PRAGMA journal_mode=MEMORY")
            cursor.close()

    event.listen(Engine, "connect", unsynced)
    try:
        MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments(max_results=1)
    finally:
        event.remove(Engine, "connect", unsynced)
        _dispose_engine(uri)
    with sqlite3.connect(path) as connection:
        connection.execute("DELETE FROM experiments WHERE experiment_id = 0")
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA journal_mode=DELETE")  # a plain rollback journal, as MLflow's own files


def _is_file(connection: object, path: Path) -> bool:
    """Whether a DB-API sqlite3 connection is to the database file ``path``."""
    try:
        rows = connection.execute("PRAGMA database_list").fetchall()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001
        return False
    return any(row[2] and os.path.realpath(row[2]) == os.path.realpath(path) for row in rows)


def _dispose_engine(uri: str) -> None:
    """Close MLflow's cached engine of the built template (it is not a store anyone uses)."""
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        engine = SqlAlchemyStore._engine_map.pop(uri, None)
        if engine is not None:
            engine.dispose()
    except Exception:  # noqa: BLE001 - a private cache; nothing to undo if it changed
        pass


def _seed_schema(store: Store) -> None:
    """Give a new local SQLite store (no database file yet, or an empty one) the schema template."""
    database = store.database
    if database is None or (database.exists() and database.stat().st_size > 0):
        return
    template = schema_template()
    if template is None:
        return
    partial = database.with_name(f".{database.name}.{uuid.uuid4().hex}")
    try:
        shutil.copyfile(template, partial)
        os.replace(partial, database)
    except OSError:
        partial.unlink(missing_ok=True)  # MLflow creates the schema itself (and says why it cannot)


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


_FIX_URI = ("; set tracking.uri or --tracking-uri to a folder (./mlruns), sqlite:///path/to/mlflow.db "
            "or http://host:port")
_DATABASES = ("postgresql", "mysql", "mssql")


def _checked_uri(uri: str) -> str:
    """``uri``, when its scheme's part can work; else a one-line :class:`HarnessError` saying why.

    Schemes this does not know (MLflow plugins among them) pass unchecked: MLflow itself says
    whether it can open them (:func:`open_client`).
    """
    scheme = uri.split(":", 1)[0].lower()
    base = scheme.split("+", 1)[0]
    if base == "sqlite":
        if not uri.startswith("sqlite:///"):
            raise HarnessError(f"tracking uri '{uri}' is malformed: a SQLite store is sqlite:///relative/path.db or "
                               f"sqlite:////absolute/path.db{_FIX_URI}")
        if not uri[len("sqlite:///"):].split("?", 1)[0]:
            raise HarnessError(f"tracking uri '{uri}' names no database file{_FIX_URI}")
    elif base in ("http", "https"):
        _http_parts(uri)
    elif base in _DATABASES:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError

        try:
            make_url(uri).get_dialect().import_dbapi()
        except (ArgumentError, ValueError) as exc:
            raise HarnessError(f"tracking uri '{uri}' is malformed ({first_line(exc)}){_FIX_URI}") from None
        except (ImportError, NoSuchModuleError) as exc:
            raise HarnessError(f"tracking uri '{uri}': the {base} driver is not installed ({first_line(exc)}); "
                               f"install it in this environment, or use a local store{_FIX_URI}") from None
    return uri


def _http_parts(uri: str) -> tuple[str, int] | None:
    """``(host, port)`` of an ``http(s)`` URI, None for other schemes; a malformed one is a HarnessError."""
    try:
        parts = urllib.parse.urlsplit(uri)
        port = parts.port
    except ValueError as exc:  # "Port out of range", "Invalid IPv6 URL", ...
        raise HarnessError(f"tracking uri '{uri}' is malformed ({exc}){_FIX_URI}") from None
    if parts.scheme.lower() not in ("http", "https"):
        return None
    if not parts.hostname:
        raise HarnessError(f"tracking uri '{uri}' names no host{_FIX_URI}")
    return parts.hostname, port or (443 if parts.scheme.lower() == "https" else 80)


def _artifact_location(store: Store, experiment: str) -> str | None:
    if store.artifact_root is None:
        return None  # the server's default
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", experiment).strip("-.") or "experiment"
    return (store.artifact_root / slug).as_uri()
