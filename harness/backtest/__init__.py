"""The walk-forward backtest: plan, boundary policy, window work, executors, resume, the loop.

Public API: :func:`plan`, :func:`run_backtest`, :func:`run_and_log`, :class:`Backtest`,
:class:`Outcome`. Imported lazily: ``import harness.backtest.result`` (what unpickling a backtest
needs, e.g. in the figures' side process) imports neither MLflow nor torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.lazy import lazy_exports

_LAZY = {
    "Plan": "planning", "Window": "planning", "plan": "planning",
    "Backtest": "result",
    "Interrupted": "run", "Outcome": "run", "run_and_log": "run", "run_backtest": "run", "run_windows": "run",
}

if TYPE_CHECKING:
    from harness.backtest.planning import Plan, Window, plan
    from harness.backtest.result import Backtest
    from harness.backtest.run import Interrupted, Outcome, run_and_log, run_backtest, run_windows


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


__all__ = ["Backtest", "Interrupted", "Outcome", "Plan", "Window", "plan", "run_and_log", "run_backtest",
           "run_windows"]
