"""harness: walk-forward backtests of learning-rate decay schedules for neural financial models.

Notebook entry points (imported lazily, so ``import harness`` stays fast):

- ``harness.train(X_train, y_train, X_val, y_val, model=..., schedules=[...], ...)``: all schedules x
  seeds trained in one batched pass;
- ``harness.run_backtest(config)``: the walk-forward loop, returning tidy frames;
- ``harness.load_config(path)``, ``harness.lr_table(spec, total_steps, base_lr)``.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "train": "harness.training",
    "TrainResult": "harness.training",
    "run_backtest": "harness.backtest",
    "load_config": "harness.config",
    "Config": "harness.config",
    "lr_table": "harness.schedules",
    "WalkForward": "harness.windows",
    "load_prices": "harness.data",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
