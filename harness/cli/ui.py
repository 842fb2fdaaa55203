"""``harness ui``: the MLflow UI on the store, opened on the comparison of a backtest's schedule runs.

MLflow 3.17 opens an experiment in its GenAI layout and shows nested runs only under their
collapsed parent; the link printed here opens the *Model training* view (``workflowType``) on the
compare-runs page of the newest finished backtest's schedule runs. The UI is ``mlflow ui`` in the
foreground, with ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` (no job-execution workers: the
README's low-memory setting), until Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from typing import Any

from harness import provenance
from harness.errors import HarnessError

LOW_MEMORY_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def add_parsers(commands: Any) -> None:
    ui = commands.add_parser(
        "ui",
        help="start the MLflow UI on the store and print the link to the comparison of a backtest's schedules",
        description="Print a link to the MLflow UI's comparison of the schedule runs of the newest finished "
        "backtest (of EXPERIMENT, else of the whole store), in the UI's 'Model training' view, then serve "
        "the UI (mlflow ui, without its job-execution workers) in the foreground until Ctrl-C.",
    )
    ui.add_argument("experiment", nargs="?", metavar="EXPERIMENT",
                    help="experiment name (its newest finished backtest) or a backtest's parent run id; "
                    "default: the newest finished backtest in the store")
    ui.add_argument("--tracking-uri",
                    help="MLflow store (a folder or URI); default $MLFLOW_TRACKING_URI, else ./mlruns")
    ui.add_argument("--host", help="interface the UI listens on (default 127.0.0.1: this machine only)")
    ui.add_argument("--port", type=int, help="port of the UI (default 5000)")
    ui.set_defaults(handler=_cmd_ui)


def _cmd_ui(args: argparse.Namespace) -> int:
    from harness import tracking

    host = args.host or tracking.DEFAULT_HOST
    port = tracking.DEFAULT_PORT if args.port is None else args.port
    if not 0 < port < 65536:
        raise HarnessError(f"--port: must be between 1 and 65535, got {port}")
    store = tracking.resolve_store(args.tracking_uri, create=False)
    tracking.check_server(store)
    comparison = tracking.find_comparison(store, args.experiment)
    head = (f"{comparison.experiment}: backtest {comparison.parent_run_id}, {len(comparison.run_ids)} schedule runs "
            f"({', '.join(comparison.schedules)})")
    if store.tracking_uri.startswith(("http://", "https://")):  # the tracking server is the UI
        print(head)
        print(f"open the comparison: {comparison.url(store.tracking_uri)}")
        return 0
    tracking.ensure_experiment(store, comparison.experiment)  # tags an experiment logged before the tag existed
    _check_port(host, port)
    base = tracking.ui_base(host, port)
    print(head)
    print(f"open the comparison: {comparison.url(base)}")
    print(f"serving the MLflow UI of {store.tracking_uri} at {base} (it takes a few seconds to start; "
          "Ctrl-C stops it)", flush=True)
    return serve(ui_command(store.tracking_uri, host, port))


def ui_command(tracking_uri: str, host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
            "--host", host, "--port", str(port), "--workers", "1"]  # one worker: ~0.3 GB, not 4 x 0.3 GB


def serve(command: list[str]) -> int:
    """Run ``command`` (the UI) in the foreground until it ends (its status) or Ctrl-C / SIGTERM (0).

    It runs in its own process group, so stopping it stops the uvicorn workers it starts too.
    """
    process = subprocess.Popen(command, env={**os.environ, **LOW_MEMORY_ENV}, start_new_session=True)

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)  # `kill PID` stops the UI like Ctrl-C
    try:
        return process.wait()
    except KeyboardInterrupt:
        print("\nstopped the MLflow UI", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop(process)


def _stop(process: subprocess.Popen, grace: float = 15.0) -> None:
    """End the UI's process group: SIGTERM (uvicorn shuts down cleanly), SIGKILL after ``grace`` s."""
    if not hasattr(os, "killpg"):  # no process groups (Windows)
        process.terminate()
        process.wait(grace)
        return
    for sig, seconds in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            process.poll()
            return
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            process.poll()  # reap the group's leader
            if not _group_alive(process.pid):
                return
            time.sleep(0.1)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_port(host: str, port: int) -> None:
    """Fail in one line when ``host:port`` cannot be listened on (in use, or not this machine's)."""
    problem = provenance.can_listen(host, port)
    if problem is not None:
        raise HarnessError(f"cannot serve the UI on {host}:{port}: {problem}; choose another --port or --host "
                           "(e.g. 127.0.0.1), or stop what listens there")
