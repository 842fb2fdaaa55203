"""Result figures: real PNGs read back, and the cumulative errors against a loop reference."""

from __future__ import annotations

import matplotlib
import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from harness import figures
from harness.errors import HarnessError

PALETTE = matplotlib.colormaps["tab10"].colors
SINGLE_PX = (450, 800)  # figures.SINGLE inches x figures.DPI
DOUBLE_PX = (750, 800)


def read_png(path):
    image = matplotlib.image.imread(path)
    assert image.dtype == np.float32 and image.ndim == 3 and image.shape[2] in (3, 4)
    return image[..., :3]


def count_color(image, color, tolerance=0.02):
    return int(np.sum(np.all(np.abs(image - np.asarray(color)) < tolerance, axis=-1)))


def has_color(image, color):
    return count_color(image, color) > 0


def inked(image):
    """Pixels that are not white: how much was drawn."""
    return int(np.sum(np.any(image < 0.98, axis=-1)))


def window_frames(labels=("constant", "cosine", "wsd"), windows=12, seeds=3, seed=0):
    rng = np.random.default_rng(seed)
    per_seed = pd.MultiIndex.from_product(
        [range(windows), labels, range(seeds), ["rmse", "mae"]], names=["window", "schedule", "seed", "metric"]
    ).to_frame(index=False)
    per_seed["value"] = 1.0 + rng.random(len(per_seed))
    seed_mean = per_seed.groupby(["window", "schedule", "metric"], as_index=False, sort=False)["value"].mean()
    return seed_mean, per_seed


def predictions_frame(labels=("constant", "cosine"), seeds=3, days=15, rows_per_day=2, seed=1):
    """Rows sharing a date (an option chain), a NaN member, windows of 5 days."""
    rng = np.random.default_rng(seed)
    dates = np.repeat(pd.bdate_range("2022-03-01", periods=days), rows_per_day)
    target = rng.normal(size=dates.size)
    baseline = target + rng.normal(scale=0.8, size=dates.size)
    frames = []
    for k, label in enumerate(labels):
        for s in range(seeds):
            prediction = target + rng.normal(scale=0.2 + 0.3 * k, size=dates.size)
            frames.append(pd.DataFrame({
                "date": dates, "window": np.arange(dates.size) // (5 * rows_per_day), "schedule": label,
                "seed": s, "prediction": prediction, "target": target, "baseline": baseline,
            }))
    out = pd.concat(frames, ignore_index=True)
    out.loc[3, "prediction"] = np.nan  # a diverged member on one row
    return out


def reference_cumulative(predictions):
    """Plain loops: seed-mean per (date, row in date), squared error, summed per date, accumulated."""
    dates = sorted(predictions["date"].unique())
    labels = list(dict.fromkeys(predictions["schedule"]))
    out = {label: [] for label in [*labels, "baseline"]}
    for label in labels:
        rows = predictions[predictions["schedule"] == label]
        total = base_total = 0.0
        for date in dates:
            day = rows[rows["date"] == date]
            by_seed = [day[day["seed"] == s].reset_index(drop=True) for s in sorted(day["seed"].unique())]
            for k in range(len(by_seed[0])):
                members = [frame.loc[k, "prediction"] for frame in by_seed]
                finite = [value for value in members if not np.isnan(value)]
                if finite:  # a row where every member diverged adds nothing
                    total += (np.mean(finite) - by_seed[0].loc[k, "target"]) ** 2
                base_total += (by_seed[0].loc[k, "baseline"] - by_seed[0].loc[k, "target"]) ** 2
            out[label].append(total)
            if label == labels[0]:
                out["baseline"].append(base_total)
    return pd.DataFrame(out, index=pd.DatetimeIndex(dates, name="date"))


# --- window metrics and LR curves --------------------------------------------------------------


def test_window_metrics_png_has_one_line_per_schedule(tmp_path):
    seed_mean, _ = window_frames()
    one = read_png(figures.plot_window_metrics(seed_mean, "rmse", tmp_path / "one.png", schedules=["cosine"]))
    three = read_png(figures.plot_window_metrics(seed_mean, "rmse", tmp_path / "all.png"))
    assert one.shape[:2] == SINGLE_PX and three.shape[:2] == SINGLE_PX
    assert has_color(one, PALETTE[0]) and not has_color(one, PALETTE[1])
    assert all(has_color(three, color) for color in PALETTE[:3]) and not has_color(three, PALETTE[3])
    assert inked(three) > inked(one)


def test_the_seed_band_is_drawn_when_per_seed_metrics_are_given(tmp_path):
    seed_mean, per_seed = window_frames(labels=("cosine",))
    plain = read_png(figures.plot_window_metrics(seed_mean, "mae", tmp_path / "plain.png"))
    banded = read_png(figures.plot_window_metrics(seed_mean, "mae", tmp_path / "band.png", per_seed=per_seed))
    tint = 0.2 * np.asarray(PALETTE[0]) + 0.8  # the line colour at alpha 0.2 over white
    assert count_color(plain, tint) < 1000 < 20000 < count_color(banded, tint)


def test_unknown_metric_or_schedule_names_the_valid_ones(tmp_path):
    seed_mean, _ = window_frames()
    with pytest.raises(HarnessError, match=r"unknown metric 'rmce' \(did you mean 'rmse'\?\); valid: mae, rmse"):
        figures.plot_window_metrics(seed_mean, "rmce", tmp_path / "x.png")
    with pytest.raises(HarnessError, match="unknown schedule 'cosin' \\(did you mean 'cosine'\\?\\)"):
        figures.plot_window_metrics(seed_mean, "rmse", tmp_path / "x.png", schedules=["cosin"])
    assert not (tmp_path / "x.png").exists()


def test_lr_curve_pngs(tmp_path):
    steps = np.arange(200)
    curves = {
        "constant": np.full(200, 1e-3),
        "cosine": 1e-3 * 0.5 * (1 + np.cos(np.pi * steps / 200)),
        "step": 1e-3 * 0.1 ** (steps // 66),
    }
    single = read_png(figures.plot_lr_curve(curves["cosine"], tmp_path / "nested" / "one.png", "cosine"))
    many = read_png(figures.plot_lr_curves(curves, tmp_path / "many.png"))
    assert single.shape[:2] == SINGLE_PX and many.shape[:2] == SINGLE_PX
    assert all(has_color(many, color) for color in PALETTE[:3])
    assert inked(many) > inked(single)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        figures.plot_lr_curve(np.ones((2, 3)), tmp_path / "bad.png", "bad")


def test_comparison_has_two_panels(tmp_path):
    seed_mean, per_seed = window_frames()
    curves = {label: np.linspace(1e-3, 1e-5, 100) * (k + 1) for k, label in enumerate(["constant", "cosine", "wsd"])}
    image = read_png(figures.plot_comparison(seed_mean, curves, "rmse", tmp_path / "cmp.png", per_seed=per_seed))
    assert image.shape[:2] == DOUBLE_PX
    top, bottom = image[: DOUBLE_PX[0] // 2], image[DOUBLE_PX[0] // 2:]
    for half in (top, bottom):
        assert all(has_color(half, color) for color in PALETTE[:3])


# --- errors and equity -------------------------------------------------------------------------


@pytest.mark.parametrize(("seeds", "rows_per_day"), [(1, 1), (3, 1), (3, 2), (2, 4)])
def test_cumulative_errors_match_a_loop_reference(seeds, rows_per_day):
    predictions = predictions_frame(seeds=seeds, rows_per_day=rows_per_day)
    got = figures.cumulative_errors(predictions)
    expected = reference_cumulative(predictions)
    assert list(got.columns) == ["constant", "cosine", "baseline"]
    pd.testing.assert_index_equal(got.index, expected.index, exact=False)
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=1e-12)
    assert (np.diff(got.to_numpy(), axis=0) >= 0).all()  # squared errors only add up


def test_cumulative_errors_do_not_depend_on_row_order():
    predictions = predictions_frame(seeds=3, rows_per_day=1)
    shuffled = predictions.sample(frac=1.0, random_state=0)
    pd.testing.assert_frame_equal(figures.cumulative_errors(shuffled), figures.cumulative_errors(predictions))


def test_errors_png(tmp_path):
    image = read_png(figures.plot_errors(predictions_frame(), tmp_path / "errors.png"))
    assert image.shape[:2] == DOUBLE_PX
    assert has_color(image, PALETTE[0]) and has_color(image, PALETTE[1]) and has_color(image, (0, 0, 0))
    with pytest.raises(HarnessError, match="no predictions"):
        figures.plot_errors(predictions_frame().iloc[:0], tmp_path / "empty.png")


def test_equity_png(tmp_path):
    dates = pd.bdate_range("2020-01-01", periods=250)
    rng = np.random.default_rng(3)
    equity = {label: pd.Series(np.cumprod(1 + rng.normal(0, 0.01, dates.size)), index=dates)
              for label in ("constant", "cosine")}
    image = read_png(figures.plot_equity(equity, tmp_path / "equity.png"))
    assert image.shape[:2] == SINGLE_PX
    assert has_color(image, PALETTE[0]) and has_color(image, PALETTE[1])
    with pytest.raises(HarnessError, match="no equity curves"):
        figures.plot_equity({}, tmp_path / "none.png")


def test_backtest_figures_are_the_files_of_the_parent_and_of_each_schedule_run(tmp_path):
    labels = ["constant", "cosine", "wsd"]
    seed_mean, per_seed = window_frames(labels=tuple(labels))
    predictions = predictions_frame(labels=tuple(labels))
    curves = {label: np.linspace(1e-3, 1e-5, 60) * (k + 1) for k, label in enumerate(labels)}
    parent, schedules = figures.backtest_figures({"selection": {"metric": "mae"}}, per_seed, seed_mean, predictions,
                                                 curves, labels, tmp_path / "drawn")
    assert list(parent) == ["comparison.png", "errors.png"] and list(schedules) == labels
    assert read_png(parent["comparison.png"]).shape[:2] == DOUBLE_PX
    assert read_png(parent["errors.png"]).shape[:2] == DOUBLE_PX
    assert all(list(own) == ["lr_curve.png", "window_metrics.png"] for own in schedules.values())
    assert read_png(schedules["wsd"]["lr_curve.png"]).shape[:2] == SINGLE_PX
    files = [*parent.values(), *(path for own in schedules.values() for path in own.values())]
    assert len(set(files)) == len(files) and all(path.is_relative_to(tmp_path / "drawn") for path in files)
    # the headline metric is selection.metric when it was scored, else rmse
    mae = figures.plot_window_metrics(seed_mean[seed_mean["schedule"] == "cosine"], "mae", tmp_path / "mae.png",
                                      per_seed=per_seed[per_seed["schedule"] == "cosine"])
    np.testing.assert_array_equal(read_png(schedules["cosine"]["window_metrics.png"]), read_png(mae))
    _, fallback = figures.backtest_figures({"selection": {"metric": "qlike"}}, per_seed, seed_mean, predictions,
                                           curves, labels, tmp_path / "fallback")
    rmse = figures.plot_window_metrics(seed_mean[seed_mean["schedule"] == "cosine"], "rmse", tmp_path / "rmse.png",
                                       per_seed=per_seed[per_seed["schedule"] == "cosine"])
    np.testing.assert_array_equal(read_png(fallback["cosine"]["window_metrics.png"]), read_png(rmse))


def test_backtest_figures_of_a_backtest_without_rows_are_only_lr_curves(tmp_path):
    seed_mean, per_seed = window_frames(labels=("constant",))
    parent, schedules = figures.backtest_figures({}, per_seed.iloc[:0], seed_mean.iloc[:0],
                                                 predictions_frame(labels=("constant",)).iloc[:0],
                                                 {"constant": np.ones(10)}, ["constant"], tmp_path)
    assert parent == {} and list(schedules["constant"]) == ["lr_curve.png"]
