"""The executable's exit skips module teardown but keeps everything a normal exit does."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import atexit, concurrent.futures, threading, time
    from harness.cli import fast_exit

    pool = concurrent.futures.ThreadPoolExecutor(2)   # workers a normal exit tells to stop, then joins
    pool.submit(lambda: 1).result()
    late = []
    worker = threading.Thread(target=lambda: (time.sleep(0.3), late.append(1)))  # not a daemon: joined
    worker.start()
    atexit.register(lambda: print("handler ran, worker done:", bool(late)))
    print("buffered", end=" ")  # block-buffered into the pipe: flushed before leaving
    fast_exit(3)
""")


def test_fast_exit_joins_threads_runs_handlers_flushes_and_keeps_the_code():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert done.stdout == "buffered handler ran, worker done: True\n"
    assert done.stderr == ""


def test_the_console_script_and_python_m_harness_use_it():
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "harness"]
    assert script.value == "harness.cli:run"
    done = subprocess.run([sys.executable, "-m", "harness", "config", "--set", "windows.train=-5"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip() == "harness: error: windows.train: must be > 0, got -5"
