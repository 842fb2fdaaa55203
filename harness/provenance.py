"""Where a run comes from: the code version, this process, and whether a host answers.

The only module that runs a subprocess (``git``), reads ``/proc`` or opens a socket to check a
host; everything that needs those facts asks here.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path


def git_commit() -> str:
    """The short commit of the harness's own checkout, or ``unknown`` outside git."""
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                              capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def hostname() -> str:
    return socket.gethostname()


def process_tags() -> dict[str, str]:
    """Tags naming this process, so a later run can tell a live owner from a dead one."""
    return {"process.host": hostname(), "process.pid": str(os.getpid()),
            "process.started": started(os.getpid()) or ""}


def is_running(pid: int, started_at: str) -> bool:
    """True when process ``pid`` exists on this host and (when known) started at ``started_at``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    stat = _proc_stat(pid)
    if stat is None:  # no /proc (macOS): the pid exists, trust it
        return True
    state, start = stat
    return state != "Z" and (not started_at or start == started_at)  # a reused pid starts at another time


def started(pid: int) -> str | None:
    """When ``pid`` started, in clock ticks since boot, or None without /proc."""
    stat = _proc_stat(pid)
    return None if stat is None else stat[1]


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) from ``/proc/PID/stat``, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()  # the command name may hold spaces and ')'
    return (fields[0], fields[19]) if len(fields) > 19 else None


def can_listen(host: str, port: int) -> str | None:
    """None when this machine can listen on ``host:port``, else why not (in use, unknown host...)."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        return f"unknown host ({exc.strerror})"
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            return str(exc.strerror or exc)
    return None


def reachable(host: str, port: int, timeout: float = 3.0) -> OSError | None:
    """None when ``host:port`` accepts a TCP connection within ``timeout``, else the error."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return exc
    return None
