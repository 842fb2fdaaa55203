"""harness: walk-forward backtests of learning-rate decay schedules for neural financial models.

Notebook entry points (imported lazily, so ``import harness`` stays fast):

- ``harness.train(X_train, y_train, X_val, y_val, model=..., schedules=[...], ...)``: all schedules x
  seeds trained in one batched pass;
- ``harness.run_backtest(config)``: the walk-forward loop, returning tidy frames;
- ``harness.load_config(path)``, ``harness.lr_table(spec, total_steps, base_lr)``.
"""

from harness.lazy import lazy_exports

__version__ = "0.1.0"

_LAZY = {
    "train": "training",
    "TrainResult": "training",
    "run_backtest": "backtest",
    "load_config": "config",
    "Config": "config",
    "lr_table": "schedules",
    "WalkForward": "windows",
    "load_prices": "data",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


__all__ = ["__version__", *_LAZY]
