"""Result figures: real PNGs read back; what a quant reads in them (dates on the per-window axes,
the baseline beside the schedules, legends clear of the data, labels that do not collide, a
visible seed band), checked on the Figure objects; and the cumulative errors against a loop
reference. One real tiny backtest (return_forecast, so equity.png with buy-and-hold) is drawn end
to end."""

from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace

import matplotlib
import matplotlib.dates as mdates
import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection

from harness import figures
from harness.errors import HarnessError
from harness.evaluation import metrics as M

PALETTE = matplotlib.colormaps["tab10"].colors
SINGLE_PX = (450, 800)  # figures.SINGLE inches x figures.DPI
DOUBLE_PX = (750, 800)
LONG_LABELS = [f"{name}(min_lr_ratio=0.01, warmup=0.{k})" for k, name in enumerate(
    ["cosine", "linear", "wsd_cosine", "onecycle", "polynomial", "step_decay", "cyclical", "inverse_sqrt"])]


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


def predictions_frame(labels=("constant", "cosine"), seeds=3, days=15, rows_per_day=2, seed=1, window_days=5):
    """Rows sharing a date (an option chain), a NaN member, windows of ``window_days`` days."""
    rng = np.random.default_rng(seed)
    dates = np.repeat(pd.bdate_range("2022-03-01", periods=days), rows_per_day)
    target = rng.normal(size=dates.size)
    baseline = target + rng.normal(scale=0.8, size=dates.size)
    frames = []
    for k, label in enumerate(labels):
        for s in range(seeds):
            prediction = target + rng.normal(scale=0.2 + 0.3 * k, size=dates.size)
            frames.append(pd.DataFrame({
                "date": dates, "window": np.arange(dates.size) // (window_days * rows_per_day), "schedule": label,
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


def reference_baseline(predictions, metric):
    """The baseline's metric per window by plain loops over one member's rows."""
    first = predictions[(predictions["schedule"] == predictions["schedule"].iloc[0]) & (predictions["seed"] == 0)]
    out = {}
    for window in sorted(first["window"].unique()):
        rows = first[first["window"] == window]
        err = rows["baseline"].to_numpy() - rows["target"].to_numpy()
        out[window] = {"rmse": np.sqrt(np.mean(err ** 2)), "mae": np.mean(np.abs(err))}[metric]
    return pd.Series(out)


# --- what a quant reads at a glance: checks on a drawn Figure ---------------------------------------


def drawn(fig):
    """Lay ``fig`` out as savefig does; return its renderer."""
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    return renderer


def assert_legends_clear_of_the_data(fig):
    """Every legend lies outside every axes' plotting area, and inside the figure (not cut off)."""
    renderer = drawn(fig)
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(fig.legends)
    assert legends, "the figure has no legend"
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), (legend, ax.get_title())
        assert 0 <= box.x0 and box.x1 <= fig.bbox.width and 0 <= box.y0 and box.y1 <= fig.bbox.height


def assert_disjoint(texts, renderer):
    boxes = [text.get_window_extent(renderer) for text in texts if text.get_visible() and text.get_text()]
    assert len(boxes) >= 2
    for (i, a), (j, b) in itertools.combinations(enumerate(boxes), 2):
        assert not a.overlaps(b), f"tick labels {i} and {j} overlap"


def assert_date_axis(ax, first, last):
    """The x axis holds dates: a date formatter, tick labels that parse as dates inside the data's
    range (give or take the margins), and limits that are those dates."""
    assert isinstance(ax.xaxis.get_major_formatter(), mdates.ConciseDateFormatter)
    assert isinstance(ax.xaxis.get_major_locator(), mdates.AutoDateLocator)
    low, high = (pd.Timestamp(d).tz_localize(None) for d in mdates.num2date(ax.get_xlim()))
    span = pd.Timestamp(last) - pd.Timestamp(first)
    assert first - 0.1 * span <= low <= first <= last <= high <= last + 0.1 * span
    renderer = drawn(ax.figure)
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    parsed = [pd.to_datetime(text, format="%b %Y" if " " in text else "%Y") for text in labels]
    assert len(parsed) >= 3 and all(low - pd.Timedelta(days=366) <= d <= high for d in parsed)
    assert_disjoint(ax.get_xticklabels(), renderer)


def lines_labelled(ax, label):
    return [line for line in ax.get_lines() if line.get_label() == label]


def dated_frames(labels=("constant", "cosine", "wsd"), windows=8, days=10):
    """Per-window metrics and predictions that agree: windows of ``days`` business days from 2022."""
    predictions = predictions_frame(labels=labels, days=windows * days, rows_per_day=1, window_days=days)
    seed_mean, per_seed = window_frames(labels=labels, windows=windows)
    return seed_mean, per_seed, predictions


# --- window metrics -------------------------------------------------------------------------------


def test_window_metrics_png_has_one_line_per_schedule(tmp_path):
    seed_mean, _ = window_frames()
    one = read_png(figures.plot_window_metrics(seed_mean, "rmse", tmp_path / "one.png", schedules=["cosine"]))
    three = read_png(figures.plot_window_metrics(seed_mean, "rmse", tmp_path / "all.png"))
    assert one.shape[:2] == SINGLE_PX and three.shape[:2] == SINGLE_PX
    assert has_color(one, PALETTE[0]) and not has_color(one, PALETTE[1])
    assert all(has_color(three, color) for color in PALETTE[:3]) and not has_color(three, PALETTE[3])
    assert inked(three) > inked(one)


def test_window_metrics_put_each_window_at_its_first_test_date_with_the_baseline(tmp_path):
    seed_mean, per_seed, predictions = dated_frames()
    starts = figures.window_starts(predictions)
    assert list(starts.index) == list(range(8))
    assert (starts == predictions.groupby("window")["date"].min()).all()
    baseline = figures.baseline_window_metric(predictions, "rmse")
    pd.testing.assert_series_equal(baseline, reference_baseline(predictions, "rmse"), check_names=False,
                                   check_index_type=False)
    fig = figures.window_metrics_figure(seed_mean, "rmse", ["cosine"], per_seed, dates=starts, baseline=baseline)
    ax = fig.axes[0]
    assert_date_axis(ax, starts.iloc[0], starts.iloc[-1])
    assert ax.get_xlabel() == "first out-of-sample date of the window"
    (line,) = lines_labelled(ax, "cosine")
    np.testing.assert_array_equal(line.get_xdata(), starts.to_numpy())
    (base,) = lines_labelled(ax, "baseline")
    assert base.get_color() == "black" and base.get_linestyle() == "--"
    np.testing.assert_allclose(base.get_ydata(), baseline.to_numpy())
    np.testing.assert_array_equal(base.get_xdata(), starts.to_numpy())
    assert_legends_clear_of_the_data(fig)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["cosine", "baseline", "min-max over seeds"]
    image = read_png(figures.save_png(fig, tmp_path / "w.png"))
    assert image.shape[:2] == SINGLE_PX and has_color(image, (0, 0, 0)) and has_color(image, PALETTE[0])


def test_save_png_draws_a_constrained_figure_once_and_writes_the_pixels_savefig_writes(tmp_path):
    seed_mean, per_seed = window_frames()
    starts = pd.Series(pd.date_range("2020-01-02", periods=seed_mean["window"].nunique(), freq="21B"))

    def make():
        fig = figures.window_metrics_figure(seed_mean, "rmse", ["cosine"], per_seed, dates=starts)
        draws = []
        draw = fig.draw
        fig.draw = lambda renderer: (draws.append(1), draw(renderer))[1]  # counts the figure's draws
        return fig, draws

    plain, plain_draws = make()
    assert plain.get_layout_engine() is not None
    plain.savefig(tmp_path / "plain.png", dpi=figures.DPI, format="png")  # a dry run to lay out, then the draw
    fig, draws = make()
    mine = read_png(figures.save_png(fig, tmp_path / "mine.png"))
    assert len(draws) == 1 and len(plain_draws) == 2
    np.testing.assert_array_equal(mine, read_png(tmp_path / "plain.png"))


def test_without_dates_the_windows_are_numbered():
    seed_mean, _ = window_frames()
    ax = figures.window_metrics_figure(seed_mean, "rmse").axes[0]
    assert ax.get_xlabel() == "window" and not lines_labelled(ax, "baseline")
    assert not isinstance(ax.xaxis.get_major_formatter(), mdates.ConciseDateFormatter)
    # a dates mapping that lacks a window falls back to numbers too
    partial = pd.Series(pd.bdate_range("2022-01-03", periods=5), index=range(5))
    assert figures.window_metrics_figure(seed_mean, "rmse", dates=partial).axes[0].get_xlabel() == "window"


def test_the_seed_band_is_visible_under_its_line(tmp_path):
    seed_mean, per_seed = window_frames(labels=("cosine",))
    plain = read_png(figures.plot_window_metrics(seed_mean, "mae", tmp_path / "plain.png"))
    banded = read_png(figures.plot_window_metrics(seed_mean, "mae", tmp_path / "band.png", per_seed=per_seed))
    tint = 0.25 * np.asarray(PALETTE[0]) + 0.75  # the line colour at alpha 0.25 over white
    assert count_color(plain, tint) < 1000 and count_color(banded, tint) > 20000
    ax = figures.window_metrics_figure(seed_mean, "mae", per_seed=per_seed).axes[0]
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    (line,) = lines_labelled(ax, "cosine")
    assert band.get_alpha() >= 0.2 and band.get_zorder() < line.get_zorder()
    # the band spans min..max over seeds in each window
    values = per_seed[per_seed["metric"] == "mae"].groupby("window")["value"]
    vertices = band.get_paths()[0].vertices[:, 1]
    assert vertices.min() == pytest.approx(values.min().min()) and vertices.max() == pytest.approx(values.max().max())


def test_unknown_metric_or_schedule_names_the_valid_ones(tmp_path):
    seed_mean, _ = window_frames()
    with pytest.raises(HarnessError, match=r"unknown metric 'rmce' \(did you mean 'rmse'\?\); valid: mae, rmse"):
        figures.plot_window_metrics(seed_mean, "rmce", tmp_path / "x.png")
    with pytest.raises(HarnessError, match="unknown schedule 'cosin' \\(did you mean 'cosine'\\?\\)"):
        figures.plot_window_metrics(seed_mean, "rmse", tmp_path / "x.png", schedules=["cosin"])
    assert not (tmp_path / "x.png").exists()


def test_the_baseline_of_a_strategy_metric_needs_the_strategy():
    predictions = predictions_frame()
    assert figures.baseline_window_metric(predictions, "hit_rate") is None
    strategy = SimpleNamespace(metrics=lambda y, p, b, test: {"hit_rate": float(np.mean(np.sign(p) == np.sign(y)))})
    got = figures.baseline_window_metric(predictions, "hit_rate", strategy=strategy)
    first = predictions[(predictions["schedule"] == "constant") & (predictions["seed"] == 0)]
    expected = first.groupby("window").apply(lambda g: np.mean(np.sign(g["baseline"]) == np.sign(g["target"])),
                                             include_groups=False)
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy())
    assert figures.baseline_window_metric(predictions, "sharpe", strategy=strategy) is None  # not scored


# --- LR curves and the comparison -----------------------------------------------------------------


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
    ax = figures.lr_curve_figure(curves["step"], "step", steps=figures.backtest.STEP_FRESH).axes[0]
    assert ax.get_xlabel() == "optimizer step (one window; every window restarts the schedule)"


def test_comparison_has_dates_and_the_baseline_on_top_and_lr_curves_below(tmp_path):
    labels = ("constant", "cosine", "wsd")
    seed_mean, per_seed, predictions = dated_frames(labels)
    starts, baseline = figures.window_starts(predictions), figures.baseline_window_metric(predictions, "rmse")
    curves = {label: np.linspace(1e-3, 1e-5, 100) * (k + 1) for k, label in enumerate(labels)}
    fig = figures.comparison_figure(seed_mean, curves, "rmse", per_seed, dates=starts, baseline=baseline)
    top, bottom = fig.axes
    assert_date_axis(top, starts.iloc[0], starts.iloc[-1])
    assert len(lines_labelled(top, "baseline")) == 1 and all(lines_labelled(top, label) for label in labels)
    assert bottom.get_xlabel() == "optimizer step" and bottom.get_legend() is None  # one legend, the top's
    assert_legends_clear_of_the_data(fig)
    image = read_png(figures.save_png(fig, tmp_path / "cmp.png"))
    assert image.shape[:2] == DOUBLE_PX
    for half in (image[: DOUBLE_PX[0] // 2], image[DOUBLE_PX[0] // 2:]):
        assert all(has_color(half, color) for color in PALETTE[:3])


def test_eight_long_labels_stay_clear_of_the_data_in_a_wrapped_legend():
    labels = tuple(LONG_LABELS)
    seed_mean, per_seed, predictions = dated_frames(labels)
    curves = {label: np.linspace(1e-3, 1e-5, 50) for label in labels}
    fig = figures.comparison_figure(seed_mean, curves, "rmse", per_seed, dates=figures.window_starts(predictions),
                                    baseline=figures.baseline_window_metric(predictions, "rmse"))
    assert_legends_clear_of_the_data(fig)
    texts = fig.axes[0].get_legend().get_texts()
    assert all(max(len(line) for line in t.get_text().split("\n")) <= figures.common.LABEL_WIDTH + 8 for t in texts)
    assert_disjoint(texts, drawn(fig))
    assert fig.axes[0].get_window_extent(drawn(fig)).width > 400  # the data keeps most of the width


def test_wrap_label_breaks_after_commas():
    assert figures.wrap_label("constant") == "constant"
    assert figures.wrap_label("cosine(min_lr_ratio=0.01, warmup=0.05)") == "cosine(min_lr_ratio=0.01,\nwarmup=0.05)"
    step = "step(milestones=[0.3,0.6,0.9],gamma=0.1)"
    assert figures.wrap_label(step) == "step(milestones=[0.3,0.6,\n0.9],gamma=0.1)"
    assert all(len(line) <= 26 for line in figures.wrap_label("x" * 70).split("\n"))


# --- errors and equity ----------------------------------------------------------------------------


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


def test_errors_png_is_dated_with_the_baseline(tmp_path):
    predictions = predictions_frame(days=120)
    fig = figures.errors_figure(predictions)
    top, bottom = fig.axes
    dates = pd.DatetimeIndex(predictions["date"])
    assert_date_axis(bottom, dates.min(), dates.max())
    assert bottom.get_xlabel() == "out-of-sample date"
    (base,) = lines_labelled(top, "baseline")
    assert base.get_color() == "black" and base.get_linestyle() == "--"
    assert_legends_clear_of_the_data(fig)
    image = read_png(figures.save_png(fig, tmp_path / "errors.png"))
    assert image.shape[:2] == DOUBLE_PX
    assert has_color(image, PALETTE[0]) and has_color(image, PALETTE[1]) and has_color(image, (0, 0, 0))
    with pytest.raises(HarnessError, match="no predictions"):
        figures.plot_errors(predictions_frame().iloc[:0], tmp_path / "empty.png")


def test_equity_png_with_buy_and_hold(tmp_path):
    dates = pd.bdate_range("2020-01-01", periods=250)
    rng = np.random.default_rng(3)
    equity = {label: pd.Series(np.cumprod(1 + rng.normal(0, 0.01, dates.size)), index=dates)
              for label in ("constant", "cosine")}
    hold = pd.Series(np.cumprod(1 + rng.normal(0, 0.01, dates.size)), index=dates)
    fig = figures.equity_figure(equity, hold)
    ax = fig.axes[0]
    assert_date_axis(ax, dates[0], dates[-1])
    (line,) = lines_labelled(ax, "buy and hold")
    np.testing.assert_allclose(line.get_ydata(), hold.to_numpy())
    assert_legends_clear_of_the_data(fig)
    image = read_png(figures.plot_equity(equity, tmp_path / "equity.png", buy_and_hold=hold))
    assert image.shape[:2] == SINGLE_PX
    assert has_color(image, PALETTE[0]) and has_color(image, PALETTE[1]) and has_color(image, (0, 0, 0))
    assert not lines_labelled(figures.equity_figure(equity).axes[0], "buy and hold")
    with pytest.raises(HarnessError, match="no equity curves"):
        figures.plot_equity({}, tmp_path / "none.png")


# --- the set of files: from frames, and from a real backtest ----------------------------------------


def test_frame_figures_are_the_files_of_the_parent_and_of_each_schedule_run(tmp_path):
    labels = ["constant", "cosine", "wsd"]
    seed_mean, per_seed, predictions = dated_frames(tuple(labels))
    curves = {label: np.linspace(1e-3, 1e-5, 60) * (k + 1) for k, label in enumerate(labels)}
    config = {"selection": {"metric": "mae"}}
    parent, schedules = figures.frame_figures(config, per_seed, seed_mean, predictions, curves, labels,
                                              tmp_path / "drawn")
    assert list(parent) == ["comparison.png", "errors.png"] and list(schedules) == labels
    assert read_png(parent["comparison.png"]).shape[:2] == DOUBLE_PX
    assert read_png(parent["errors.png"]).shape[:2] == DOUBLE_PX
    assert all(list(own) == ["lr_curve.png", "window_metrics.png"] for own in schedules.values())
    assert read_png(schedules["wsd"]["lr_curve.png"]).shape[:2] == SINGLE_PX
    files = [*parent.values(), *(path for own in schedules.values() for path in own.values())]
    assert len(set(files)) == len(files) and all(path.is_relative_to(tmp_path / "drawn") for path in files)
    # the headline metric is selection.metric when it was scored (else rmse), with dates and the baseline
    mae = figures.plot_window_metrics(
        seed_mean[seed_mean["schedule"] == "cosine"], "mae", tmp_path / "mae.png",
        per_seed=per_seed[per_seed["schedule"] == "cosine"], dates=figures.window_starts(predictions),
        baseline=figures.baseline_window_metric(predictions, "mae"))
    np.testing.assert_array_equal(read_png(schedules["cosine"]["window_metrics.png"]), read_png(mae))


def test_frame_figures_of_a_backtest_without_rows_are_only_lr_curves(tmp_path):
    seed_mean, per_seed = window_frames(labels=("constant",))
    parent, schedules = figures.frame_figures({}, per_seed.iloc[:0], seed_mean.iloc[:0],
                                              predictions_frame(labels=("constant",)).iloc[:0],
                                              {"constant": np.ones(10)}, ["constant"], tmp_path)
    assert parent == {} and list(schedules["constant"]) == ["lr_curve.png"]


@pytest.fixture(scope="module")
def backtest(tmp_path_factory):
    """A real tiny backtest: return_forecast (a trading view) on 1.5 years of S&P 500, 7 windows."""
    import torch

    from harness.backtest import run_backtest
    from harness.config import parse_config
    from tests.conftest import small_config

    torch.set_num_threads(1)
    raw = small_config(tmp_path_factory.mktemp("bt"), data={"end": "2012-06-30"},
                       strategy={"name": "return_forecast", "params": {"horizon": 1, "momentum": [21, 63]}},
                       windows={"train": 252, "test": 42, "purge": 1}, model={"hidden": [4]},
                       training={"epochs": 1, "seeds": 2, "batch_size": 64})
    return run_backtest(parse_config(raw), progress=False)


@pytest.mark.slow  # the module's real backtest: ~2 s to train, once
def test_backtest_figures_of_a_real_backtest(backtest, tmp_path):
    parent, schedules = figures.backtest_figures(backtest, tmp_path)
    assert list(parent) == ["comparison.png", "errors.png", "equity.png"] and list(schedules) == backtest.labels
    sizes = {"comparison.png": DOUBLE_PX, "errors.png": DOUBLE_PX, "equity.png": SINGLE_PX,
             "lr_curve.png": SINGLE_PX, "window_metrics.png": SINGLE_PX}
    for name, path in [*parent.items(), *((n, p) for own in schedules.values() for n, p in own.items())]:
        image = read_png(path)
        assert image.shape[:2] == sizes[name] and image.std() > 0.01, name
        assert has_color(image, (0, 0, 0)), f"{name} draws no baseline"  # black: baseline / buy and hold
    assert backtest.n_windows >= 6
    # a schedule's window_metrics.png: the selection metric (the strategy's default here), dated, with the baseline
    metric, label = backtest.metric, backtest.labels[1]
    assert metric == "mse"
    own = figures.plot_window_metrics(
        backtest.seed_mean_metrics[backtest.seed_mean_metrics["schedule"] == label], metric, tmp_path / "own.png",
        per_seed=backtest.metrics[backtest.metrics["schedule"] == label],
        dates=figures.window_starts(backtest.predictions),
        baseline=figures.baseline_window_metric(backtest.predictions, metric))
    np.testing.assert_array_equal(read_png(schedules[label]["window_metrics.png"]), read_png(own))


@pytest.mark.slow  # the module's real backtest: ~2 s to train, once
def test_buy_and_hold_is_the_compounded_target_less_the_entry_cost(backtest):
    hold = figures.buy_and_hold(backtest)
    first = backtest.predictions[(backtest.predictions["schedule"] == backtest.labels[0])
                                 & (backtest.predictions["seed"] == 0)]
    assert len(hold) == len(first) and (hold.index == pd.DatetimeIndex(first["date"])).all()
    growth = np.exp(first["target"].to_numpy())  # the target is the next day's log return
    cost = backtest.strategy.cost_bps * 1e-4
    expected = np.cumprod(growth) * (growth[0] - cost) / growth[0]
    np.testing.assert_allclose(hold.to_numpy(), expected, rtol=1e-12)
    # vol-scaled positions do not make buy-and-hold leveraged, and the strategy is left as it was
    backtest.strategy.position = "vol_scaled"
    try:
        np.testing.assert_allclose(figures.buy_and_hold(backtest).to_numpy(), expected, rtol=1e-12)
        assert backtest.strategy.position == "vol_scaled"
    finally:
        backtest.strategy.position = "sign"


@pytest.mark.slow  # the module's real backtest: ~2 s to train, once
def test_the_baseline_of_a_real_backtest_is_scored_like_a_member(backtest):
    from harness.evaluation.selection import baseline_candidate

    rows, _ = baseline_candidate(backtest, "baseline", "rmse")
    expected = M.window_metrics(rows, backtest.strategy, table=backtest.table)
    for metric in ("rmse", "hit_rate", "sharpe"):
        got = figures.baseline_window_metric(backtest.predictions, metric, backtest.strategy, backtest.table)
        want = expected[expected["metric"] == metric].set_index("window")["value"]
        np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-12, equal_nan=True)


# --- selection figures ----------------------------------------------------------------------------


def stub_report(labels=LONG_LABELS, windows=8, seeds=2):
    """What the selection figures read of a SelectionReport, for any labels (no training)."""
    seed_mean, per_seed, predictions = dated_frames(tuple(labels), windows=windows)
    per_seed = per_seed[per_seed["seed"] < seeds]
    baseline = "baseline (historical mean)"
    rng = np.random.default_rng(4)
    pooled = 1.0 + rng.random(len(labels) + 1)
    table = pd.DataFrame({"schedule": [*labels, baseline], "pooled_rmse": pooled, "ci_low": pooled - 0.2,
                          "ci_high": pooled + 0.3, "in_mcs": [True, False] * (len(labels) // 2) + [True] * (
                              len(labels) % 2 + 1)})
    dates = pd.bdate_range("2022-03-01", periods=windows * 10)
    losses = pd.DataFrame(rng.random((dates.size, len(labels) + 1)), index=dates, columns=[*labels, baseline])
    backtest = SimpleNamespace(predictions=predictions, seed_mean_metrics=seed_mean, metrics=per_seed,
                               strategy=None, table=None)
    return SimpleNamespace(metric="rmse", table=table, backtest=backtest, selected=labels[2], best=labels[1],
                           alpha=0.1, baseline=baseline, losses=losses, loss_name="squared error")


def test_selection_windows_labels_do_not_collide_with_eight_long_labels(tmp_path):
    report = stub_report()
    fig = figures.window_intervals_figure(report)
    top, bottom = fig.axes
    renderer = drawn(fig)
    ticks = bottom.get_yticklabels()
    assert [t.get_text().replace("\n", " ") for t in ticks] == [
        figures.wrap_label(label).replace("\n", " ") for label in [*LONG_LABELS, report.baseline]]
    assert_disjoint(ticks, renderer)
    for tick in ticks:  # and inside the figure, clear of the plotting area
        box = tick.get_window_extent(renderer)
        assert box.x0 >= 0 and not box.overlaps(bottom.get_window_extent(renderer))
    starts = figures.window_starts(report.backtest.predictions)
    assert_date_axis(top, starts.iloc[0], starts.iloc[-1])
    assert len(lines_labelled(top, "baseline")) == 1
    assert_legends_clear_of_the_data(fig)
    image = read_png(figures.plot_window_intervals(report, tmp_path / "selection_windows.png"))
    assert image.shape[:2] == DOUBLE_PX


def test_selection_losses_are_dated_with_the_baseline_and_a_clear_legend(tmp_path):
    report = stub_report()
    fig = figures.loss_differences_figure(report)
    ax = fig.axes[0]
    assert_date_axis(ax, report.losses.index[0], report.losses.index[-1])
    (base,) = lines_labelled(ax, report.baseline)
    assert base.get_color() == "black" and base.get_linestyle() == "--"
    assert not lines_labelled(ax, report.best)  # the best is the zero line
    assert_legends_clear_of_the_data(fig)
    assert read_png(figures.plot_loss_differences(report, tmp_path / "l.png")).shape[:2] == SINGLE_PX


@pytest.mark.slow  # the module's real backtest: ~2 s to train, once
def test_selection_figures_of_a_real_backtest(backtest, tmp_path):
    from harness.evaluation.selection import select

    report = select(backtest, reps=100)
    files = figures.selection_figures(report, tmp_path)
    assert list(files) == ["selection.md", "selection_losses.png", "selection_windows.png"]
    assert read_png(files["selection_losses.png"]).shape[:2] == SINGLE_PX
    assert read_png(files["selection_windows.png"]).shape[:2] == DOUBLE_PX
    fig = figures.window_intervals_figure(report)
    assert [t.get_text() for t in fig.axes[1].get_yticklabels()] == [
        figures.wrap_label(label) for label in [*backtest.labels, report.baseline]]
    assert_legends_clear_of_the_data(fig)
    assert Path(files["selection.md"]).read_text().strip()


@pytest.mark.parametrize(("values", "log"), [
    ([1e-6, 2e-6, 5e-4], True),     # a baseline 250x the schedules: log scale, so the schedules stay apart
    ([1e-3, 2e-3, 5e-2], False),    # within two decades: linear
    ([-0.1, 0.2, 30.0], False),     # a value at or below zero (r2_oos, sharpe) can never be on a log axis
])
def test_the_value_axis_goes_log_only_when_positive_values_span_two_decades(values, log):
    from harness.figures.common import new_figure, value_axis

    ax = new_figure().subplots()
    ax.plot([0, 1, 2], values)
    ax.plot([0, 1, 2], [np.nan, values[0], values[1]])  # NaN (a diverged window) is left out
    value_axis(ax, "mse")
    assert ax.get_yscale() == ("log" if log else "linear")
    assert ax.get_ylabel() == ("mse (log scale)" if log else "mse")
