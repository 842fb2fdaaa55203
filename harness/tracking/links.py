"""Deep links into the MLflow UI: the comparison of a backtest's schedule runs (``harness ui``).

MLflow 3.17's UI routes with a hash router; its compare-runs page is
``<base>/#/compare-runs?runs=[<run ids>]&experiments=[<experiment id>]`` (the UI's own
``getCompareRunPageRoute`` writes the lists as JSON), and the query parameter
``workflowType=machine_learning`` selects the *Model training* side of the UI instead of the GenAI
one a fresh browser gets by default.
"""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.entities import Run, ViewType
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from harness.errors import HarnessError
from harness.tracking.batch import search
from harness.tracking.runs import _RUN_ID, _parent_run
from harness.tracking.store import deleted_message, open_client
from harness.tracking.values import Comparison, Store

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
_FINISHED_BACKTEST = "tags.kind = 'backtest' and attributes.status = 'FINISHED'"


def ui_base(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> str:
    """``http://host:port`` for a UI bound to ``host``; a wildcard address is opened as localhost."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def find_comparison(store: Store, experiment_or_run_id: str | None = None) -> Comparison:
    """The newest finished backtest of an experiment (or a backtest's parent run id; None: the
    newest finished backtest in the whole store) and its schedule runs."""
    client = open_client(store)
    if experiment_or_run_id is None:
        parent = _newest_backtest(client, store)
    else:
        if not _RUN_ID.match(experiment_or_run_id):
            experiment = client.get_experiment_by_name(experiment_or_run_id)
            if experiment is not None and experiment.lifecycle_stage == "deleted":
                raise HarnessError(deleted_message(store, experiment_or_run_id, experiment.experiment_id))
        parent = _parent_run(client, store, experiment_or_run_id)
    experiment_id, parent_id = parent.info.experiment_id, parent.info.run_id
    children = search(client, experiment_id, f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_id}' and tags.kind = 'schedule'")
    if not children:
        raise HarnessError(f"backtest run {parent_id} has no schedule runs; run `harness run --rerun` to log it again")
    children.sort(key=lambda run: int(run.data.tags.get("schedule_index", 0)))
    return Comparison(
        experiment=client.get_experiment(experiment_id).name,
        experiment_id=experiment_id,
        parent_run_id=parent_id,
        run_ids=tuple(run.info.run_id for run in children),
        schedules=tuple(run.data.tags.get("schedule", run.info.run_name) for run in children),
    )


def compare_link(store: Store, experiment: str | None = None, host: str = DEFAULT_HOST,
                 port: int = DEFAULT_PORT) -> str:
    """The URL of the UI (served at ``host:port``) comparing the schedule runs of ``experiment``'s
    newest finished backtest (a parent run id works too; None: the store's newest backtest)."""
    return find_comparison(store, experiment).url(ui_base(host, port))


def _newest_backtest(client: MlflowClient, store: Store) -> Run:
    ids, token = [], None
    while True:
        page = client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token)
        ids += [experiment.experiment_id for experiment in page]
        token = page.token
        if not token:
            break
    runs = []
    for start in range(0, len(ids), 100):  # the store caps the experiments of one search
        runs += client.search_runs(ids[start:start + 100], _FINISHED_BACKTEST, ViewType.ACTIVE_ONLY, 1,
                                   ["attributes.start_time DESC"])
    if not runs:
        raise HarnessError(f"no finished backtest in {store.tracking_uri}; run `harness run` first "
                           "or choose the store with --tracking-uri")
    return max(runs, key=lambda run: run.info.start_time)
