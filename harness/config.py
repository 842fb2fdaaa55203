"""The backtest config: a YAML file validated against the schema below (design section 2).

Every field has a default, so an empty file is valid. Unknown keys and wrong types are
:class:`~harness.errors.ConfigError` s whose message starts with the dotted field name, e.g.
``windows.train: must be > 0, got -5``.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from harness.config_io import _first_error as _first_error_of
from harness.config_io import _read_yaml, _set_dotted, read_yaml  # noqa: F401 (read_yaml: the CLI reads --set with it)
from harness.errors import ConfigError, HarnessError, did_you_mean

log = logging.getLogger("harness.config")

DEFAULT_DATA = "data/sp500.csv"
DEFAULT_START = "2013-10-01"
"""Where the default backtest starts on :data:`DEFAULT_DATA` (see :func:`default_config`)."""

DEFAULT_SCHEDULES: list[Any] = [
    "constant",
    {"name": "step", "step_size": 0.33, "gamma": 0.1},
    "exponential",
    {"name": "cosine", "min_lr_ratio": 0.01, "warmup": 0.05},
    "onecycle",
    "wsd",
    "plateau",
    "schedule_free",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


Size = int | str  # observations, or a calendar length such as "3Y", "6M", "63D"


class DataConfig(_Section):
    """Where prices come from (design section 3)."""

    source: Literal["csv", "parquet", "yfinance", "synthetic"] = "csv"
    path: str = DEFAULT_DATA
    tickers: list[str] = Field(default_factory=lambda: ["^GSPC"])
    start: str | None = None
    end: str | None = None
    interval: str = "1d"
    cache_dir: str = "data/cache"
    synthetic: dict[str, Any] = Field(default_factory=lambda: {"model": "gbm", "n_days": 2520, "seed": 0})
    repair: bool = True
    delimiter: str | None = None  # CSV field separator; None: read from the file
    decimal: Literal[".", ","] | None = None  # CSV decimal mark; None: read from the file
    dayfirst: bool | None = None  # 01/02/2000 is 1 February; None: read from the file
    periods_per_year: float | None = Field(None, gt=0)  # bars a year, for annualising; None: from the dates

    @model_validator(mode="before")
    @classmethod
    def _default_start(cls, values: Any) -> Any:
        """The bundled default file starts at :data:`DEFAULT_START` unless ``start`` is given (even
        ``null``), so an empty config file is the default backtest (:func:`default_config`)."""
        if isinstance(values, dict) and "start" not in values and values.get("source", "csv") == "csv" \
                and values.get("path", DEFAULT_DATA) == DEFAULT_DATA:
            return {**values, "start": DEFAULT_START}
        return values

    @field_validator("delimiter")
    @classmethod
    def _one_character(cls, value: str | None) -> str | None:
        if value is not None and (len(value) != 1 or value in "\"\r\n" or value.isalnum()):
            raise ValueError(f"must be one separator character such as ',', ';', '|' or a tab, got {value!r}")
        return value

    @field_validator("tickers", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("start", "end", mode="before")
    @classmethod
    def _iso_date(cls, value: Any) -> Any:
        """YAML reads an unquoted ``2013-06-01`` as a date: keep it as its ISO string."""
        return value.isoformat() if isinstance(value, (datetime.date, datetime.datetime)) else value


class StrategyConfig(_Section):
    """Built-in strategy name, or ``"package.module:ClassName"``, and its parameters."""

    name: str = "volatility_forecast"
    params: dict[str, Any] = Field(default_factory=dict)  # the strategy's declared defaults apply


class ModelConfig(_Section):
    """The network each member trains: an MLP (or a small GRU/LSTM), or a user's own ``nn.Module``
    class, ``type: "package.module:Class"``, built as ``Class(n_features=..., n_outputs=..., **params)``."""

    type: str = "mlp"  # mlp | gru | lstm | "package.module:Class"
    params: dict[str, Any] = Field(default_factory=dict)  # a user's class: its keyword arguments
    hidden: list[int] = Field(default_factory=lambda: [64, 64])
    activation: Literal["relu", "tanh", "gelu", "silu"] = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    sequence: int = Field(21, gt=0)  # gru/lstm: each input is the last `sequence` table rows (the MLP ignores it)

    def network(self) -> dict[str, Any]:
        """The network's own settings (``harness.stack.make_model_factory``'s mapping)."""
        if self.custom:
            return {"type": self.type, "params": dict(self.params)}
        return self.model_dump(exclude={"sequence", "params"})

    @property
    def custom(self) -> bool:
        """Whether ``type`` names a user's class (``"package.module:Class"``)."""
        return ":" in self.type

    @property
    def recurrent(self) -> bool:
        """Whether inputs are sequences of rows: gru/lstm, or a user's class given ``sequence``."""
        return self.type in ("gru", "lstm") or (self.custom and "sequence" in self.model_fields_set)

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value in ("mlp", "gru", "lstm"):
            return value
        module, _, name = value.partition(":")
        if module and name:
            return value
        hint = did_you_mean(value, ["mlp", "gru", "lstm"])
        raise ValueError(f"must be one of 'mlp', 'gru', 'lstm' or a user's class 'package.module:Class'{hint}, "
                         f"got {value!r}")

    @field_validator("params")
    @classmethod
    def _params_for_user_classes(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        kind = info.data.get("type", "mlp")
        if value and ":" not in kind:
            raise ValueError(f"only a user's class (type: 'package.module:Class') takes params; {kind} takes "
                             "hidden, activation, dropout")
        return value

    @field_validator("hidden")
    @classmethod
    def _positive_widths(cls, value: list[int]) -> list[int]:
        if not value or any(width <= 0 for width in value):
            raise ValueError(f"must be a non-empty list of positive widths, got {value}")
        return value


class TrainingConfig(_Section):
    """How every member is trained in each window (design section 6)."""

    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float | list[float] = 1.0e-3  # a list: every schedule at every LR (candidates)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    epochs: int | list[int] = 40  # a list: every schedule at every budget (candidates)
    batch_size: int = Field(128, gt=0)
    seeds: int = Field(3, gt=0)
    seed: int = Field(0, ge=0)
    validation: float = Field(0.2, ge=0, lt=1)
    patience: int | None = Field(None, gt=0)
    grad_clip: float | None = Field(None, gt=0)
    boundary: Literal["fresh", "warm_restart", "warm_continue"] = "fresh"
    loss: Literal["mse", "mae", "huber", "bce"] = "mse"  # bce: a sign classifier (label: target > 0)
    huber_delta: float | None = Field(None, gt=0)  # huber: delta in target units; null: the target's std
                                                   # over the first window's train rows

    @field_validator("lr", "epochs", mode="before")
    @classmethod
    def _positive_values(cls, value: Any) -> Any:
        """Each given number > 0 and finite (other types are the type check's)."""
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, (int, float)) and not isinstance(item, bool) and not 0 < item < float("inf"):
                raise ValueError(f"must be > 0, got {item!r}")
        return value

    @field_validator("lr", "epochs")
    @classmethod
    def _axis(cls, value: Any) -> Any:
        """One value, or a non-empty list of distinct ones (the budget and LR axes)."""
        if isinstance(value, list):
            if not value:
                raise ValueError("must be a number or a non-empty list of numbers")
            twice = sorted(v for v in set(value) if value.count(v) > 1)
            if twice:
                raise ValueError(f"lists {twice[0]!r} twice; give each value once")
        return value

    @field_validator("huber_delta")
    @classmethod
    def _delta_needs_huber(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("loss") != "huber":
            raise ValueError("only applies with training.loss: huber")
        return value

    @property
    def budgets(self) -> list[int]:
        """``epochs`` as a list (the budget axis)."""
        return list(self.epochs) if isinstance(self.epochs, list) else [self.epochs]

    @property
    def lrs(self) -> list[float]:
        """``lr`` as a list (the LR axis)."""
        return list(self.lr) if isinstance(self.lr, list) else [self.lr]


class WindowsConfig(_Section):
    """Walk-forward windows on the strategy's table (design section 4)."""

    mode: Literal["rolling", "expanding"] = "rolling"
    train: Size = 756
    test: Size = 21
    step: Size | None = None
    purge: int = Field(5, ge=0)
    embargo: int = Field(0, ge=0)
    short_purge: Literal["error", "warn"] = "error"

    @field_validator("train", "test", "step")
    @classmethod
    def _positive(cls, value: Size | None) -> Size | None:
        if isinstance(value, int) and value <= 0:
            raise ValueError(f"must be > 0, got {value}")
        return value


class SelectionConfig(_Section):
    """How `harness select` chooses the production schedule (design section 8)."""

    metric: str | None = None  # None: the strategy's default (qlike for volatility, mse otherwise)
    alpha: float = Field(0.10, gt=0, lt=1)
    rule: Literal["mcs_stable", "best_pooled", "best_worst_window"] = "mcs_stable"


class TrackingConfig(_Section):
    """MLflow store: a folder (SQLite + artifacts inside) or any MLflow tracking URI."""

    uri: str = "./mlruns"


class ExecutionConfig(_Section):
    """Where windows run."""

    executor: Literal["local", "process", "ray"] = "local"
    workers: int = Field(1, gt=0)
    address: str | None = None


class Config(_Section):
    """A whole backtest. ``Config()`` is the default backtest on the bundled S&P 500 data."""

    experiment: str = "spx-vol-schedules"
    data: DataConfig = Field(default_factory=DataConfig)
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    windows: WindowsConfig = Field(default_factory=WindowsConfig)
    schedules: list[str | dict[str, Any]] = Field(default_factory=lambda: list(DEFAULT_SCHEDULES))
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)

    @field_validator("experiment")
    @classmethod
    def _named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a non-empty name")
        return value

    @field_validator("schedules", mode="before")
    @classmethod
    def _expand_grids(cls, value: Any) -> Any:
        """``{name: cosine, min_lr_ratio: [0, 0.01]}`` is a grid: one schedule per value."""
        from harness.schedules import expand_grid

        return expand_grid(value) if isinstance(value, list) else value

    @field_validator("schedules")
    @classmethod
    def _known_schedules(cls, value: list) -> list:
        from harness.schedules import (
            get_schedule,  # schedules validate their own params
        )

        if not value:
            raise ValueError("must list at least one schedule")
        labels = []
        for i, spec in enumerate(value):
            try:
                labels.append(get_schedule(spec).label)
            except HarnessError as exc:  # raised past pydantic so the message keeps its position
                raise ConfigError(f"schedules[{i}]: {exc}") from None
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise ValueError(f"lists {duplicates[0]} twice; give each schedule different params")
        return value

    @model_validator(mode="after")
    def _schedule_free_needs_adamw(self) -> "Config":
        from harness.schedules import get_schedule

        kinds = {get_schedule(spec).kind for spec in self.schedules}
        if "schedule_free" in kinds and self.training.optimizer != "adamw":
            raise ValueError("schedule_free is an AdamW variant; use training.optimizer: adamw")
        return self

    def schedule_labels(self) -> list[str]:
        """The candidates' labels, the values of the frames' ``schedule`` column: one per schedule x
        budget x LR (``cosine@e80,lr1e-3``); a schedule's own label with one budget and one LR."""
        return [candidate.label for candidate in self.candidates()]

    def candidates(self) -> list[Any]:
        """Every schedule x ``training.epochs`` x ``training.lr`` (:mod:`harness.schedules.candidates`)."""
        from harness.schedules.candidates import candidates

        return candidates(self.schedules, self.training.epochs, self.training.lr)

    def fingerprint(self) -> str:
        """Hash of everything that changes results (not where they are logged or executed)."""
        payload = self.model_dump(mode="json", exclude={"tracking", "execution", "selection"})
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def default_config() -> Config:
    """The default backtest (``harness run`` with no file, an empty file, ``configs/spx_vol.yaml``):
    volatility forecast on :data:`DEFAULT_DATA` from :data:`DEFAULT_START`, so that after the first
    3-year train window about two years of monthly test windows remain (25), each trained under the
    8 default schedules x 3 seeds. Every field is its default; ``data.start: null`` takes the whole
    1999-2018 history (202 windows)."""
    return load_config(None)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read and validate a YAML config; ``None`` gives the default config (as an empty file does).

    ``overrides`` maps dotted field names to values (``{"training.epochs": 5}``) applied
    before validation, so they are validated like the file's own values. A schedule that cannot
    act in this config (:func:`inert_schedules`) is logged as a warning.
    """
    raw: dict[str, Any] = {} if path is None else _read_yaml(Path(path))
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    config = parse_config(raw)
    for message in inert_schedules(config):
        log.warning(message)
    return config


def inert_schedules(config: Config) -> list[str]:
    """One message per schedule that cannot change anything in ``config``: a ``plateau`` whose
    patience is not below early stopping's. Plateau lowers the LR after ``patience + 1`` epochs
    without improvement (and the lower LR is used from the next epoch), early stopping ends a
    member after ``training.patience`` such epochs, so with ``plateau patience + 1 >=
    training.patience`` the member has stopped before its LR is ever lowered: it trains as
    ``constant`` would (bitwise, when its warmup is the same)."""
    from harness.schedules import get_schedule

    stop = config.training.patience
    if stop is None or config.training.validation == 0:  # no early stopping without validation rows
        return []
    messages = []
    for i, spec in enumerate(config.schedules):
        schedule = get_schedule(spec)
        waits = schedule.params["patience"] + 1 if schedule.kind == "plateau" else 0
        if waits >= stop:
            fix = f"give it patience <= {stop - 2} or " if stop >= 2 else ""
            messages.append(
                f"schedules[{i}]: {schedule.label} never lowers the LR: it waits for {waits} epochs without "
                f"improvement, but early stopping (training.patience: {stop}) ends a member after {stop}, so it "
                f"trains as constant would; {fix}raise training.patience to >= {waits + 1}"
            )
    return messages


def parse_config(raw: dict[str, Any]) -> Config:
    """Validate a config dict; errors become one-line :class:`ConfigError`."""
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_first_error_of(exc, Config)) from None
