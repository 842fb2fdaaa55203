"""The figures and the selection of ``harness run``, off its critical path, in a side process.

Drawing a dozen PNGs (1-3 s) and the selection's bootstraps (~1 s) need no trainer: a side process,
started with the run (:func:`start`), imports matplotlib and the statistics while this process
imports torch and trains; given the assembled backtest (pickled) it draws the backtest's figures
while a forked copy makes the selection and its figures. This process logs the schedule runs as
their figures arrive, then the selection: the MLflow writes stay here, in the same order, and the
PNGs and statistics are those the same functions give here. Without a side process (one core or
every core busy, ``HARNESS_SIDE_PROCESS=0``, the Python API without :func:`start`, a strategy it
cannot import, or its death) the work is done here, as before. It never touches MLflow or torch,
ignores Ctrl-C (this process decides), and ends when this process closes the pipe, exits or dies.
"""

from __future__ import annotations

import atexit
import logging
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("harness.backtest")

ENV = "HARNESS_SIDE_PROCESS"  # "0": no side process


# --- what the work is, wherever it runs ----------------------------------------------------------


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


# --- this process's side -------------------------------------------------------------------------


class SideProcessError(RuntimeError):
    """The side process could not do a job (it died, or could not read the backtest)."""


@dataclass
class _Job:
    """One backtest handed to the side process: its figures come first, then its selection."""

    backtest: Any
    selection_folder: Path
    figures_read: bool = False
    selection: tuple[Any, Any] | None = None  # (report, files) or (None, HarnessError)
    files_taken: bool = field(default=False)


class _Side:
    """The side process: a ``python -m harness.backtest.sidecar`` child, pickled frames over its pipes."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        # its own process group: stopping it mid-job also stops the copy it forked for the selection
        self.process = subprocess.Popen([sys.executable, "-m", "harness.backtest.sidecar"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=env, start_new_session=True)
        self.job: _Job | None = None

    def alive(self) -> bool:
        return self.process.poll() is None

    def send(self, message: Any) -> None:
        _write(self.process.stdin, message)

    def receive(self) -> Any:
        message = _read(self.process.stdout)
        if message is None:
            raise SideProcessError("the side process ended")
        return message

    def close(self) -> None:
        """Idle, it ends when its pipe closes; in the middle of a job it is stopped at once."""
        busy = self.job is not None
        try:
            self.process.stdin.close()
        except OSError:
            pass
        try:
            self.process.wait(timeout=0 if busy else 2)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (OSError, AttributeError):
                self.process.kill()
            self.process.wait()
        try:
            self.process.stdout.close()
        except OSError:
            pass


_SIDE: _Side | None = None


def enabled() -> bool:
    """Whether a side process may run: not switched off (``HARNESS_SIDE_PROCESS=0``; ``=1`` forces
    it), and a core to run on: at least two, not all busy already (the last minute's load average
    below the cores; on a saturated machine a side process only takes CPU from the others)."""
    setting = os.environ.get(ENV, "").strip().lower()
    if setting in ("0", "false", "no", "off"):
        return False
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    if cores < 2:
        return False
    if setting in ("1", "true", "yes", "on"):
        return True
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return True
    return load < cores


def start() -> bool:
    """Start the side process (once per process) if :func:`enabled`; True if one is running."""
    global _SIDE
    if _SIDE is not None and _SIDE.alive() and _SIDE.job is None:
        return True
    stop()
    if not enabled():
        return False
    try:
        _SIDE = _Side()
    except OSError as exc:
        log.debug("no side process: %s", exc)
        _SIDE = None
        return False
    return True


def stop() -> None:
    """End the side process (if any); its pending work is dropped."""
    global _SIDE
    side, _SIDE = _SIDE, None
    if side is not None:
        side.close()
        if side.job is not None:
            shutil.rmtree(side.job.selection_folder, ignore_errors=True)


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
    job = _Job(backtest, Path(tempfile.mkdtemp(prefix="harness-selection-")))
    side.job = job
    side.send(("job", pickle.dumps(backtest, protocol=pickle.HIGHEST_PROTOCOL), str(folder),
               str(job.selection_folder)))
    kind, payload = side.receive()
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
            kind, payload = side.receive()
            job.selection = payload if kind == "selection" else (None, SideProcessError(payload))
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


# --- the frames on the pipes ---------------------------------------------------------------------


def _write(stream: Any, message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    try:
        stream.write(struct.pack("<Q", len(data)) + data)
        stream.flush()
    except (BrokenPipeError, OSError, ValueError) as exc:
        raise SideProcessError(f"cannot reach the side process ({exc})") from None


def _read(stream: Any) -> Any | None:
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


def _serve() -> int:
    """The side process: import the drawing and the statistics, then do each job sent; a run gone
    without closing the pipe (``kill -9``) ends it quietly, with nobody left to reply to."""
    try:
        return _jobs()
    except (SideProcessError, OSError):  # a broken pipe
        return 0


def _jobs() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the run: it ends this by closing the pipe
    logging.basicConfig(level=logging.WARNING, format="harness: %(levelname)s: %(message)s")  # as the CLI's
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints go to stderr, not into the frames
    requests = sys.stdin.buffer
    _warm_up()
    while True:
        message = _read(requests)
        if message is None:
            return 0
        _, data, figures_folder, selection_folder = message
        try:
            backtest = pickle.loads(data)
        except Exception as exc:  # noqa: BLE001 - e.g. a strategy class this interpreter cannot import
            _write(replies, ("error", f"cannot read the backtest: {type(exc).__name__}: {exc}"))
            continue
        selection = _fork_selection(backtest, selection_folder)
        try:
            _write(replies, ("figures", draw_backtest(backtest, figures_folder)))
        except Exception as exc:  # noqa: BLE001 - drawn again in the run's process, which raises it there
            _write(replies, ("error", f"drawing failed: {type(exc).__name__}: {exc}"))
        _write(replies, ("selection", selection()))


def _fork_selection(backtest: Any, folder: str):
    """Start the selection of ``backtest`` (and its figures, into ``folder``) in a forked copy of
    this process, so it runs beside the backtest's figures; returns the call that waits for it."""
    def make() -> tuple[Any, Any]:
        from harness.errors import HarnessError

        try:
            report = select_here(backtest)
        except HarnessError as exc:
            return None, exc
        return report, draw_selection(report, folder)

    if not hasattr(os, "fork"):
        return make
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the copy: make the selection, send it, leave without running any exit handler
        os.close(read_end)
        code = 0
        try:
            with os.fdopen(write_end, "wb") as out:
                try:
                    result = make()
                except Exception as exc:  # noqa: BLE001
                    result = (None, SideProcessError(f"the selection failed: {type(exc).__name__}: {exc}"))
                out.write(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
        except BaseException:  # noqa: BLE001
            code = 1
        os._exit(code)
    os.close(write_end)

    def wait() -> tuple[Any, Any]:
        with os.fdopen(read_end, "rb") as stream:
            data = stream.read()
        os.waitpid(pid, 0)
        try:
            return pickle.loads(data)
        except Exception:  # noqa: BLE001 - the copy died: the run's process makes the selection
            return None, SideProcessError("the selection's process ended without a result")

    return wait


def _warm_up() -> None:
    """What every job needs, imported while the run trains: pandas, matplotlib, the figures, the
    statistics (arch's bootstrap too) and the backtest's classes."""
    import harness.backtest.result  # noqa: F401 - unpickling the backtest
    import harness.evaluation.selection  # noqa: F401
    import harness.figures  # noqa: F401
    import harness.figures.curves  # noqa: F401

    try:
        import arch.bootstrap  # noqa: F401 - the confidence set's bootstrap
    except ImportError:
        pass


if __name__ == "__main__":
    from harness.cli import fast_exit  # no module teardown: the run waits for this exit
    fast_exit(_serve())
