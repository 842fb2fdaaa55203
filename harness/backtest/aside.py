"""The side process of ``harness run`` (``python -m harness.backtest.aside``): its MLflow store,
its figures and its selection, beside the process that trains (:mod:`harness.backtest.sidecar`).

Started before the run reads its configs and imports torch, it imports MLflow and opens the store
meanwhile. Once MLflow is imported it forks the drawer (:class:`~harness.backtest.jobs.Drawer`),
which imports the drawing and the statistics at once and does the jobs; without one, this process
imports them while the run trains, between its calls, and does the jobs itself. It serves, one
message at a time:

- ``("open", tracking_uri)``: open the run's store (``""``: the default one) before the run asks;
- ``("call", seq, name, args, kwargs, deferred)``: ``harness.tracking.<name>(*args, **kwargs)``,
  answered ``("return", seq, value)``, ``("raise", seq, exception)``, or ``("fault", seq, signal)`` where the
  test-only fault hook (:mod:`harness.tracking.faults`) reached a kill moment of a signal other than
  SIGKILL: the call unwound as under Ctrl-C and the run raises that signal itself, as it would if
  it made the write (at a SIGKILL moment the hook kills the run, then this process); the run did
  not wait for a ``deferred`` call, so those sent after one that met a kill moment are answered
  ``("skipped", seq, None)``, not made;
- ``("warm",)``: the run starts training: import what the jobs need (the backtest's classes only,
  when the drawer does the rest), between calls;
- ``("job", backtest, figures_folder, selection_folder)``: the backtest's figures (every other
  PNG written by a forked copy), answered ``("figures", files)`` (or ``("error", why)``), while
  another forked copy makes the selection and its figures, answered ``("selection", (report,
  files))`` when done (calls are served meanwhile); by the drawer, else here (it died: the job
  is made here, and so are the later ones).

Where one may run at all is :func:`enabled`'s to say (``HARNESS_SIDE_PROCESS``, the cores, the load).
It ignores Ctrl-C (the run decides) and ends when the run closes the pipe, exits or dies; a call
in flight then completes, no later one is made.
"""

from __future__ import annotations

import logging
import os
import pickle
import select
import signal
import sys
import threading
from typing import Any

from harness.backtest.jobs import (
    WARM_UP,
    Drawer,
    Replies,
    SideProcessError,
    import_quietly,
    read_frame,
    start_job,
)

JOB_BACKTEST = "<the job's backtest>"  # in a call's arguments: the backtest of the job sent before


ENV = "HARNESS_SIDE_PROCESS"  # "0": no side process; "1": one whatever the load
_OFF = ("0", "false", "no", "off")


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


# --- the side process itself ---------------------------------------------------------------------


def _serve() -> int:
    """Serve until the pipe closes; a run gone without closing it (``kill -9``) ends this quietly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the run: it ends this by closing the pipe
    logging.basicConfig(level=logging.WARNING, format="harness: %(levelname)s: %(message)s")  # as the CLI's
    replies = Replies(os.fdopen(os.dup(sys.stdout.fileno()), "wb"))
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints go to stderr, not into the frames
    requests = sys.stdin.buffer.raw  # unbuffered: a message waiting is one select() sees
    _import_tracking()
    drawer = _start_drawer([requests.fileno(), replies.stream.fileno()])
    warm_up: list[str] = []
    waiting: threading.Thread | None = None
    job_backtest: Any = None
    faulted = False  # a deferred call met a kill moment: the deferred ones after it are skipped
    try:
        while True:
            while warm_up and not select.select([requests], [], [], 0)[0]:
                import_quietly(warm_up.pop(0))  # while the run trains; a call waits for one import at most
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
            if message[0] == "warm":  # the run starts training; a drawer imports the rest itself
                warm_up = [name for name in (WARM_UP[:1] if drawer else WARM_UP) if name not in sys.modules]
                continue
            while warm_up:
                import_quietly(warm_up.pop(0))
            if waiting is not None:
                waiting.join()
            job_backtest, waiting, drawer = _job(message, replies, drawer)
    except SideProcessError:  # a broken pipe: nobody left to reply to
        return 0
    finally:
        if drawer is not None:
            drawer.stop()


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


def _start_drawer(inherited: list[int]) -> Drawer | None:
    """The drawer (:class:`~harness.backtest.jobs.Drawer`), forked now that MLflow is imported, with
    this process's pipes to the run closed in it; None without fork."""
    if not hasattr(os, "fork"):
        return None
    return Drawer(close=inherited)


def _job(message: tuple, replies: Replies, drawer: Drawer | None) -> tuple[Any, threading.Thread, Drawer | None]:
    """A backtest's figures and selection, by the drawer (else here, and the drawer is dropped):
    the figures' reply is sent, the selection's by a thread when it is made. Returns the backtest
    (this process's copy, for the calls that name it), that thread and the drawer."""
    figures = None
    if drawer is not None and drawer.send(message):
        backtest = _read(message[1])  # while the drawer draws
        figures, selection = drawer.figures(), drawer.selection
    if figures is None:  # no drawer, or it died: made here
        drawer = None
        backtest, figures, selection = start_job(message)
    replies.send(figures)

    def send_selection() -> None:
        try:
            replies.send(("selection", selection()))
        except SideProcessError:
            pass

    waiting = threading.Thread(target=send_selection, name="harness-selection", daemon=True)
    waiting.start()
    return backtest, waiting, drawer


def _read(data: bytes) -> Any:
    try:
        return pickle.loads(data)
    except Exception:  # noqa: BLE001 - the drawer says why in its reply
        return None


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


if __name__ == "__main__":
    from harness.cli import fast_exit  # no module teardown: the run waits for this exit

    fast_exit(_serve())
