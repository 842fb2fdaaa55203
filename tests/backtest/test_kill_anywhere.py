"""Killed at any moment, nothing twice: `harness run` killed (SIGKILL, or Ctrl-C) right before each
of its writes to the MLflow store, then the same command again, ends as an uninterrupted run does:
one FINISHED run per schedule, one FINISHED parent with its selection, nothing RUNNING, and the same
metrics. Real subprocesses and stores.

The kill moments come from the test-only hook :mod:`harness.tracking.faults`: an uninterrupted run
lists its writes (``$HARNESS_TEST_WRITES``), then one fresh store per moment runs the command with
``$HARNESS_TEST_KILL_AT=N`` (the process kills itself right before its Nth write), then again
without it. The store changes only at writes, so "right before each write" covers every moment of
the run as the store sees it: training (before the checkpoint), each schedule run (created,
params and metrics, files, ended), the parent's files, the selection's files and tags, the end.

Each command is a process of its own, forked from a :class:`Zygotes` process that has imported
the harness once (``python -m harness`` would spend 3 s of CPU per process importing torch and
MLflow; 40-odd processes make that the bulk of the test on 2 cores). A child runs
``harness.cli.main(argv)`` with the command's environment, its own stdout and stderr, and exits
with its status, or dies of the signal, as ``python -m harness`` would.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.entities import ViewType

from harness import tracking
from harness.backtest import resume, run_and_log
from harness.config import parse_config
from tests.conftest import ROOT, small_config

EXPERIMENT = "kill-anywhere"
SCHEDULES = ["constant", "cosine(warmup=0.1)"]
STABLE_TAGS = ("kind", "schedule", "schedule_index", "strategy", "config_hash", "data_hash", "harness_version",
               "git_commit", "boundary")
SELECTION_TAGS = ("selected_schedule", "selection_rule", "selection_metric", "selection_alpha", "selection_mcs")


def _config(tmp: Path, store: Path) -> Path:
    """5 windows x 2 schedules x 2 seeds, 2 epochs: the training is short, the logging is all there."""
    raw = small_config(tmp, experiment=EXPERIMENT, training={"epochs": 2, "seeds": 2}, tracking={"uri": str(store)})
    path = store.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(raw))
    return path


class Done(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


class Zygotes:
    """Pre-imported processes that fork one child per ``harness`` command (module docstring).

    :meth:`run` is thread-safe: each call borrows one of ``size`` zygotes, so ``size`` commands run
    at once. A zygote imports before it forks and never opens a store, a thread or a connection."""

    def __init__(self, size: int = 2) -> None:
        env = {**os.environ, "HARNESS_OFFLINE": "1", "MLFLOW_LOGGING_LEVEL": "WARNING",
               "HARNESS_TEST_KILL_AT": "never"}  # the fault hook installs at import; each child sets its moment
        self.processes = [subprocess.Popen(
            [sys.executable, "-c", "from tests.backtest.test_kill_anywhere import zygote; zygote()"], cwd=ROOT,
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(size)]
        self.free: queue.Queue = queue.Queue()
        for process in self.processes:
            self.free.put(process)

    def run(self, *argv: str, timeout: float = 300, **env: str) -> Done:
        process = self.free.get(timeout=timeout)
        try:
            with tempfile.TemporaryDirectory() as folder:
                out, err = Path(folder) / "out", Path(folder) / "err"
                process.stdin.write(json.dumps({"argv": list(argv), "env": env, "stdout": str(out),
                                                "stderr": str(err)}) + "\n")
                process.stdin.flush()
                answer = process.stdout.readline()
                assert answer, "a zygote died"
                return Done(json.loads(answer)["returncode"], out.read_text(), err.read_text())
        finally:
            self.free.put(process)

    def close(self) -> None:
        for process in self.processes:
            process.stdin.close()
            process.wait(timeout=60)


def zygote() -> None:
    """The zygote's loop: one JSON request a line on stdin, one ``{"returncode": ...}`` line back."""
    import importlib

    import harness.cli

    for module in ("harness.backtest.run", "harness.evaluation.selection", "harness.figures", "harness.production",
                   "matplotlib.pyplot"):  # what a command imports on its way, imported once here
        importlib.import_module(module)

    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the child: the command's own environment and output, then exit with its status
            code = 1
            try:
                os.environ.update(request["env"])
                for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
                    os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
                code = harness.cli.main(request["argv"])
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
            except BaseException:  # noqa: BLE001 - the child must exit here, whatever happened
                traceback.print_exc()
            finally:
                atexit._run_exitfuncs()  # as the interpreter does on exit (the harness stops its side process there)
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)


@pytest.fixture(scope="module")
def zygotes():
    pool = Zygotes(2)  # two commands at a time: the machine's cores
    yield pool
    pool.close()


def _run(zygotes: Zygotes, config: Path, **env: str) -> Done:
    return zygotes.run("run", str(config), "--no-progress", **env)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """An empty store (the schema only, no experiment), copied for each moment: creating a schema costs seconds."""
    folder = tmp_path_factory.mktemp("template") / "mlruns"
    tracking.store.open_client(tracking.resolve_store(folder))
    return folder


@pytest.fixture(scope="module")
def reference(tmp_path_factory, template, zygotes):
    """The uninterrupted run, its writes listed, read back."""
    tmp = tmp_path_factory.mktemp("reference")
    store = tmp / "mlruns"
    shutil.copytree(template, store)
    writes = tmp / "writes.txt"
    done = _run(zygotes, _config(tmp, store), HARNESS_TEST_WRITES=str(writes))
    assert done.returncode == 0, done.stderr
    names = [line.split()[1] for line in writes.read_text().splitlines()]
    return {"store": store, "writes": names, **_read(store)}


def _position(writes: list[str], name: str, nth: int) -> int:
    """1-based index of the ``nth`` call of ``name`` (negative ``nth`` counts from the end)."""
    found = [i + 1 for i, write in enumerate(writes) if write == name]
    return found[nth - 1 if nth > 0 else nth]


def _scenario(zygotes: Zygotes, tmp: Path, template: Path, name: str, kills: list[str],
              kill_signal: str = "SIGKILL", env: dict[str, str] | None = None) -> dict:
    """A fresh store; the command killed at each of ``kills`` in turn (one process each), then run to
    the end; ``env`` for every command."""
    store = tmp / name / "mlruns"
    shutil.copytree(template, store)
    config = _config(tmp / name, store)
    stops = []
    for spec in kills:
        done = _run(zygotes, config, HARNESS_TEST_KILL_AT=spec, HARNESS_TEST_KILL_SIGNAL=kill_signal, **(env or {}))
        stops.append((spec, done.returncode, done.stderr))
    final = _run(zygotes, config, **(env or {}))
    return {"store": store, "stops": stops, "final": final}


def _read(store: Path) -> dict:
    """What the store holds of the experiment: every run (trashed ones too), the parent, its schedule runs
    with every metric's full history, and the backtest read back."""
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    everything = client.search_runs([experiment.experiment_id], "", ViewType.ALL, 1000)
    active = [run for run in everything if run.info.lifecycle_stage == "active"]
    parents = [run for run in active if run.data.tags.get("kind") == "backtest"]
    children = [run for run in active if run.data.tags.get("kind") == "schedule"]
    histories = {}
    for run in children:
        histories[run.data.tags["schedule"]] = {
            key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
            for key in run.data.metrics}
    parent = parents[0] if len(parents) == 1 else None
    artifacts = {info.path for info in client.list_artifacts(parent.info.run_id)} if parent else set()
    return {"everything": everything, "active": active, "parents": parents, "children": children,
            "histories": histories, "artifacts": artifacts,
            "backtest": tracking.load_backtest(tracking.resolve_store(store), EXPERIMENT) if parent else None}


def _check(result: dict, reference: dict, label: str) -> None:
    final = result["final"]
    assert final.returncode == 0, f"{label}: the rerun failed: {final.stderr}"
    got = _read(result["store"])
    assert [run.info.status for run in got["everything"] if run.info.status == "RUNNING"] == [], label
    assert len(got["parents"]) == 1, f"{label}: {len(got['parents'])} parent runs"
    parent = got["parents"][0]
    assert parent.info.status == "FINISHED", label
    children = got["children"]
    schedules = sorted(run.data.tags["schedule"] for run in children)
    assert schedules == SCHEDULES, f"{label}: schedule runs twice or missing: {schedules}"
    assert {run.info.status for run in children} == {"FINISHED"}, label
    assert {run.data.tags["mlflow.parentRunId"] for run in children} == {parent.info.run_id}, label
    assert len(got["active"]) == 1 + len(SCHEDULES), label
    want_parent, want_children = reference["parents"][0], {r.data.tags["schedule"]: r for r in reference["children"]}
    assert _params(parent) == _params(want_parent), f"{label}: the parent's params"
    for run in children:
        want = want_children[run.data.tags["schedule"]]
        assert _params(run) == _params(want), label
        assert {k: run.data.tags.get(k) for k in STABLE_TAGS} == {k: want.data.tags.get(k) for k in STABLE_TAGS}, label
    assert {k: parent.data.tags.get(k) for k in STABLE_TAGS} == {k: want_parent.data.tags.get(k) for k in STABLE_TAGS}
    # the selection, logged once and complete
    want = reference["parents"][0].data.tags
    selection = {key: parent.data.tags.get(key) for key in SELECTION_TAGS}
    assert selection == {key: want[key] for key in SELECTION_TAGS}, label
    assert {"selection.md", "summary.csv", "config.yaml"} <= got["artifacts"], label
    assert got["artifacts"] == reference["artifacts"], label
    # the numbers of the uninterrupted run, every metric's history (a value logged twice would show)
    assert got["histories"] == reference["histories"], f"{label}: metrics differ from the uninterrupted run"
    for name in ("predictions", "training", "metrics", "seed_mean_metrics", "aggregates"):
        pd.testing.assert_frame_equal(getattr(got["backtest"], name), getattr(reference["backtest"], name),
                                      check_exact=True, obj=f"{label}: {name}")


def _params(run) -> dict[str, str]:
    return {key: value for key, value in run.data.params.items() if key != "tracking.uri"}  # each its own store


def _both_at_once(zygotes: Zygotes, scenarios: dict[str, tuple[list[str], dict]], tmp: Path, template: Path,
                  kill_signal: str = "SIGKILL") -> dict:
    """Each scenario (name -> (kills, env)), as many at once as there are zygotes."""
    with ThreadPoolExecutor(max_workers=len(zygotes.processes)) as pool:
        futures = {name: pool.submit(_scenario, zygotes, tmp, template, name, kills, kill_signal, env)
                   for name, (kills, env) in scenarios.items()}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.slow
def test_killed_before_any_write_then_rerun_equals_an_uninterrupted_run(tmp_path, template, reference, zygotes):
    writes = reference["writes"]
    assert writes[-1] == "set_terminated" and len(writes) >= 12  # the parent ended FINISHED last
    # Every moment, with the side process making the store's writes (the fault hook there kills the run,
    # then itself) and without one (HARNESS_SIDE_PROCESS=0: the writes made in the run's own process)
    scenarios = {f"kill-{k:02d}-{writes[k - 1]}-{where}": ([str(k)], env) for k in range(1, len(writes) + 1)
                 for where, env in (("aside", {}), ("here", {"HARNESS_SIDE_PROCESS": "0"}))}
    # killed again while resuming: a resume of a resume
    scenarios["chain-child-files"] = ([str(_position(writes, "log_artifacts", 2)), "log_artifacts:1"], {})
    scenarios["chain-child-end"] = ([str(_position(writes, "set_terminated", 2)), "log_batch:1",
                                     "set_terminated:2"], {})
    scenarios["chain-end"] = ([str(len(writes)), "set_terminated:2"], {})
    results = _both_at_once(zygotes, scenarios, tmp_path, template)
    for name, result in results.items():
        for spec, code, err in result["stops"]:
            assert code == -signal.SIGKILL, f"{name}: not killed at {spec} (exit {code}): {err}"
        _check(result, reference, name)
    # the moments are spread over the whole run, logging and selection included
    assert {"log_batch", "log_artifacts", "create_run", "set_terminated"} <= set(writes)


@pytest.mark.slow
def test_ctrl_c_while_logging_or_selecting_exits_130_with_the_run_killed_and_the_rerun_completes(
        tmp_path, template, reference, zygotes):
    writes = reference["writes"]
    # the checkpoint is saved by the side process while the run goes on: its Ctrl-C comes at the run's next call
    moments = {"checkpoint": (_position(writes, "log_artifacts", 1), 0),
               "child-files": (_position(writes, "log_artifacts", 2), 5),
               "parent-files": (_position(writes, "log_artifacts", -2), 5),
               "selection-tags": (_position(writes, "log_batch", -1), 5), "finished": (len(writes), 5)}
    scenarios = {f"{name}-{where}": ([str(k)], env) for name, (k, _) in moments.items()
                 for where, env in (("aside", {}), ("here", {"HARNESS_SIDE_PROCESS": "0"}))}
    results = _both_at_once(zygotes, scenarios, tmp_path, template, "SIGINT")
    for name, result in results.items():
        ((spec, code, err),) = result["stops"]
        assert code == 130, f"{name}: Ctrl-C at write {spec} gave exit {code}: {err}"
        lines = err.strip().splitlines()
        saved = moments[name.rsplit("-", 1)[0]][1]
        expected = f"harness: interrupted: {saved} of 5 windows are saved in run "
        assert len(lines) == 1 and lines[0].startswith(expected), err
        _check(result, reference, name)
        assert not saved or "resumed run" in result["final"].stdout  # (nothing to resume from before the checkpoint)


# --- a Ctrl-C lost on the way is still honoured (in process) ------------------------------------


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the "Exception ignored" it makes
def test_a_ctrl_c_lost_inside_a_finalizer_is_raised_at_the_next_step():
    class Finalizer:
        def __del__(self):  # Python runs the handler here; the KeyboardInterrupt is "ignored" and lost
            signal.raise_signal(signal.SIGINT)

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with resume.interrupts():
        assert not resume.interrupted()
        Finalizer()  # collected at once: the interrupt is raised inside __del__ and swallowed
        assert resume.interrupted()
        with pytest.raises(KeyboardInterrupt):
            resume.check_interrupted()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert not resume.interrupted()


@pytest.mark.slow
def test_a_ctrl_c_swallowed_during_the_logging_still_ends_the_run_killed(tmp_path, monkeypatch):
    config = parse_config(small_config(tmp_path, training={"epochs": 1, "seeds": 1}))
    store = tracking.resolve_store(config.tracking.uri)
    logged = tracking.log_selection

    def swallowing(*args, **kwargs):  # a library that catches the KeyboardInterrupt and carries on
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            pass
        return logged(*args, **kwargs)

    monkeypatch.setenv("HARNESS_SIDE_PROCESS", "0")  # the store's calls made here, where the library is patched
    monkeypatch.setattr(tracking, "log_selection", swallowing)
    with resume.interrupts(), pytest.raises(KeyboardInterrupt, match="windows are saved in run"):
        run_and_log(config, progress=False)
    runs = tracking.find_runs(store, config.experiment)
    assert list(runs.loc[runs["tags.kind"] == "backtest", "status"]) == ["KILLED"]
    assert set(runs.loc[runs["tags.kind"] == "schedule", "status"]) == {"FINISHED"}
    monkeypatch.setattr(tracking, "log_selection", logged)
    outcome = run_and_log(config, progress=False)  # resumed: the schedule runs kept, the selection logged
    runs = tracking.find_runs(store, config.experiment)
    assert set(runs["status"]) == {"FINISHED"} and len(runs) == 3
    assert outcome.selection is not None
    assert runs.loc[runs["tags.kind"] == "backtest", "tags.selected_schedule"].item() == outcome.selection.selected
