"""The walk-forward backtest: plan, boundary policy, window work, executors, resume, the loop.

Public API: :func:`plan`, :func:`run_backtest`, :func:`run_and_log`, :class:`Backtest`,
:class:`Outcome`. Imported lazily: ``import harness.backtest.result`` (what unpickling a backtest
needs, e.g. in the figures' side process) imports neither MLflow nor torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_LAZY = {
    "Plan": "planning", "Window": "planning", "plan": "planning",
    "Backtest": "result",
    "Interrupted": "run", "Outcome": "run", "run_and_log": "run", "run_backtest": "run", "run_windows": "run",
}

if TYPE_CHECKING:
    from harness.backtest.planning import Plan, Window, plan
    from harness.backtest.result import Backtest
    from harness.backtest.run import Interrupted, Outcome, run_and_log, run_backtest, run_windows


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value  # looked up once
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = ["Backtest", "Interrupted", "Outcome", "Plan", "Window", "plan", "run_and_log", "run_backtest",
           "run_windows"]
