"""`harness select --register` killed at any moment of the registration leaves no alias pointing at
a half-written version, and the same command again registers a complete one and cleans what the
kill left. Real processes (forked from the kill-anywhere test's zygotes) killed right before a
chosen write to the store (:mod:`harness.tracking.faults`), one real store read back.

The kills follow one another in the same store, each process killed at the next moment, so each
also cleans up after the one before: the model logged half way, the model logged but no version,
the version created (and checked) but its run still RUNNING, the run FINISHED but the alias not yet
moved, the alias moved but the selection not yet logged; and a Ctrl-C right before the alias moves.
"""

from __future__ import annotations

import signal

import numpy as np
import pytest
import torch
import yaml
from mlflow import MlflowClient
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException

from harness import tracking
from tests.backtest.test_kill_anywhere import Zygotes
from tests.conftest import small_config

EXPERIMENT = "select-kill"
NAME = "kill-model"

# (the write the process dies right before, whether the alias has moved by then)
KILLS = [
    ("log_model_artifacts:1", False),     # the model's files half logged
    ("create_model_version:1", False),    # the model logged, no version yet
    ("set_terminated:1", False),          # the version created and checked, its run still RUNNING
    ("set_registered_model_alias:1", False),  # the run FINISHED, the alias not moved
    ("log_artifacts:1", True),            # the alias moved, the selection not logged yet
]


@pytest.fixture(scope="module")
def zygotes():
    pool = Zygotes(1)  # one at a time: the kills follow one another in one store
    yield pool
    pool.close()


def _champion(client: MlflowClient) -> str | None:
    try:
        return str(client.get_model_version_by_alias(NAME, "champion").version)
    except MlflowException:
        return None


def _versions(client: MlflowClient) -> dict[str, str]:
    """Every version of the model -> the status of the run that logged it."""
    versions = client.search_model_versions(f"name = '{NAME}'")
    return {str(v.version): client.get_run(v.run_id).info.status for v in versions}


@pytest.mark.slow
def test_a_kill_anywhere_in_the_registration_leaves_the_alias_on_a_complete_version(tmp_path, zygotes):
    store = tmp_path / "mlruns"
    raw = small_config(tmp_path, experiment=EXPERIMENT, training={"epochs": 2, "seeds": 2},
                       tracking={"uri": str(store)})
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(raw))
    env = {"MLFLOW_TRACKING_URI": str(store)}
    done = zygotes.run("run", str(config), "--no-progress", **env)
    assert done.returncode == 0, done.stderr
    select = ("select", EXPERIMENT, "--register", NAME, "--force")
    done = zygotes.run(*select, **env)
    assert done.returncode == 0, done.stderr
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    assert _champion(client) == "1"

    champion = "1"
    for spec, moved in KILLS:
        done = zygotes.run(*select, HARNESS_TEST_KILL_AT=spec, **env)
        assert done.returncode == -signal.SIGKILL, f"not killed at {spec}: {done.stderr}"
        newest = max(int(v) for v in _versions(client))
        if moved:
            champion = str(newest)
        assert _champion(client) == champion, f"killed at {spec}"
        # the alias only ever points at a version whose run finished (logged, registered and checked)
        assert _versions(client)[champion] == "FINISHED", f"killed at {spec}"

    # Ctrl-C right before the alias moves: exit 130, the alias where it was, the new version trashed
    done = zygotes.run(*select, HARNESS_TEST_KILL_AT="set_registered_model_alias:1",
                       HARNESS_TEST_KILL_SIGNAL="SIGINT", **env)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "harness: interrupted", done.stderr
    assert _champion(client) == champion
    assert set(_versions(client).values()) <= {"FINISHED", "RUNNING"}  # the killed ones' are cleaned next time

    # The same command again: a new complete version under the alias; what the kills left is cleaned
    done = zygotes.run(*select, **env)
    assert done.returncode == 0, done.stderr
    versions = _versions(client)
    champion = str(max(int(v) for v in versions))
    assert _champion(client) == champion and f"version {champion}, alias `champion`" in done.stdout
    assert set(versions.values()) == {"FINISHED"}, versions  # no half-written version stays
    everything = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id], "", ViewType.ALL)
    assert "RUNNING" not in {run.info.status for run in everything}
    # killed before the alias moved: trashed (a kill after the run FINISHED leaves a complete version, kept)
    kept_unaliased = [spec for spec, moved in KILLS if spec == "set_registered_model_alias:1"]
    assert len(versions) == 1 + len(kept_unaliased) + sum(moved for _, moved in KILLS) + 1

    # the champion is the whole thing: tagged at creation, and it loads and predicts
    production = client.get_model_version_by_alias(NAME, "champion")
    backtest = tracking.load_backtest(tracking.resolve_store(store), EXPERIMENT)
    assert production.tags["source_backtest"] == backtest.run_id
    assert production.tags["beats_baseline"] in {"true", "false"}
    model = tracking.load_registered_model(tracking.resolve_store(store), NAME)
    with torch.no_grad():
        assert np.isfinite(model(torch.as_tensor(backtest_features(backtest))).numpy()).all()


def backtest_features(backtest) -> np.ndarray:
    """A few rows of model inputs in the shape the production model takes (features of the strategy table)."""
    from harness.backtest.planning import plan

    return plan(backtest.config).table.X.to_numpy(np.float64)[-3:]
