"""The production model: the chosen schedule retrained on the most recent train window.

``harness select --register`` rebuilds the backtest's config, plans it, and builds the
**production window** (:func:`harness.backtest.planning.production_window`): train rows that end at the
data's last labelled row (the strategy table's last row), as long as the backtest's train windows
(``windows.train`` dates when rolling, every row when expanding), with no test slice. So the model
is current: it has seen the newest data, not only the last backtest window's train rows, which end
a purge and a test slice (or more) earlier. The chosen schedule's members train there exactly as the
backtest trains a window (:class:`harness.backtest.window.WindowTrainer`: scalers fitted on the
window's train rows, the same seeds, epochs and validation tail), always from a fresh
initialisation (``training.boundary: fresh``) so the model does not depend on earlier windows.

The production model is the **seed ensemble**: the mean of the live (non-diverged) seed members'
predictions in target units, the same seed-mean prediction the backtest scores. It is exported as
one plain :class:`torch.nn.Module`, :class:`EnsembleModel`: raw features in (the strategy table's
columns, in order), target units out. No mlflow here; :mod:`harness.tracking` logs it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from harness.config import Config
from harness.errors import HarnessError


class EnsembleModel(nn.Module):
    """Scalers + seed members of one schedule: ``forward(x) -> mean over members``.

    Parameters
    ----------
    members : the trained members (eval mode), each mapping scaled ``[n, F]`` to ``[n]``
        (``[n, k]`` for k targets).
    x_mean, x_std : feature scaler fitted on the train window, ``[F]``.
    y_mean, y_std : target scaler, scalars (or ``[k]``), in the network's target space.
    target_inverse : torch map from the network's target space to target units (None: identity).

    ``forward`` takes raw features ``[n, F]`` (any float dtype) and returns float64 ``[n]``:
    ``mean_m target_inverse(member_m((x − x_mean)/x_std) · y_std + y_mean)``, the arithmetic of
    :class:`harness.backtest.window.Fitted` (scaling in float64, the network in its own dtype).
    """

    def __init__(self, members: list[nn.Module], x_mean: np.ndarray, x_std: np.ndarray, y_mean: np.ndarray,
                 y_std: np.ndarray, target_inverse: Any = None) -> None:
        super().__init__()
        if not members:
            raise HarnessError("the production ensemble has no live member (every seed diverged); "
                               "choose another schedule or lower training.lr")
        self.members = nn.ModuleList(members)
        for name, value in (("x_mean", x_mean), ("x_std", x_std), ("y_mean", y_mean), ("y_std", y_std)):
            self.register_buffer(name, torch.tensor(np.asarray(value, dtype=np.float64)))
        self.target_inverse = target_inverse
        self.network_dtype = next(members[0].parameters()).dtype
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = ((x.to(torch.float64) - self.x_mean) / self.x_std).to(self.network_dtype)
        outputs = torch.stack([member(z) for member in self.members]).to(torch.float64) * self.y_std + self.y_mean
        if self.target_inverse is not None:
            outputs = self.target_inverse(outputs)
        return outputs.mean(dim=0)


EXAMPLE_ROWS = 64  # the last train rows: the logged input example and the registry round-trip check


@dataclass
class Production:
    """A retrained production model and what it was trained on.

    ``window`` is the production window's index (one past the backtest's last window);
    ``train_start``/``train_end`` the dates of its first and last train rows (``train_end`` is the
    data's last labelled date). ``example`` holds the raw inputs of the window's last
    :data:`EXAMPLE_ROWS` train rows (dates ``example_dates``) and ``expected`` the harness's own
    seed-mean predictions for them (through the batched trainer's stack, not this module): the
    registry round trip is checked against them.
    """

    model: EnsembleModel
    schedule: str
    schedule_spec: Any
    window: int
    mode: str
    train_start: pd.Timestamp
    train_end: pd.Timestamp
    n_train: int
    seeds: list[int]
    diverged: list[int]
    features: list[str]
    example: np.ndarray
    expected: np.ndarray
    example_dates: pd.DatetimeIndex
    seconds: float
    epochs: int = 0  # the chosen candidate's training budget
    lr: float = 0.0  # and base LR
    loss: str = "mse"

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The ensemble's predictions (target units) for raw features ``[n, F]``."""
        with torch.no_grad():
            return self.model(torch.tensor(np.asarray(X, dtype=np.float64))).numpy()

    def span(self) -> dict[str, str]:
        """The train span: ``train_start``, ``train_end`` (dates) and ``train_rows``, as strings
        (the registered model version's tags)."""
        return {"train_start": f"{self.train_start:%Y-%m-%d}", "train_end": f"{self.train_end:%Y-%m-%d}",
                "train_rows": str(self.n_train)}

    def params(self) -> dict[str, Any]:
        """What the registry run logs as params."""
        return {
            "schedule": self.schedule, "schedule_spec": self.schedule_spec, "epochs": self.epochs, "lr": self.lr,
            "loss": self.loss, "ensemble": "mean of seed members",
            "train_window": f"production ({self.mode}, ends at the last labelled row)", **self.span(),
            "seeds": self.seeds, "diverged_seeds": self.diverged, "features": self.features,
        }

    def describe(self) -> list[str]:
        """Markdown lines for the selection report."""
        live = len(self.seeds) - len(self.diverged)
        left_out = f"; diverged and left out: {self.diverged}" if self.diverged else ""
        return [
            (f"- schedule `{self.schedule}`, retrained fresh on the most recent train window ({self.mode}, "
             f"{self.train_start:%Y-%m-%d} .. {self.train_end:%Y-%m-%d}, {self.n_train} rows, ending at the data's "
             f"last labelled row) in {self.seconds:.1f} s, {self.epochs} epochs at base LR {self.lr:g}"
             f"{'' if self.loss == 'mse' else f' (loss {self.loss})'}"),
            f"- the model is the **seed ensemble**: the mean of {live} seed members' predictions "
            f"(seeds {', '.join(map(str, self.seeds))}{left_out})",
            f"- input: raw features `[n, {len(self.features)}]` float64 ({', '.join(self.features)}); "
            + ("output: the probability that the target is positive `[n]` float64 (a sign classifier)"
             if self.loss == "bce" else "output: the target in its own units `[n]` float64"),
        ]


def train_production(config: Config, schedule: str, *, prices: pd.DataFrame | None = None) -> Production:
    """Retrain ``schedule`` (a label of ``config``'s schedules) on the production window's train rows
    (:func:`harness.backtest.planning.production_window`)."""
    from dataclasses import replace

    from harness.backtest.planning import plan, production_window
    from harness.backtest.window import Start, WindowTrainer

    from harness.backtest.candidates import candidate, single_config

    started = time.perf_counter()
    chosen = candidate(config, schedule)  # a candidate label: its schedule at its budget and base LR
    single = single_config(config, schedule, boundary="fresh")
    the_plan = plan(single, prices)
    window = production_window(the_plan)
    example_rows = window.train_rows[-EXAMPLE_ROWS:]
    strategy = the_plan.strategy
    trainer = WindowTrainer(single, strategy, the_plan.table)
    # The window has no test slice; the trainer predicts a window's test rows after training (and
    # cannot predict none), so it is handed the example rows there. Training reads train rows only.
    done = trainer.train([replace(window, test_rows=example_rows)], [Start()], {})[0]
    diverged = done.training["diverged"].to_numpy(bool)
    fitted = done.fitted
    members = _members(single, fitted.result, the_plan.table.X.shape[1], np.flatnonzero(~diverged))
    model = EnsembleModel(members, fitted.x_scaler.mean, fitted.x_scaler.std, fitted.y_scaler.mean,
                          fitted.y_scaler.std, _torch_target_inverse(strategy))
    expected = trainer.predict(fitted, example_rows)[~diverged].mean(axis=0)
    dates = the_plan.dates
    seeds = [int(seed) for _, seed in fitted.result.labels]
    return Production(
        model=model, schedule=schedule, schedule_spec=chosen.spec, window=window.index,
        mode=single.windows.mode, train_start=dates[window.train_rows[0]], train_end=dates[window.train_rows[-1]],
        n_train=len(window.train_rows), seeds=seeds, diverged=[s for s, d in zip(seeds, diverged) if d],
        features=[str(c) for c in the_plan.table.X.columns], example=trainer.inputs(example_rows),
        expected=expected, example_dates=dates[example_rows], seconds=time.perf_counter() - started,
        epochs=chosen.epochs, lr=chosen.lr, loss=config.training.loss,
    )


def _members(config: Config, result: Any, n_features: int, live: np.ndarray) -> list[nn.Module]:
    """One plain module per live member, holding that member's trained parameters."""
    from harness.training import make_model_factory

    factory = make_model_factory(config.model.network(), n_features=n_features)
    state = result.state
    members = []
    for m in live:
        module = factory()
        with torch.no_grad():
            for name, parameter in module.named_parameters():
                parameter.copy_(state[name][m])
        members.append(module.eval())
    return members


def _torch_target_inverse(strategy: Any) -> Any:
    """None for strategies that train on the target as is; their ``torch_target_inverse`` otherwise."""
    from strategies.base import Strategy

    if type(strategy).target_inverse is Strategy.target_inverse:
        return None
    inverse = getattr(strategy, "torch_target_inverse", None)
    if inverse is None:
        raise HarnessError(
            f"strategy '{strategy.name or type(strategy).__name__}' transforms its target, so the exported model "
            "needs the inverse in torch: define torch_target_inverse(z: Tensor) -> Tensor on the strategy"
        )
    return inverse
