"""The Python API's inputs: shapes, DataFrame columns and optional scaling checked before training."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from harness.errors import DataError


@dataclass
class Inputs:
    """What :func:`train` was given, kept on its result so that :meth:`TrainResult.predict` checks
    (and scales) the ``X`` it gets the same way.

    Attributes
    ----------
    shape : the features' shape beyond the row count (``(F,)``, or ``(seq, F)`` for gru/lstm).
    columns : a DataFrame ``X_train``'s column names, or None (arrays and tensors have none).
    x_mean, x_std, y_mean, y_std : the train rows' standardization (``scale=True``), else None.
    """

    shape: tuple[int, ...]
    columns: list[str] | None = None
    x_mean: np.ndarray | None = None
    x_std: np.ndarray | None = None
    y_mean: np.ndarray | None = None
    y_std: np.ndarray | None = None

    @classmethod
    def fit(cls, X: Any, y: Any, scale: bool) -> Inputs:
        """Check ``X_train`` and ``y_train`` against each other, remember columns, fit the scaling."""
        x_shape, y_shape = tuple(np.shape(X)), tuple(np.shape(y))
        if len(x_shape) < 2:
            raise DataError(f"X_train: expected shape [n, features] (one row per target), got {list(x_shape)}"
                            f"{'; for one feature pass X_train.reshape(-1, 1)' if len(x_shape) == 1 else ''}")
        if len(y_shape) not in (1, 2):
            raise DataError(f"y_train: expected shape [n], [n, 1] or [n, outputs], got {list(y_shape)}")
        if x_shape[0] != y_shape[0]:
            hint = ("; X_train looks transposed: pass X_train.T" if len(x_shape) == 2 and x_shape[1] == y_shape[0]
                    else "; y_train looks transposed: pass y_train.T" if len(y_shape) == 2 and y_shape[1] == x_shape[0]
                    else "")
            raise DataError(f"X_train, y_train: expected X_train [n, features] and y_train [n] with the same n, got "
                            f"{list(x_shape)} and {list(y_shape)}{hint}")
        columns = [str(c) for c in X.columns] if _is_frame(X) else None
        if columns is not None and len(set(columns)) != len(columns):
            raise DataError(f"X_train: column names repeat ({columns}); give each feature its own name")
        inputs = cls(shape=x_shape[1:], columns=columns)
        if scale:
            x = _floats(X).reshape(-1, x_shape[-1])  # per feature, over rows (and sequence steps)
            t = _floats(y).reshape(len(_floats(y)), -1)
            inputs.x_mean, inputs.x_std = x.mean(axis=0), _nonzero(x.std(axis=0))
            inputs.y_mean, inputs.y_std = t.mean(axis=0), _nonzero(t.std(axis=0))
        return inputs

    def features(self, X: Any, name: str) -> Any:
        """``X`` checked against the training features (shape; columns by name), and scaled."""
        if _is_frame(X) and self.columns is not None:
            names = [str(c) for c in X.columns]
            missing = [c for c in self.columns if c not in names]
            unknown = [c for c in names if c not in self.columns]
            if missing or unknown:
                raise DataError(f"{name}: columns {names} do not match the training columns {self.columns}"
                                f"{f' (missing {missing})' if missing else ''}"
                                f"{f' (not trained on {unknown})' if unknown else ''}; pass the same features")
            if names != self.columns:
                X = X.set_axis(names, axis=1)[self.columns]  # matched by name, whatever the order
        shape = tuple(np.shape(X))
        if shape[1:] != self.shape:
            expected = "[" + ", ".join(["n", *map(str, self.shape)]) + "]"
            what = f"the {self.shape[-1]} features trained on" + (f" ({', '.join(self.columns)})" if self.columns else "")
            hint = (f"; it looks transposed: pass {name}.T" if len(shape) == 2 and shape[::-1][1:] == self.shape
                    else f"; for one row pass {name}.reshape(1, -1)" if shape == self.shape[-1:] and len(self.shape) == 1
                    else "")
            raise DataError(f"{name}: expected shape {expected} (rows x {what}), got {list(shape)}{hint}")
        if self.x_mean is None:
            return X
        return (_floats(X) - self.x_mean) / self.x_std

    def target(self, y: Any, name: str) -> Any:
        """``y`` as the trainer takes it: a column ``[n, 1]`` as ``[n]``; scaled with ``scale=True``."""
        shape = tuple(np.shape(y))
        if len(shape) == 2 and shape[1] == 1:
            y = y.reshape(-1) if isinstance(y, (np.ndarray, torch.Tensor)) else _floats(y).reshape(-1)
        if self.y_mean is None:
            return y
        values = _floats(y)
        return (values - self.y_mean.reshape(values.shape[1:] or ())) / self.y_std.reshape(values.shape[1:] or ())

    def unscale(self, out: np.ndarray) -> np.ndarray:
        """Predictions ``[M, n]`` (or ``[M, n, outputs]``) back in target units."""
        if self.y_mean is None:
            return out
        tail = out.shape[2:] or ()
        return out.astype(np.float64) * self.y_std.reshape(tail) + self.y_mean.reshape(tail)


def _is_frame(values: Any) -> bool:
    """A pandas DataFrame (without importing pandas: if it is not imported, nothing is one)."""
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(values, pandas.DataFrame)


def _floats(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy().astype(np.float64)
    return np.asarray(values, dtype=np.float64)


def _nonzero(std: np.ndarray) -> np.ndarray:
    return np.where(std > 0, std, 1.0)
