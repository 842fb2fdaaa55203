"""``python -m harness`` is the ``harness`` command."""

from harness.cli import run

run()
