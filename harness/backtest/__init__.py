"""The walk-forward backtest: plan, boundary policy, window work, executors, resume, the loop.

Public API: :func:`plan`, :func:`run_backtest`, :func:`run_and_log`, :class:`Backtest`,
:class:`Outcome`.
"""

from harness.backtest.plan import Plan, Window, plan
from harness.backtest.result import Backtest
from harness.backtest.run import (
           Interrupted,
           Outcome,
           run_and_log,
           run_backtest,
           run_windows,
)

__all__ = ["Backtest", "Interrupted", "Outcome", "Plan", "Window", "plan", "run_and_log", "run_backtest",
           "run_windows"]
