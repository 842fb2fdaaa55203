"""The ``harness`` command line: one module per group of commands, rendering in :mod:`.render`.

Every user mistake (:class:`~harness.errors.HarnessError`) becomes one line on stderr and exit
status 2, without a traceback. Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys
import threading

from harness.cli import backtest, select, tools, ui
from harness.errors import HarnessError


def main(argv: list[str] | None = None) -> int:
    _quiet_logging()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    try:
        return int(args.handler(args) or 0)
    except HarnessError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The ``harness`` executable (and ``python -m harness``): :func:`main`, then :func:`fast_exit`."""
    fast_exit(main())


def fast_exit(code: int) -> None:
    """End the process with ``code`` as a normal exit would, without tearing down every module.

    Threads that are not daemons are joined (thread pools first told to stop), the exit handlers
    run (the side process stopped, temporary folders removed, MLflow's and Ray's own handlers),
    stdout and stderr are flushed; then the interpreter leaves at once instead of freeing torch's
    and MLflow's module graph one object at a time (~1 s of every command's wall time here).
    """
    shutdown = getattr(threading, "_shutdown", None)  # CPython's exit step: pools told to stop, threads joined
    if shutdown is not None:
        shutdown()
    else:
        for thread in threading.enumerate():
            if thread is not threading.main_thread() and not thread.daemon:
                thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be written anyway
            pass
    os._exit(code)


def _quiet_logging() -> None:
    """Warnings (data repairs, short purge) as one ``harness: warning:`` line each; MLflow's INFO chatter off."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.basicConfig(level=logging.WARNING, format="harness: %(levelname)s: %(message)s")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Walk-forward backtests of learning-rate decay schedules for neural financial models.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    backtest.add_parsers(commands)
    tools.add_parsers(commands)
    select.add_parsers(commands)
    ui.add_parsers(commands)
    return parser


__all__ = ["build_parser", "fast_exit", "main", "run"]
