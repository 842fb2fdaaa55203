"""``harness run``'s side process (:mod:`harness.backtest.aside`), seen from the run.

Started before the run reads its configs (:func:`start`), it imports MLflow and opens the store
while the run imports torch, and makes every :mod:`harness.tracking` call of the run
(:data:`tracking`) one at a time, in order, the run waiting for each answer (a checkpoint's save
excepted, :meth:`_Tracking.defer`): the store sees the writes of one process, so resume and
kill-safety are unchanged, and the run never imports MLflow. Given the assembled backtest, it draws
the figures and makes the selection beside each other (the same PNGs and statistics as here).
Without one (one core or all busy, ``HARNESS_SIDE_PROCESS=0``, a strategy it cannot import, its
death) the work is done here: the store's calls from then on too (a call left unanswered is made
again here; the writes are idempotent). A Ctrl-C while it works stops it at once.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

from harness.backtest.aside import ENV, JOB_BACKTEST, enabled, switched_off  # noqa: F401 - ENV: this module's too
from harness.backtest.jobs import (
    SideProcessError,
    draw_backtest,
    draw_selection,
    read_frame,
    select_here,
    write_frame,
)
from harness.tracking.values import store_location

log = logging.getLogger("harness.backtest")

_CALL_REPLIES = ("return", "raise", "fault")


@dataclass
class _Job:
    """One backtest handed to the side process: its figures come first, then its selection."""

    backtest: Any
    selection_folder: Path
    figures_read: bool = False
    selection: tuple[Any, Any] | None = None  # (report, files) or (None, HarnessError)


class _Side:
    """The side process: a ``python -m harness.backtest.aside`` child, pickled frames over its pipes."""

    def __init__(self) -> None:
        self.context = _context()  # what it resolves stores and paths with: this process's, now
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        # its own process group: stopping it mid-job also stops the copies it forked
        self.process = subprocess.Popen([sys.executable, "-m", "harness.backtest.aside"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                        start_new_session=True)
        self.job: _Job | None = None
        self.new_stores: dict[Path, bool] = {}  # a local store's database: whether it did not exist when first opened
        self.calls = 0
        self.deferred: list[_Deferred] = []  # calls sent without waiting, oldest first

    def alive(self) -> bool:
        return self.process.poll() is None

    def send(self, message: Any) -> None:
        write_frame(self.process.stdin, message)

    def send_call(self, name: str, args: tuple, kwargs: dict, deferred: bool) -> int:
        """Send the call ``harness.tracking.<name>(*args, **kwargs)``; returns its number."""
        self.calls += 1
        self.send(("call", self.calls, name, args, kwargs, deferred))
        return self.calls

    def reply(self, kinds: tuple[str, ...], seq: int | None = None) -> tuple:
        """The next message of one of ``kinds`` (of call ``seq``); a selection that comes first is
        kept on the job for :func:`select`."""
        while True:
            message = read_frame(self.process.stdout)
            if message is None:
                raise SideProcessError("the side process ended")
            if message[0] == "selection" and self.job is not None:
                self.job.selection = message[1]
            if message[0] in kinds and (seq is None or message[1] == seq):
                return message

    def close(self) -> None:
        """Idle, it ends when its pipe closes (a call sent without waiting made first); in the middle
        of a job, or never called (a config error), it is stopped at once."""
        busy = self.job is not None or self.calls == 0
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        try:
            self.process.wait(timeout=0 if busy else 2)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (OSError, AttributeError):
                self.process.kill()
            self.process.wait()
        with contextlib.suppress(OSError):
            self.process.stdout.close()


_SIDE: _Side | None = None


def _context() -> tuple[str, dict[str, str]]:
    return os.getcwd(), dict(os.environ)


def tracking_uri(config: Any) -> str | None:
    """The config's tracking.uri when the user set it, else None (then $MLFLOW_TRACKING_URI, else ./mlruns)."""
    return config.tracking.uri if "uri" in config.tracking.model_fields_set else None


def start(config: Any = None) -> bool:
    """Start the side process (once per process) if :func:`enabled`; True if one is running. It
    imports MLflow at once; given a config, it opens that config's store (``tracking.uri``, else
    the default one) before the run asks for it."""
    global _SIDE
    if switched_off():  # also for a process that had one (HARNESS_SIDE_PROCESS=0 set since)
        stop()
        return False
    if _SIDE is None or not _SIDE.alive() or _SIDE.job is not None or _SIDE.context != _context():
        stop()  # none, dead, busy, or started in another folder or environment: a new one
        if not enabled():
            return False
    try:
        if _SIDE is None:
            _SIDE = _Side()
        if config is not None:
            uri = tracking_uri(config) or ""
            database = store_location(uri or None).database
            if database is not None and database not in _SIDE.new_stores:  # before the side process creates it
                _SIDE.new_stores[database] = not database.exists() and _creatable(database.parent)
            _SIDE.send(("open", uri))  # "": the default store
    except (OSError, SideProcessError) as exc:
        log.debug("no side process: %s", exc)
        stop()
        return False
    return True


def _creatable(folder: Path) -> bool:
    """Whether ``folder`` is, or can be made, a writable folder (its nearest existing ancestor is a
    writable folder): a store that cannot be created is no new store, so its error comes before any
    training (:func:`harness.tracking.resolve_store` says why)."""
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    return existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)


def new_store(config: Any) -> bool:
    """Whether the side process is opening ``config``'s store as a new local store (its database did
    not exist when :func:`start` first asked for it): nothing to resume there, so the run may train
    while it opens. True once per store (a second backtest into it finds the first's runs)."""
    side = _SIDE
    if side is None or not side.alive():
        return False
    database = store_location(tracking_uri(config) or None).database
    return side.new_stores.pop(database, False) if database is not None else False


def stop() -> None:
    """End the side process (if any); its pending work is dropped."""
    global _SIDE
    side, _SIDE = _SIDE, None
    if side is not None:
        side.close()  # idle, it makes the call it was sent without waiting first
        if side.job is not None:
            shutil.rmtree(side.job.selection_folder, ignore_errors=True)
        for deferred in side.deferred:
            deferred.then(False)  # not known to be made


atexit.register(stop)


def figures(backtest: Any, folder: str | Path) -> tuple[dict[str, Path], dict[str, dict[str, Path]]]:
    """The backtest's figures drawn into ``folder`` (as :func:`draw_backtest` returns them): by the
    side process when one is running, which then makes the backtest's selection too (collected by
    :func:`select` and :func:`selection_files`); else here."""
    side = _SIDE
    if side is not None and not side.alive():
        stop()  # it died: this process does its work
        side = None
    if side is not None and side.job is None:
        try:
            return _figures_aside(side, backtest, Path(folder))
        except SideProcessError as exc:
            log.debug("drawing in this process: %s", exc)
            stop()
        except BaseException:
            stop()  # interrupted while the side process works: it cannot be trusted with the next job
            raise
    return draw_backtest(backtest, folder)


def _figures_aside(side: _Side, backtest: Any, folder: Path) -> tuple[dict, dict]:
    _settle(side)
    job = _Job(backtest, Path(tempfile.mkdtemp(prefix="harness-selection-")))
    side.job = job
    side.send(("job", pickle.dumps(backtest, protocol=pickle.HIGHEST_PROTOCOL), str(folder),
               str(job.selection_folder)))
    kind, payload = side.reply(("figures", "error"))
    job.figures_read = True
    if kind == "error":
        raise SideProcessError(payload)
    return payload


def select(backtest: Any) -> Any:
    """The selection of ``backtest``: the side process's when it is making it (see :func:`figures`),
    else made here. Raises :class:`~harness.errors.HarnessError` as the selection does."""
    side = _SIDE
    job = side.job if side is not None else None
    if job is None or job.backtest is not backtest:
        return select_here(backtest)
    try:
        if job.selection is None:
            _settle(side)
            side.reply(("selection",))  # kept on the job
    except SideProcessError as exc:
        job.selection = (None, exc)
    except BaseException:
        stop()
        raise
    report, outcome = job.selection
    if isinstance(outcome, SideProcessError):  # the side process failed: the selection is made here
        _finish_job()
        stop()
        return select_here(backtest)
    if report is None:
        _finish_job()
        raise outcome  # the selection's own HarnessError, as made here
    if getattr(report, "backtest", None) is not None:
        report.backtest = backtest  # this process's backtest (the run id set on it), not the side's copy
    return report


def selection_files(report: Any, folder: str | Path) -> dict[str, Path]:
    """The selection's report and figures in ``folder``: moved from the side process's folder when
    it drew them for ``report``, else drawn here."""
    side = _SIDE
    job = side.job if side is not None else None
    if job is None or job.selection is None or job.selection[0] is not report:
        return draw_selection(report, folder)
    files = job.selection[1]
    moved = {}
    for name, source in files.items():
        target = Path(folder) / Path(source).relative_to(job.selection_folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(source), target)
        moved[name] = target
    _finish_job()
    return moved


def _finish_job() -> None:
    side = _SIDE
    if side is not None and side.job is not None:
        shutil.rmtree(side.job.selection_folder, ignore_errors=True)
        side.job = None


# --- the store's calls -----------------------------------------------------------------------------


class _Tracking:
    """:mod:`harness.tracking` as ``harness run`` calls it: each function is called in the side
    process while one runs, else here (MLflow is imported then)."""

    def __getattr__(self, name: str) -> Any:
        side = _SIDE
        if side is not None and side.alive():
            return functools.partial(_call, name)
        stop()  # it died: the calls are made here from now on
        return _here(name)

    def defer(self, then: Callable[[bool], None], name: str, *args: Any, **kwargs: Any) -> None:
        """Call ``name`` as the others, but go on without its answer: the side process makes it while
        this process works; its answer (an error, a kill moment) is taken at the next call that
        waits, after ``then(made)`` ran (``made``: whether it was made without error). Where no side
        process runs it is made at once. After a kill moment the side process skips the deferred
        calls sent after it, as a kill would have."""
        side = _SIDE
        if side is None or not side.alive():
            made = False
            try:
                _here(name)(*args, **kwargs)
                made = True
            finally:
                then(made)
            return
        try:
            seq = side.send_call(name, args, kwargs, deferred=True)
        except SideProcessError:
            stop()
            self.defer(then, name, *args, **kwargs)
            return
        side.deferred.append(_Deferred(seq, then, name, args, kwargs))


tracking = _Tracking()


def _here(name: str) -> Any:
    """``harness.tracking.<name>`` in this process (MLflow imported now, if not yet)."""
    return getattr(import_module("harness.tracking"), name)


@dataclass
class _Deferred:
    """A call sent without waiting for its answer (:meth:`_Tracking.defer`)."""

    seq: int
    then: Callable[[bool], None]
    name: str
    args: tuple
    kwargs: dict


def _settle(side: _Side) -> None:
    """Take the answers of the deferred calls, run their ``then``, then raise the first error or
    honour the first kill moment; calls the side process could not answer (it died) are made here."""
    pending, side.deferred = side.deferred, []
    answers: list[tuple] = []
    try:
        for deferred in pending:
            answers.append(side.reply((*_CALL_REPLIES, "skipped"), deferred.seq))
    except SideProcessError:
        stop()
        for deferred in pending[len(answers):]:  # made here: they may not have been made there
            tracking.defer(deferred.then, deferred.name, *deferred.args, **deferred.kwargs)
        pending = pending[:len(answers)]
    except BaseException:
        stop()
        for deferred in pending[len(answers):]:
            deferred.then(False)
        pending = pending[:len(answers)]
        raise
    finally:
        for answer, deferred in zip(answers, pending):
            deferred.then(answer[0] == "return")
    for answer, deferred in zip(answers, pending):
        if answer[0] != "skipped":
            _answer(answer, deferred.name, deferred.args, deferred.kwargs)


def _call(name: str, *args: Any, **kwargs: Any) -> Any:
    """``harness.tracking.<name>(*args, **kwargs)``, made by the side process; made here when it
    cannot (it died, or died meanwhile: the call is made again here)."""
    side = _SIDE
    if side is None or not side.alive():
        stop()
        return _here(name)(*args, **kwargs)
    _settle(side)
    mine = side.job.backtest if side.job is not None and side.job.figures_read else None
    sent_args = tuple(JOB_BACKTEST if mine is not None and arg is mine else arg for arg in args)
    sent_kwargs = {key: JOB_BACKTEST if mine is not None and value is mine else value for key, value in kwargs.items()}
    try:
        answer = side.reply(_CALL_REPLIES, side.send_call(name, sent_args, sent_kwargs, deferred=False))
    except SideProcessError as exc:
        log.debug("the store's calls are made here from now on: %s", exc)
        stop()
        return _call(name, *args, **kwargs)
    except BaseException:
        stop()  # interrupted while it works: this process ends the run (its parent KILLED) itself
        raise
    return _answer(answer, name, args, kwargs)


def _answer(answer: tuple, name: str, args: tuple, kwargs: dict) -> Any:
    kind, _, value = answer
    if kind == "fault":  # the test-only fault hook's kill moment: this process is the one stopped
        signal.raise_signal(getattr(signal, value))
        return _call(name, *args, **kwargs)  # a signal whose handler did not stop the run
    if kind == "raise":
        raise value
    return value


def warm_up() -> None:
    """Tell the side process that training starts: it imports the drawing and the statistics now."""
    side = _SIDE
    if side is not None and side.alive():
        try:
            side.send(("warm",))
        except SideProcessError:
            stop()
