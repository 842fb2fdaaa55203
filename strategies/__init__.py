"""Strategies: prices → supervised table, a naive baseline, and the strategy's own metrics.

``get_strategy(name, params)`` resolves a built-in name (``STRATEGIES``) or a user class given
as ``"package.module:ClassName"`` (a :class:`Strategy` subclass importable from ``sys.path``).
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from typing import Any

from harness.errors import HarnessError, did_you_mean, unknown_name
from strategies.base import Strategy, Table
from strategies.cross_section import CrossSection
from strategies.heston_pricer import HestonPricer
from strategies.option_pricer import OptionPricer
from strategies.return_forecast import ReturnForecast
from strategies.volatility_forecast import VolatilityForecast

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (ReturnForecast, VolatilityForecast, OptionPricer, CrossSection, HestonPricer)
}

__all__ = ["STRATEGIES", "Strategy", "Table", "get_strategy", "load_class"]


def get_strategy(name: str, params: dict[str, Any] | None = None, *, periods_per_year: float | None = None
                 ) -> Strategy:
    """The strategy ``name`` (built-in, or ``"package.module:ClassName"``) with ``params`` applied;
    ``periods_per_year`` (bars a year of the prices it will build on) sets
    :attr:`Strategy.periods_per_year` (None: 252, daily bars)."""
    if not isinstance(name, str) or not name.strip():
        raise HarnessError(f"strategy.name: must be a built-in name or 'package.module:ClassName', got {name!r}")
    if ":" in name:
        cls = load_class(name)
    elif name in STRATEGIES:
        cls = STRATEGIES[name]
    else:
        raise unknown_name("strategy", name, STRATEGIES)
    if params is not None and not isinstance(params, dict):
        raise HarnessError(f"strategy.params: must be a mapping of parameter names to values, got {params!r}")
    strategy = cls(**(params or {}))
    if periods_per_year is not None:
        strategy.periods_per_year = float(periods_per_year)
    return strategy


def load_class(spec: str) -> type[Strategy]:
    """Import ``"package.module:ClassName"`` and check it is a :class:`Strategy` subclass."""
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise HarnessError(f"strategy '{spec}': write it as 'package.module:ClassName'")
    if os.getcwd() not in sys.path:  # a user's strategy module next to their config imports as-is
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise HarnessError(
            f"strategy '{spec}': cannot import module '{module_name}' ({exc}); check the name and that its "
            "folder is on PYTHONPATH"
        ) from None
    except Exception as exc:  # a user module that fails while importing: one line, not a traceback
        raise HarnessError(
            f"strategy '{spec}': importing '{module_name}' failed with {type(exc).__name__}: {exc}; fix that module"
        ) from None
    cls = getattr(module, class_name, None)
    if cls is None:
        classes = [n for n, obj in vars(module).items() if inspect.isclass(obj) and issubclass(obj, Strategy)]
        raise HarnessError(
            f"strategy '{spec}': module '{module_name}' has no class '{class_name}'"
            f"{did_you_mean(class_name, classes)}; strategy classes there: {', '.join(sorted(classes)) or 'none'}"
        )
    if not (inspect.isclass(cls) and issubclass(cls, Strategy)):
        raise HarnessError(
            f"strategy '{spec}': '{class_name}' is not a subclass of strategies.Strategy; subclass it"
        )
    return cls
