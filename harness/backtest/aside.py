"""The side process of ``harness run`` (``python -m harness.backtest.aside``): its MLflow store,
its figures and its selection, beside the process that trains (:mod:`harness.backtest.sidecar`).

Started before the run reads its configs and imports torch, it imports MLflow and opens the store
meanwhile, then the drawing and the statistics while the run trains, between its calls. It serves,
one message at a time:

- ``("open", tracking_uri)``: open the run's store (``""``: the default one) before the run asks;
- ``("call", seq, name, args, kwargs, deferred)``: ``harness.tracking.<name>(*args, **kwargs)``,
  answered ``("return", seq, value)``, ``("raise", seq, exception)``, or ``("fault", seq, signal)`` where the
  test-only fault hook (:mod:`harness.tracking.faults`) reached a kill moment of a signal other than
  SIGKILL: the call unwound as under Ctrl-C and the run raises that signal itself, as it would if
  it made the write (at a SIGKILL moment the hook kills the run, then this process); the run did
  not wait for a ``deferred`` call, so those sent after one that met a kill moment are answered
  ``("skipped", seq, None)``, not made;
- ``("warm",)``: the run starts training: import what the jobs need, between calls;
- ``("job", backtest, figures_folder, selection_folder)``: the backtest's figures (every other
  PNG written by a forked copy), answered ``("figures", files)`` (or ``("error", why)``), while
  another forked copy makes the selection and its figures, answered ``("selection", (report,
  files))`` when done (calls are served meanwhile).

Where one may run at all is :func:`enabled`'s to say (``HARNESS_SIDE_PROCESS``, the cores, the load).
It ignores Ctrl-C (the run decides) and ends when the run closes the pipe, exits or dies; a call
in flight then completes, no later one is made.
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import select
import signal
import struct
import sys
import threading
from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import Any

JOB_BACKTEST = "<the job's backtest>"  # in a call's arguments: the backtest of the job sent before


ENV = "HARNESS_SIDE_PROCESS"  # "0": no side process; "1": one whatever the load
_OFF = ("0", "false", "no", "off")


class SideProcessError(RuntimeError):
    """The side process could not do a job (it died, or could not read the backtest)."""


def _setting() -> str:
    return os.environ.get(ENV, "").strip().lower()


def switched_off() -> bool:
    """Whether ``HARNESS_SIDE_PROCESS`` says no side process."""
    return _setting() in _OFF


def enabled() -> bool:
    """Whether a side process may run: not switched off (:func:`switched_off`; ``=1`` forces
    it), and a core to run on: at least two, not all busy already (the last minute's load average
    below the cores; on a saturated machine a side process only takes CPU from the others)."""
    if switched_off():
        return False
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    if cores < 2:
        return False
    if _setting() in ("1", "true", "yes", "on"):
        return True
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return True
    return load < cores


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


# --- the frames on the pipes ---------------------------------------------------------------------


def write_frame(stream: Any, message: Any) -> None:
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


# --- the side process itself ---------------------------------------------------------------------


class _Replies:
    """The reply pipe, shared by the serving thread and the one that waits for a selection."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.lock = stream, threading.Lock()

    def send(self, message: Any) -> None:
        with self.lock:
            write_frame(self.stream, message)


def _serve() -> int:
    """Serve until the pipe closes; a run gone without closing it (``kill -9``) ends this quietly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the run: it ends this by closing the pipe
    logging.basicConfig(level=logging.WARNING, format="harness: %(levelname)s: %(message)s")  # as the CLI's
    replies = _Replies(os.fdopen(os.dup(sys.stdout.fileno()), "wb"))
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints go to stderr, not into the frames
    requests = sys.stdin.buffer.raw  # unbuffered: a message waiting is one select() sees
    _import_tracking()
    warm_up: list[str] = []
    waiting: threading.Thread | None = None
    job_backtest: Any = None
    faulted = False  # a deferred call met a kill moment: the deferred ones after it are skipped
    try:
        while True:
            while warm_up and not select.select([requests], [], [], 0)[0]:
                _import(warm_up.pop(0))  # while the run trains; a call that comes waits for one import at most
            message = read_frame(requests)
            if message is None:
                return 0
            if message[0] == "call":
                deferred = message[5]
                if deferred and faulted:  # a kill moment came before it: it is not made
                    replies.send(("skipped", message[1], None))
                    continue
                reply = _call(message[:5], job_backtest)
                faulted = deferred and reply[0] == "fault"
                replies.send(reply)
                continue
            if message[0] == "open":
                _open_store(message[1])
                continue
            if message[0] == "warm":  # the run starts training
                warm_up = [name for name in WARM_UP if name not in sys.modules]
                continue
            while warm_up:
                _import(warm_up.pop(0))
            if waiting is not None:
                waiting.join()
            job_backtest, waiting = _job(message, replies)
    except SideProcessError:  # a broken pipe: nobody left to reply to
        return 0


def _call(message: tuple, job_backtest: Any) -> tuple:
    """One ``harness.tracking`` call; its reply."""
    from harness import tracking
    from harness.tracking import faults

    _, seq, name, args, kwargs = message
    args = tuple(job_backtest if _is_marker(arg) else arg for arg in args)
    kwargs = {key: job_backtest if _is_marker(value) else value for key, value in kwargs.items()}
    try:
        return "return", seq, getattr(tracking, name)(*args, **kwargs)
    except faults.Fault as fault:
        return "fault", seq, fault.signal
    except Exception as exc:  # noqa: BLE001 - raised again in the run
        return "raise", seq, _portable(exc)


def _is_marker(value: Any) -> bool:
    return isinstance(value, str) and value == JOB_BACKTEST


def _portable(exc: Exception) -> Exception:
    """``exc`` if it survives a pickle round trip (the run raises it as raised here), else its text."""
    try:
        return pickle.loads(pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _job(message: tuple, replies: _Replies) -> tuple[Any, threading.Thread | None]:
    """Draw a backtest's figures, half of them in a forked copy, while another makes its selection;
    returns the backtest and the thread that sends the selection when it is made."""
    _, data, figures_folder, selection_folder = message
    try:
        backtest = pickle.loads(data)
    except Exception as exc:  # noqa: BLE001 - e.g. a strategy class this interpreter cannot import
        replies.send(("error", f"cannot read the backtest: {type(exc).__name__}: {exc}"))
        return None, None
    selection = _forked(functools.partial(_selection, backtest, selection_folder))
    try:
        replies.send(("figures", _figures(backtest, figures_folder)))
    except SideProcessError:
        raise
    except Exception as exc:  # noqa: BLE001 - drawn again in the run's process, which raises it there
        replies.send(("error", f"drawing failed: {type(exc).__name__}: {exc}"))

    def send_selection() -> None:
        try:
            replies.send(("selection", selection()))
        except SideProcessError:
            pass

    waiting = threading.Thread(target=send_selection, name="harness-selection", daemon=True)
    waiting.start()
    return backtest, waiting


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


def _import_tracking() -> None:
    """MLflow and the tracking modules the run's first calls need, imported while it imports torch."""
    from harness import tracking
    from harness.tracking import faults

    faults.redirect(os.getppid())  # a kill moment reached here is the run's
    tracking.end_run  # noqa: B018 - imports the runs module (and the store's, MLflow's)


def _open_store(tracking_uri: str) -> None:
    """Open the run's local store (``""``: the default one; its schema copied in) before the run
    asks for it; a store that cannot be opened is left for the run's own call, which says why."""
    from harness.errors import HarnessError
    from harness.tracking import store

    try:
        location = store.resolve_store(tracking_uri or None)
        if location.database is not None:  # a local SQLite file; a server is checked by the run first
            store.open_client(location)
    except (HarnessError, OSError):
        pass


# What a job needs, imported while the run trains, between its calls: the backtest's classes, matplotlib,
# the figures, the statistics, arch's bootstrap (the confidence set's).
WARM_UP = ("harness.backtest.result", "matplotlib.figure", "matplotlib.backends.backend_agg", "harness.figures",
           "harness.figures.curves", "harness.evaluation.selection", "arch.bootstrap")


def _import(name: str) -> None:
    try:
        import_module(name)
    except ImportError:  # arch is optional; anything else fails again, and says why, where it is used
        pass


if __name__ == "__main__":
    from harness.cli import fast_exit  # no module teardown: the run waits for this exit

    fast_exit(_serve())
