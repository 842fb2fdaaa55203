"""The store and the experiment: the experiment kind tag the MLflow UI reads, read back from a real
SQLite store; a reader (``create=False``) creates nothing."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from harness import tracking
from harness.errors import HarnessError

KIND = "mlflow.experimentKind"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One real SQLite store for the module (a new schema takes seconds); each test its own experiment."""
    return tracking.resolve_store(tmp_path_factory.mktemp("store") / "mlruns")


def test_a_new_experiment_is_tagged_custom_model_development(store):
    experiment_id = tracking.ensure_experiment(store, "kind-new")
    found = MlflowClient(store.tracking_uri).get_experiment_by_name("kind-new")
    assert found.experiment_id == experiment_id
    assert found.tags[KIND] == "custom_model_development"


def test_an_existing_experiment_without_the_tag_gets_it_and_keeps_its_id(store):
    tracking.ensure_experiment(store, "other")  # creates the schema under the harness's lock
    client = MlflowClient(store.tracking_uri)
    experiment_id = client.create_experiment("kind-old")  # as the harness made them before the tag
    assert KIND not in client.get_experiment_by_name("kind-old").tags
    assert tracking.ensure_experiment(store, "kind-old") == experiment_id
    assert MlflowClient(store.tracking_uri).get_experiment_by_name("kind-old").tags[KIND] == "custom_model_development"


def test_a_kind_the_user_chose_is_kept(store):
    tracking.ensure_experiment(store, "other")
    client = MlflowClient(store.tracking_uri)
    client.create_experiment("kind-chosen", tags={KIND: "genai_development"})
    tracking.ensure_experiment(store, "kind-chosen")
    assert MlflowClient(store.tracking_uri).get_experiment_by_name("kind-chosen").tags[KIND] == "genai_development"


def test_a_reader_of_a_missing_store_gets_one_line_and_nothing_is_created(tmp_path):
    folder = tmp_path / "nowhere"
    with pytest.raises(HarnessError, match="no tracking store at .*nowhere: mlflow.db does not exist") as caught:
        tracking.resolve_store(folder, create=False)
    assert "\n" not in str(caught.value)
    assert not folder.exists()
    with pytest.raises(HarnessError, match="does not exist"):
        tracking.resolve_store(f"sqlite:///{folder}/x.db", create=False)
    assert not folder.exists()
