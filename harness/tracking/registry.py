"""The model registry and the selection (``harness select``): the selection report logged to a
backtest's parent run, and the production model registered under an alias and loaded back."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from harness.errors import HarnessError, first_line
from harness.tracking.artifacts import add_files, staging
from harness.tracking.batch import (
    flatten,
    log_batch,
    open_run,
    plain_tags,
    set_tags,
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
    ``tags`` on it (``selected_schedule``, ...); a later selection replaces them."""
    client = open_client(store)
    with staging() as folder:
        add_files(folder, files)
        client.log_artifacts(parent_run_id, str(folder))
    set_tags(client, parent_run_id, tags)


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
) -> RegisteredModel:
    """Log ``model`` (a ``torch.nn.Module``) with ``mlflow.pytorch.log_model`` in a new run of
    ``experiment``, register it as a new version of ``name`` and point ``alias`` at that version.

    The run is tagged ``kind=production`` (not a backtest, not a child of one). The signature is
    inferred from ``input_example`` and the model's output on it; the format is MLflow's default
    ``pt2`` (``torch.export``; loads back as a ``GraphModule``); pip requirements are given
    explicitly (inferring them costs seconds). ``version_tags`` are set on the new model version
    (``train_start``, ``train_end``, ``beats_baseline``, ...; read back with
    ``MlflowClient.get_model_version_by_alias(name, alias).tags``).
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
    run_tags = {**source_tags({}), **plain_tags(tags), "kind": "production"}
    with open_run(client, experiment_id, run_name, run_tags) as run_id:
        log_batch(client, run_id, params=flatten(dict(params)))
        with _fluent(store):  # the registry resolves a models:/ source through the global URIs too
            with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
                info = mlflow.pytorch.log_model(model, name="model", signature=signature, input_example=example,
                                                pip_requirements=requirements)
            version = _new_version(client, name, info.model_uri, run_id, info.model_id)
        for key, value in plain_tags(version_tags or {}).items():
            client.set_model_version_tag(name, version, key, value)
        client.set_registered_model_alias(name, alias, version)
    return RegisteredModel(name, version, alias, run_id, info.model_uri)


def _new_version(client: MlflowClient, name: str, source: str, run_id: str, model_id: str | None) -> str:
    """Register ``source`` as a new version of ``name`` (created on first use) through the client,
    which, unlike the fluent ``register_model``, prints nothing."""
    try:
        try:
            client.get_registered_model(name)
        except MlflowException:
            client.create_registered_model(name)
        return str(client.create_model_version(name, source, run_id=run_id, model_id=model_id).version)
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
