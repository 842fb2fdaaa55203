"""A user strategy: forecast next-week realized vol from the Parkinson high-low range.

Run it with ``harness run examples/range_vol.yaml`` from the repository root (the folder you run
from is importable, so ``examples.range_vol:RangeVol`` resolves).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from strategies import Strategy, Table


class RangeVol(Strategy):
    """Parkinson range volatility over 1, 5 and 22 days -> realized vol of the next ``horizon`` days."""

    name = "range_vol"
    params = {"horizon": 5, "window": 22}
    better = {"mape": "min"}
    baseline_name = "train-mean vol"

    def validate(self) -> None:
        self.require(self.horizon >= 1, "horizon", "must be >= 1")
        self.require(self.window > 5, "window", "must be > 5")

    def build(self, prices: pd.DataFrame) -> Table:
        log_range2 = np.log(prices["high"] / prices["low"]) ** 2 / (4 * np.log(2))
        returns = np.log(prices["adj_close"]).diff()
        X = pd.DataFrame({f"park_{n}": np.sqrt(self.periods_per_year * log_range2.rolling(n).mean()) for n in (1, 5, self.window)})
        future = (returns**2).rolling(self.horizon).sum().shift(-self.horizon)  # r_{t+1} .. r_{t+h}
        y = np.sqrt(self.periods_per_year / self.horizon * future).rename("target")
        keep = X.notna().all(axis=1) & y.notna()
        return Table(X=X[keep], y=y[keep], dates=X.index[keep], horizon=self.horizon)

    def baseline(self, train: Table, test: Table) -> np.ndarray:
        return np.full(len(test), train.y.mean())  # fitted on the train rows only

    def metrics(self, y, pred, baseline, test) -> dict[str, float]:
        return {"mape": float(np.mean(np.abs(pred - y) / y))}
