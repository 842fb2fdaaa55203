"""The model registry and the selection (``harness select``): the selection report logged to a
backtest's parent run, and the production model registered under an alias and loaded back.

Both can be killed at any moment and run again. The selection's files go first and its tags
(``selected_schedule``, ...) after, in one write, so a parent run with ``selected_schedule`` has its
whole selection. A registration moves the alias last: the model is logged in a production run, the
version is created with its tags, loaded back by version and checked, the run is ended FINISHED,
and only then does the alias point at it. A kill before that leaves the alias where it was; the
next registration of that name trashes the versions of production runs that never finished (and
ends such runs KILLED when their process is gone), so no half-written version stays behind.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import RunStatus, RunTag
from mlflow.exceptions import MlflowException

from harness import provenance
from harness.errors import HarnessError, first_line
from harness.tracking.artifacts import add_files, staging
from harness.tracking.batch import (
    flatten,
    log_batch,
    open_run,
    plain_tags,
    search,
    source_tags,
)
from harness.tracking.store import Store, ensure_experiment, open_client

CHAMPION = "champion"
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class RegisteredModel:
    """A model version in the registry and the run that logged it; ``uri`` loads it by alias."""

    name: str
    version: str
    alias: str
    run_id: str
    model_uri: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{self.alias}"


def check_model_name(name: str) -> str:
    """Return ``name`` if it can be a registered model name (and sit in ``models:/NAME@alias``)."""
    if not _MODEL_NAME.match(name or ""):
        raise HarnessError(
            f"--register {name!r}: a model name starts with a letter, digit or '_' and holds only letters, "
            "digits, '.', '_' and '-'; choose another, e.g. spx-vol"
        )
    return name


def log_selection(
    store: Store, parent_run_id: str, files: Mapping[str, str | Path], tags: Mapping[str, Any]
) -> None:
    """Log the selection's files (artifact name -> local file: ``selection.md`` and its PNGs, as
    :func:`harness.figures.selection_figures` returns them) to a backtest's parent run and set
    ``tags`` on it (``selected_schedule``, ...) in one write after the files, so a run with the tags
    has the whole selection; a later selection replaces them."""
    client = open_client(store)
    with staging() as folder:
        add_files(folder, files)
        client.log_artifacts(parent_run_id, str(folder))
    client.log_batch(parent_run_id, tags=[RunTag(key, value) for key, value in plain_tags(tags).items()],
                     synchronous=True)


def register_model(
    store: Store,
    experiment: str,
    model: Any,
    *,
    name: str,
    input_example: np.ndarray,
    run_name: str,
    params: Mapping[str, Any],
    tags: Mapping[str, Any],
    alias: str = CHAMPION,
    version_tags: Mapping[str, Any] | None = None,
    verify: Callable[[Any], None] | None = None,
) -> RegisteredModel:
    """Log ``model`` (a ``torch.nn.Module``) with ``mlflow.pytorch.log_model`` in a new run of
    ``experiment``, register it as a new version of ``name`` and point ``alias`` at that version.

    The run is tagged ``kind=production`` (not a backtest, not a child of one) and names its
    process and ``registered_model``. The signature is inferred from ``input_example`` and the
    model's output on it; the format is MLflow's default ``pt2`` (``torch.export``; loads back as a
    ``GraphModule``); pip requirements are given explicitly (inferring them costs seconds).
    ``version_tags`` are set on the new model version as it is created (``train_start``,
    ``train_end``, ``beats_baseline``, ...; read back with
    ``MlflowClient.get_model_version_by_alias(name, alias).tags``).

    The alias moves last (module docstring): the new version is loaded back by version and must
    give the model's output on ``input_example`` (1e-6), then ``verify(loaded)`` runs (raise to
    stop: a failed check, a pending Ctrl-C), then the run ends FINISHED, then the alias is set.
    On an error before the alias the new version is trashed; versions left by killed
    registrations of ``name`` are trashed first.
    """
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    check_model_name(name)
    example = np.ascontiguousarray(input_example, dtype=np.float64)
    with torch.no_grad():
        output = model(torch.as_tensor(example)).numpy()
    signature = infer_signature(example, output)
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}",
                    f"numpy=={np.__version__}"]
    experiment_id = ensure_experiment(store, experiment)
    client = open_client(store)
    drop_unfinished_versions(store, name, experiment_id)
    run_tags = {**source_tags({}), **plain_tags(tags), "kind": "production", "registered_model": name,
                **provenance.process_tags()}
    version = None
    try:
        with open_run(client, experiment_id, run_name, run_tags) as run_id:  # FINISHED once the version is checked
            log_batch(client, run_id, params=flatten(dict(params)))
            with _fluent(store):  # the registry resolves a models:/ source through the global URIs too
                # run_id, not mlflow.start_run: that would end the run FINISHED before the version is checked
                info = mlflow.pytorch.log_model(model, name="model", signature=signature, input_example=example,
                                                pip_requirements=requirements, run_id=run_id)
                version = _new_version(client, name, info.model_uri, run_id, info.model_id,
                                       plain_tags(version_tags or {}))
                loaded = mlflow.pytorch.load_model(f"models:/{name}/{version}")
            with torch.no_grad():
                again = loaded(torch.as_tensor(example)).numpy()
            gap = float(np.max(np.abs(again - output))) if output.size else 0.0
            if not gap <= 1e-6:
                raise RuntimeError(f"--register {name}: version {version} loads back with predictions "
                                   f"{gap:.3g} away from the model's")
            if verify is not None:
                verify(loaded)
        client.set_registered_model_alias(name, alias, version)
    except BaseException:
        if version is not None:
            _drop_version(client, name, version)
        raise
    return RegisteredModel(name, version, alias, run_id, info.model_uri)


def drop_unfinished_versions(store: Store, name: str, experiment_id: str | None = None) -> list[str]:
    """Clean what killed or failed registrations of ``name`` left: their production runs left RUNNING
    by a process that is gone are ended KILLED (those of ``experiment_id``, found by their tag
    ``registered_model``), and the versions without an alias whose production run is not FINISHED
    are trashed (a live registration's version is left alone). Returns the versions trashed."""
    client = open_client(store)
    if experiment_id is not None:
        running = search(client, experiment_id, f"tags.kind = 'production' and tags.registered_model = '{name}' "
                                                "and attributes.status = 'RUNNING'")
        for run in running:
            if not _owner_alive(run.data.tags):
                client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return []
    aliased = _aliased(client, name)
    dropped = []
    for version in versions:
        if str(version.version) in aliased or not version.run_id:
            continue
        try:
            run = client.get_run(version.run_id)
        except MlflowException:
            continue  # a run deleted for good: not ours to judge
        status = run.info.status
        if status == RunStatus.to_string(RunStatus.FINISHED):
            continue  # complete and checked: a former champion, or a kill just before the alias moved
        if status == RunStatus.to_string(RunStatus.RUNNING):
            if _owner_alive(run.data.tags):
                continue
            client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
        _drop_version(client, name, str(version.version))
        dropped.append(str(version.version))
    return dropped


def _aliased(client: MlflowClient, name: str) -> set[str]:
    """The versions of ``name`` that an alias points at (on SQLite ``search_model_versions`` leaves
    aliases empty; the registered model lists them)."""
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        return set()
    aliases = getattr(model, "aliases", None) or {}
    return {str(version) for version in aliases.values()}


def _owner_alive(tags: Mapping[str, str]) -> bool:
    """Whether the process named by a run's ``process.*`` tags may still be writing it."""
    host, pid = tags.get("process.host"), tags.get("process.pid", "")
    if host is None or not pid.isdigit():
        return False  # no owner recorded (an older version's run): nothing can still be writing it
    if host != provenance.hostname():
        return True  # another host cannot be checked: left alone
    return provenance.is_running(int(pid), tags.get("process.started", ""))


def _drop_version(client: MlflowClient, name: str, version: str) -> None:
    try:
        client.delete_model_version(name, version)
    except MlflowException:
        pass


def _new_version(client: MlflowClient, name: str, source: str, run_id: str, model_id: str | None,
                 tags: Mapping[str, str]) -> str:
    """Register ``source`` as a new version of ``name`` (created on first use) with its ``tags`` in one
    write, through the client, which, unlike the fluent ``register_model``, prints nothing."""
    try:
        try:
            client.get_registered_model(name)
        except MlflowException:
            client.create_registered_model(name)
        return str(client.create_model_version(name, source, run_id=run_id, model_id=model_id,
                                               tags=dict(tags)).version)
    except MlflowException as exc:
        raise HarnessError(f"--register {name}: MLflow refused to register the model: {first_line(exc)}") from None


def load_registered_model(store: Store, name: str, alias: str = CHAMPION) -> Any:
    """``mlflow.pytorch.load_model("models:/NAME@alias")`` from ``store``."""
    import mlflow.pytorch

    with _fluent(store):
        try:
            return mlflow.pytorch.load_model(f"models:/{name}@{alias}")
        except MlflowException as exc:
            raise HarnessError(f"no model '{name}@{alias}' in {store.tracking_uri}: {first_line(exc)}") from None


@contextmanager
def _fluent(store: Store) -> Iterator[None]:
    """MLflow's fluent API (``log_model``, ``load_model``) pointed at ``store``, then put back.

    ``mlflow.set_tracking_uri``/``set_registry_uri`` also write ``MLFLOW_TRACKING_URI`` and
    ``MLFLOW_REGISTRY_URI`` into the environment, and an explicitly set registry URI stops following
    the tracking URI; so the module globals and both variables are restored as they were (unset
    included), not set to their previous values.
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    environment = {name: os.environ.get(name) for name in names}
    tracking_uri, registry_uri = tracking_utils._tracking_uri, registry_utils._registry_uri
    mlflow.set_tracking_uri(store.tracking_uri)
    mlflow.set_registry_uri(store.tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(tracking_uri)  # also resets the trace exporter bound to the URI
        registry_utils._registry_uri = registry_uri
        for name, value in environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
