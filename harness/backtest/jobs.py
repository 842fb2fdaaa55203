"""The side process's jobs (:mod:`harness.backtest.aside`): a backtest's figures and selection, the
forked copies that make them, the drawer, and the frames on the pipes.

- The work, wherever it runs: :func:`draw_backtest`, :func:`select_here`, :func:`draw_selection`
  (:mod:`harness.backtest.sidecar` calls them in the run's own process when no side process runs).
- A job (:func:`start_job`): the figures, every other PNG written by a forked copy
  (:func:`~harness.figures.common.shared_pngs`), while another copy makes the selection.
- The drawer (:class:`Drawer`): a copy of the side process forked as soon as MLflow is imported.
  It imports the drawing and the statistics (:data:`WARM_UP`) at once, beside the run's torch
  import and first calls, and then does the jobs, so a short run does not wait for those imports
  after its training. Where it is gone (died, or fork is missing), the side process does the
  job itself. It dies with the side process.
- The frames: a length-prefixed pickle per message (:func:`write_frame`, :func:`read_frame`).
"""

from __future__ import annotations

import functools
import os
import pickle
import signal
import struct
import sys
import threading
from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import Any


class SideProcessError(RuntimeError):
    """The side process could not do a job (it died, or could not read the backtest)."""


# --- the work, wherever it runs ------------------------------------------------------------------


def draw_backtest(backtest: Any, folder: str | Path) -> tuple[dict[str, Path], dict[str, dict[str, Path]]]:
    """A backtest's figures for its runs, as :func:`harness.tracking.finish_backtest` takes them:
    :func:`harness.figures.backtest_figures` and the validation-loss curves
    (:func:`harness.figures.curves.curve_figures`) beside them."""
    from harness.figures import backtest_figures
    from harness.figures.curves import curve_figures

    parent_files, schedule_files = backtest_figures(backtest, folder)  # equity.png too, with a trading view
    parent, per_candidate = curve_figures(backtest, folder)  # training_curve(s).png
    parent_files.update(parent)
    for label, files in per_candidate.items():
        schedule_files.setdefault(label, {}).update(files)
    return parent_files, schedule_files


def select_here(backtest: Any) -> Any:
    """The selection of ``backtest`` (:func:`harness.evaluation.selection.select`)."""
    from harness.evaluation.selection import select

    return select(backtest)


def draw_selection(report: Any, folder: str | Path) -> dict[str, Path]:
    """The selection's report and figures (:func:`harness.figures.selection_figures`)."""
    from harness.figures import selection_figures

    return selection_figures(report, folder)


# What a job needs: the backtest's classes, matplotlib, the figures, the statistics, arch's bootstrap
# (the confidence set's).
WARM_UP = ("harness.backtest.result", "matplotlib.figure", "matplotlib.backends.backend_agg", "harness.figures",
           "harness.figures.curves", "harness.evaluation.selection", "arch.bootstrap")


def import_quietly(name: str) -> None:
    try:
        import_module(name)
    except ImportError:  # arch is optional; anything else fails again, and says why, where it is used
        pass


# --- a job ---------------------------------------------------------------------------------------


def start_job(message: tuple) -> tuple[Any, tuple, Callable[[], Any]]:
    """Do the job ``("job", backtest, figures_folder, selection_folder)``: returns the backtest (None
    if unreadable), the figures' reply (``("figures", files)`` or ``("error", why)``) once they are
    drawn, and the call that waits for the selection (``(report, files)``; ``(None, HarnessError)``
    when it cannot be made; ``(None, SideProcessError)`` when its copy failed)."""
    _, data, figures_folder, selection_folder = message
    try:
        backtest = pickle.loads(data)
    except Exception as exc:  # noqa: BLE001 - e.g. a strategy class this interpreter cannot import
        failed = (None, SideProcessError("no selection: the backtest could not be read"))
        return None, ("error", f"cannot read the backtest: {type(exc).__name__}: {exc}"), lambda: failed
    selection = _forked(functools.partial(_selection, backtest, selection_folder))
    try:
        figures: tuple = ("figures", _figures(backtest, figures_folder))
    except SideProcessError:
        raise
    except Exception as exc:  # noqa: BLE001 - drawn again in the run's process, which raises it there
        figures = ("error", f"drawing failed: {type(exc).__name__}: {exc}")
    return backtest, figures, selection


def _figures(backtest: Any, folder: str) -> tuple[dict[str, Path], dict[str, dict[str, Path]]]:
    """:func:`draw_backtest`, every other PNG written by a forked copy (:func:`shared_pngs`); all
    drawn here when the copy fails."""
    from harness.figures.common import shared_pngs

    def other_half() -> Any:
        with shared_pngs(1, 2):
            return draw_backtest(backtest, folder)

    theirs = _forked(other_half)
    with shared_pngs(0, 2):
        files = draw_backtest(backtest, folder)
    if theirs() != files:  # the copy failed: its PNGs are drawn here
        files = draw_backtest(backtest, folder)
    return files


def _selection(backtest: Any, folder: str) -> tuple[Any, Any]:
    """The selection of ``backtest`` and its figures in ``folder``, or (None, its HarnessError)."""
    from harness.errors import HarnessError

    try:
        report = select_here(backtest)
    except HarnessError as exc:
        return None, exc
    return report, draw_selection(report, folder)


def _forked(make: Callable[[], Any]) -> Callable[[], Any]:
    """Start ``make()`` in a forked copy of this process; returns the call that waits for its result
    (``(None, SideProcessError)`` when the copy failed or died). Without fork, ``make`` itself."""
    if not hasattr(os, "fork"):
        return make
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the copy: make it, send it, leave without running any exit handler
        os.close(read_end)
        code = 0
        try:
            with os.fdopen(write_end, "wb") as out:
                try:
                    result = make()
                except Exception as exc:  # noqa: BLE001
                    result = (None, SideProcessError(f"the side process's copy failed: {type(exc).__name__}: {exc}"))
                out.write(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
        except BaseException:  # noqa: BLE001
            code = 1
        os._exit(code)
    os.close(write_end)

    def wait() -> Any:
        with os.fdopen(read_end, "rb") as stream:
            data = stream.read()
        os.waitpid(pid, 0)
        try:
            return pickle.loads(data)
        except Exception:  # noqa: BLE001 - the copy died
            return None, SideProcessError("the side process's copy ended without a result")

    return wait


# --- the drawer ----------------------------------------------------------------------------------


class Drawer:
    """The drawer, seen from the side process that forks it (see the module's text); ``close``: the
    side process's file descriptors the drawer must not hold (its pipes to the run)."""

    def __init__(self, close: list[int]) -> None:
        jobs_read, jobs_write = os.pipe()
        results_read, results_write = os.pipe()
        side = os.getpid()
        self.pid = os.fork()
        if self.pid == 0:
            code = 0
            try:
                for fd in [*close, jobs_write, results_read]:
                    os.close(fd)
                _draw_jobs(side, jobs_read, results_write)
            except BaseException:  # noqa: BLE001 - the side process does the job itself
                code = 1
            os._exit(code)
        os.close(jobs_read)
        os.close(results_write)
        self.jobs, self.results = os.fdopen(jobs_write, "wb"), os.fdopen(results_read, "rb")

    def stop(self) -> None:
        """End the drawer, idle or in a job (an interrupted run's), and reap it."""
        for stream in (self.jobs, self.results):
            try:
                stream.close()
            except OSError:
                pass
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass

    def send(self, message: tuple) -> bool:
        """Hand a job over; False when the drawer is gone."""
        try:
            write_frame(self.jobs, message)
        except SideProcessError:
            return False
        return True

    def figures(self) -> tuple | None:
        """The job's figures' reply, as :func:`start_job` gives it; None when the drawer died first."""
        return read_frame(self.results)

    def selection(self) -> Any:
        """The job's selection, as :func:`start_job`'s last call gives it."""
        reply = read_frame(self.results)
        return reply if reply is not None else (None, SideProcessError("the drawer ended without a selection"))


def _draw_jobs(side: int, jobs_fd: int, results_fd: int) -> None:
    """The drawer's life: die with the side process, import :data:`WARM_UP`, do the jobs."""
    _die_with(side)
    for name in WARM_UP:  # at once: beside the run's torch import and the store's opening
        import_quietly(name)
    with os.fdopen(jobs_fd, "rb") as jobs, os.fdopen(results_fd, "wb") as results:
        while (message := read_frame(jobs)) is not None:
            _, figures, selection = start_job(message)
            write_frame(results, figures)
            write_frame(results, selection())


def _die_with(parent: int) -> None:
    """Be killed when ``parent`` ends (Linux), so no drawer outlives a killed side process."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # it ended before that took hold
        os._exit(0)


# --- the frames on the pipes ---------------------------------------------------------------------


def write_frame(stream: Any, message: Any) -> None:
    """One message: its length (8 bytes) and its pickle."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    try:
        stream.write(struct.pack("<Q", len(data)) + data)
        stream.flush()
    except (BrokenPipeError, OSError, ValueError) as exc:
        raise SideProcessError(f"cannot reach the side process ({exc})") from None


def read_frame(stream: Any) -> Any | None:
    """The next message, or None at the end of the stream."""
    try:
        head = _read_exactly(stream, 8)
        if head is None:
            return None
        body = _read_exactly(stream, struct.unpack("<Q", head)[0])
    except (OSError, ValueError):
        return None
    return None if body is None else pickle.loads(body)


def _read_exactly(stream: Any, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class Replies:
    """The reply pipe, shared by the serving thread and the one that waits for a selection."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.lock = stream, threading.Lock()

    def send(self, message: Any) -> None:
        with self.lock:
            write_frame(self.stream, message)
