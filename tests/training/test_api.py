"""The notebook API, ``harness.train``: targets as [n] or [n, 1], DataFrame columns remembered and
matched by name, wrong shapes as one-line errors naming the expected shape, and ``scale=True``
fitted on the train rows only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import harness
from harness.errors import DataError, HarnessError
from harness.training import Inputs, WindowData, train_windows

SETTINGS = {"model": {"hidden": [8]}, "schedules": ["constant", "cosine"], "seeds": 2, "epochs": 3,
            "batch_size": 32, "lr": 1e-2}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.standard_normal((160, 3)) * [1.0, 10.0, 0.1] + [0.0, 50.0, -1.0],
                     columns=["moneyness", "maturity", "vol"])
    y = 3.0 * X["moneyness"] - 0.1 * X["maturity"] + 20.0 * X["vol"] + 0.1 * rng.standard_normal(160)
    return X, y.to_numpy()


def one_line(info) -> str:
    message = str(info.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------- targets [n] or [n, 1]

def test_a_column_target_trains_like_a_flat_one_with_the_built_in_mlp(data):
    X, y = data
    flat = harness.train(X.to_numpy(), y, **SETTINGS)
    column = harness.train(X.to_numpy(), y[:, None], X_val=X.to_numpy()[:40], y_val=y[:40, None], **SETTINGS)
    again = harness.train(X.to_numpy(), y, X_val=X.to_numpy()[:40], y_val=y[:40], **SETTINGS)
    np.testing.assert_array_equal(column.predict(X.to_numpy()), again.predict(X.to_numpy()))
    np.testing.assert_array_equal(flat.step_loss, harness.train(X.to_numpy(), y[:, None], **SETTINGS).step_loss)
    assert column.predict(X.to_numpy()).shape == (4, 160)  # [M, n], as for a flat target


def test_several_outputs_still_train_as_n_by_k(data):
    X, y = data
    result = harness.train(X.to_numpy(), np.stack([y, -y], axis=1), **SETTINGS)
    assert result.predict(X.to_numpy()).shape == (4, 160, 2)


# ------------------------------------------------------------------- DataFrame columns by name

def test_predict_matches_dataframe_columns_by_name(data):
    X, y = data
    result = harness.train(X, y, **SETTINGS)
    assert result.inputs.columns == ["moneyness", "maturity", "vol"]
    reference = result.predict(X)
    np.testing.assert_array_equal(result.predict(X[["vol", "moneyness", "maturity"]]), reference)
    np.testing.assert_array_equal(result.predict(X.to_numpy()), reference)  # an array: the training order


def test_validation_frame_in_another_column_order_is_reordered(data):
    X, y = data
    in_order = harness.train(X[:120], y[:120], X[120:], y[120:], **SETTINGS)
    permuted = harness.train(X[:120], y[:120], X[120:][["maturity", "vol", "moneyness"]], y[120:], **SETTINGS)
    np.testing.assert_array_equal(in_order.val_loss, permuted.val_loss)


@pytest.mark.parametrize(("columns", "expected"), [
    (["moneyness", "maturity"], r"missing \['vol'\]"),
    (["moneyness", "maturity", "vol", "spot"], r"not trained on \['spot'\]"),
    (["moneyness", "maturity", "volatility"], r"missing \['vol'\].*not trained on \['volatility'\]"),
])
def test_predict_rejects_missing_or_unknown_columns_in_one_line(data, columns, expected):
    X, y = data
    result = harness.train(X, y, **SETTINGS)
    frame = X.reindex(columns=columns, fill_value=1.0)
    with pytest.raises(DataError, match=expected) as info:
        result.predict(frame)
    assert "training columns ['moneyness', 'maturity', 'vol']" in one_line(info)


def test_repeated_column_names_are_an_error(data):
    X, y = data
    with pytest.raises(DataError, match="column names repeat") as info:
        harness.train(X.set_axis(["a", "a", "b"], axis=1), y, **SETTINGS)
    one_line(info)


# ------------------------------------------------------------------- shapes as one-line errors

@pytest.mark.parametrize(("bad", "expected"), [
    (lambda X: X[:, :2], r"X: expected shape \[n, 3\] \(rows x the 3 features trained on\), got \[160, 2\]$"),
    (lambda X: X.T, r"got \[3, 160\]; it looks transposed: pass X.T"),
    (lambda X: X[0], r"got \[3\]; for one row pass X.reshape\(1, -1\)"),
    (lambda X: X[:, :, None], r"expected shape \[n, 3\].*got \[160, 3, 1\]"),
])
def test_predict_names_the_expected_shape(data, bad, expected):
    X, y = data
    result = harness.train(X.to_numpy(), y, **SETTINGS)
    with pytest.raises(DataError, match=expected) as info:
        result.predict(bad(X.to_numpy()))
    one_line(info)


def test_a_frame_trained_model_names_its_features_in_shape_errors(data):
    X, y = data
    result = harness.train(X, y, **SETTINGS)
    with pytest.raises(DataError, match=r"the 3 features trained on \(moneyness, maturity, vol\)"):
        result.predict(X.to_numpy()[:, :2])


@pytest.mark.parametrize(("X", "y", "expected"), [
    (lambda X: X.T, lambda y: y, r"X_train looks transposed: pass X_train.T"),
    (lambda X: X[:, 0], lambda y: y, r"X_train: expected shape \[n, features\].*got \[160\]; for one feature"),
    (lambda X: X, lambda y: y[:, None].T, r"y_train looks transposed: pass y_train.T"),
    (lambda X: X, lambda y: y[:100], r"expected X_train \[n, features\] and y_train \[n\] with the same n, got "
                                     r"\[160, 3\] and \[100\]"),
    (lambda X: X, lambda y: y[:, None, None], r"y_train: expected shape \[n\], \[n, 1\] or \[n, outputs\]"),
])
def test_train_names_the_expected_shapes(data, X, y, expected):
    features, target = data
    with pytest.raises(DataError, match=expected) as info:
        harness.train(X(features.to_numpy()), y(target), **SETTINGS)
    one_line(info)


def test_validation_features_are_checked_like_predict_inputs(data):
    X, y = data
    with pytest.raises(DataError, match=r"X_val: expected shape \[n, 3\]"):
        harness.train(X.to_numpy(), y, X.to_numpy()[:, :2], y, **SETTINGS)


# --------------------------------------------------------------------------------- scale=True

def test_without_scale_the_data_is_used_as_given_bitwise(data):
    X, y = data
    alone = harness.train(X.to_numpy(), y, **SETTINGS)
    direct = train_windows([WindowData(X.to_numpy(), y)], **SETTINGS)[0]
    np.testing.assert_array_equal(alone.step_loss, direct.step_loss)
    np.testing.assert_array_equal(alone.predict(X.to_numpy()), direct.predict(X.to_numpy()))
    assert alone.inputs.x_mean is None and direct.inputs is None


def test_scale_is_fitted_on_the_train_rows_only_and_predicts_in_target_units(data):
    X, y = data
    train_rows, val_rows = slice(0, 120), slice(120, 160)
    scaled = harness.train(X[train_rows], y[train_rows], X[val_rows], y[val_rows], scale=True, **SETTINGS)
    inputs = scaled.inputs
    np.testing.assert_allclose(inputs.x_mean, X[train_rows].mean().to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(inputs.x_std, X[train_rows].std(ddof=0).to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(inputs.y_mean, [y[train_rows].mean()], rtol=1e-12)
    # the same as standardizing by hand with the train rows' numbers
    x_mean, x_std = X[train_rows].mean().to_numpy(), X[train_rows].std(ddof=0).to_numpy()
    y_mean, y_std = y[train_rows].mean(), y[train_rows].std()
    by_hand = harness.train((X[train_rows].to_numpy() - x_mean) / x_std, (y[train_rows] - y_mean) / y_std,
                            (X[val_rows].to_numpy() - x_mean) / x_std, (y[val_rows] - y_mean) / y_std, **SETTINGS)
    np.testing.assert_array_equal(scaled.val_loss, by_hand.val_loss)
    expected = by_hand.predict((X.to_numpy() - x_mean) / x_std) * y_std + y_mean
    np.testing.assert_allclose(scaled.predict(X), expected, rtol=1e-12)
    # validation rows change nothing fitted: garbage there leaves the scaling as it was
    garbage = harness.train(X[train_rows], y[train_rows], X[val_rows] * 1e3, y[val_rows] * 1e3, scale=True, **SETTINGS)
    np.testing.assert_array_equal(garbage.inputs.x_mean, inputs.x_mean)
    np.testing.assert_array_equal(garbage.inputs.y_std, inputs.y_std)


def test_scale_helps_on_features_of_very_different_sizes(data):
    X, y = data
    settings = {**SETTINGS, "epochs": 30, "seeds": 1, "schedules": ["cosine"]}
    raw = harness.train(X[:120], y[:120], **settings)
    scaled = harness.train(X[:120], y[:120], scale=True, **settings)
    error = {name: np.mean((result.predict(X[120:])[0] - y[120:]) ** 2) for name, result in
             (("raw", raw), ("scaled", scaled))}
    assert error["scaled"] < 0.5 * error["raw"], error


def test_scale_handles_constant_features_and_several_outputs(data):
    X, y = data
    flat = X.assign(vol=1.0)
    result = harness.train(flat, np.stack([y, 2 * y], axis=1), scale=True, **SETTINGS)
    assert result.inputs.x_std[2] == 1.0 and result.inputs.y_mean.shape == (2,)
    assert np.isfinite(result.predict(flat)).all() and result.predict(flat).shape == (4, 160, 2)


def test_scale_must_be_a_bool(data):
    X, y = data
    with pytest.raises(HarnessError, match="scale: must be True or False, got 'yes'"):
        harness.train(X, y, scale="yes", **SETTINGS)


def test_inputs_is_exported():
    assert harness.training.Inputs is Inputs
