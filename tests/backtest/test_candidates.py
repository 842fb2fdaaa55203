"""Budget and LR axes, losses and user networks in whole backtests.

A candidate (schedule x budget x LR) of one backtest equals, member by member, the same schedule in
a backtest at that budget and LR alone; a 1-epoch backtest is reported undertrained; a user's module
from the working folder trains in a backtest; each loss is scored with itself.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
import pytest

from harness.backtest import plan, run_backtest
from harness.backtest.candidates import grid_markdown, grid_table, single_config
from harness.config import parse_config
from harness.data import load_prices
from harness.errors import HarnessError
from harness.evaluation import metrics as M
from harness.evaluation.losses import huber, log_loss
from harness.evaluation.selection import select
from tests.conftest import ROOT, small_config

FRAMES = ("predictions", "training", "curves")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Numbers compared bitwise are computed at one torch thread."""


@pytest.fixture(scope="module")
def prices():
    return load_prices("csv", path=ROOT / "data" / "sp500.csv", start="2010-01-01", end="2011-12-31")


def _config(tmp_path, **sections):
    return parse_config(small_config(tmp_path, **sections))


def _own(frame: pd.DataFrame, label: str) -> pd.DataFrame:
    return frame[frame["schedule"] == label].drop(columns="schedule").reset_index(drop=True)


def assert_candidates_equal_separate_backtests(grid, tmp_path, prices, **sections):
    """Every candidate of ``grid`` equals its schedule in a backtest at the candidate's budget and LR."""
    config = grid.config
    separate = {}
    for candidate in config.candidates():
        key = (candidate.epochs, candidate.lr)
        if key not in separate:
            training = {**sections.get("training", {}), "epochs": candidate.epochs, "lr": candidate.lr}
            separate[key] = run_backtest(_config(tmp_path, **{**sections, "training": training}), prices=prices,
                                         progress=False)
        alone, label = separate[key], candidate.schedule.label
        for name in (*FRAMES, "metrics"):
            pd.testing.assert_frame_equal(_own(getattr(grid, name), candidate.label), _own(getattr(alone, name), label),
                                          check_exact=True)
        np.testing.assert_array_equal(grid.lr_curve(candidate.label), alone.lr_curve(label))
        ours, theirs = _own(grid.aggregates, candidate.label), _own(alone.aggregates, label)
        shared = ~ours["metric"].isin(["best_window_share"])  # a share among the candidates of each backtest
        pd.testing.assert_frame_equal(ours[shared].reset_index(drop=True),
                                      theirs[~theirs["metric"].isin(["best_window_share"])].reset_index(drop=True))
    return separate


@pytest.mark.slow
def test_a_budget_and_lr_grid_equals_separate_backtests_member_by_member(tmp_path, prices):
    sections = dict(training={"seeds": 2, "epochs": [2, 4], "lr": [1e-3, 3e-3]},
                    schedules=["constant", {"name": "cosine", "min_lr_ratio": [0.0, 0.1]}])
    grid = run_backtest(_config(tmp_path, **sections), prices=prices, progress=False)
    assert grid.labels[:4] == ["constant@e2,lr1e-3", "constant@e2,lr3e-3", "constant@e4,lr1e-3", "constant@e4,lr3e-3"]
    assert len(grid.labels) == 12 and set(grid.predictions["schedule"]) == set(grid.labels)
    assert grid.curves.groupby("schedule")["epoch"].max().to_dict()["constant@e2,lr1e-3"] == 1  # its own epochs only
    assert_candidates_equal_separate_backtests(grid, tmp_path, prices, **sections)
    tags = grid.candidate_tags()["cosine(min_lr_ratio=0.1)@e4,lr3e-3"]
    assert tags == {"epochs": "4", "lr": "0.003", "base_schedule": "cosine(min_lr_ratio=0.1)"}
    table = grid_table(grid)
    assert list(table.columns) == ["2 epochs", "4 epochs"] and table.index.names == ["schedule", "lr"]
    assert "| constant | 0.001 |" in grid_markdown(table)


@pytest.mark.slow
@pytest.mark.parametrize("boundary", ["warm_restart", "warm_continue"])
def test_a_budget_grid_of_chained_windows_equals_separate_backtests(tmp_path, prices, boundary):
    sections = dict(training={"seeds": 1, "epochs": [2, 3], "boundary": boundary},
                    schedules=[{"name": "cosine", "min_lr_ratio": 0.01}, "schedule_free"])
    grid = run_backtest(_config(tmp_path, **sections), prices=prices, progress=False)
    assert_candidates_equal_separate_backtests(grid, tmp_path, prices, **sections)


def test_a_one_epoch_backtest_is_reported_undertrained(tmp_path, prices):
    backtest = run_backtest(_config(tmp_path, training={"epochs": 1}), prices=prices, progress=False)
    table = backtest.undertrained()
    assert table["flagged"].all() and (table["share"] == 1).all() and (table["members"] == 5 * 2).all()
    still = backtest.aggregates[backtest.aggregates["metric"] == "still_improving"]
    assert set(still["schedule"]) == set(backtest.labels) and (still["value"] == 1).all()
    report = select(backtest)
    text = report.markdown()
    assert "## Training budget" in text and text.count("undertrained") >= 2
    assert "10 of 10 members trained fewer than 3 epochs" in text and "the budget is too small" in text
    assert "still improving" in text  # the ranking column


def test_each_candidate_gets_a_training_curve_figure(tmp_path, prices):
    from harness.figures.curves import curve_figures, curve_quantiles

    backtest = run_backtest(_config(tmp_path, training={"epochs": [2, 5], "seeds": 2}), prices=prices, progress=False)
    parent, per_candidate = curve_figures(backtest, tmp_path / "figures")
    assert set(per_candidate) == set(backtest.labels) and set(parent) == {"training_curves.png"}
    for files in [parent, *per_candidate.values()]:
        for path in files.values():
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    quantiles = curve_quantiles(backtest.curves, "constant@e5")
    assert list(quantiles.index) == [0, 1, 2, 3, 4] and (quantiles["members"] == 10).all()
    own = backtest.curves[(backtest.curves["schedule"] == "constant@e5") & (backtest.curves["epoch"] == 4)]
    assert quantiles.loc[4, "median"] == pytest.approx(own["val_loss"].median())
    assert (quantiles["low"] <= quantiles["median"]).all() and (quantiles["median"] <= quantiles["high"]).all()


def test_a_long_enough_budget_is_not_flagged(tmp_path, prices):
    backtest = run_backtest(_config(tmp_path, training={"epochs": 30, "seeds": 1}, schedules=["cosine"]),
                            prices=prices, progress=False)
    assert not backtest.undertrained()["flagged"].any()
    assert "No candidate was undertrained" in select(backtest).markdown()


def test_the_production_config_of_a_candidate_takes_its_budget_and_lr(tmp_path):
    config = _config(tmp_path, training={"epochs": [2, 4], "lr": [1e-3, 3e-3], "patience": 2},
                     schedules=["constant", {"name": "cosine", "warmup": 0.1}])
    single = single_config(config, "cosine(warmup=0.1)@e4,lr3e-3", boundary="fresh")
    assert single.schedules == [{"name": "cosine", "warmup": 0.1}]
    assert (single.training.epochs, single.training.lr, single.training.patience) == (4, 3e-3, 2)
    assert single.schedule_labels() == ["cosine(warmup=0.1)"]
    with pytest.raises(HarnessError, match="unknown schedule 'cosine@e9'"):
        single_config(config, "cosine@e9")


# --- losses ----------------------------------------------------------------------------------------


def _loss_backtest(tmp_path, prices, loss, strategy=None, **training):
    sections = {"training": {"loss": loss, "epochs": 3, **training}}
    if strategy is not None:
        sections["strategy"] = strategy
    return run_backtest(_config(tmp_path, **sections), prices=prices, progress=False)


@pytest.mark.parametrize("loss", ["mae", "huber"])
def test_mae_and_huber_backtests_are_scored_and_selected_on_their_own_loss(tmp_path, prices, loss):
    backtest = _loss_backtest(tmp_path, prices, loss)
    assert backtest.metric == loss and backtest.config.selection.metric == loss
    strategy, predictions = backtest.strategy, backtest.predictions
    if loss == "huber":  # the default delta: the target's std over the first window's train rows
        first = plan(backtest.config, prices).windows[0]
        assert strategy.huber_delta == pytest.approx(np.std(strategy.target_transform(
            backtest.table.y.to_numpy()[first.train_rows])))
    member = predictions[(predictions["window"] == 2) & (predictions["seed"] == 1)
                         & (predictions["schedule"] == "constant")]
    error = member["prediction"].to_numpy() - member["target"].to_numpy()
    expected = np.mean(np.abs(error)) if loss == "mae" else np.mean(huber(error, strategy.huber_delta))
    got = backtest.metrics.set_index(["window", "schedule", "seed", "metric"])["value"][(2, "constant", 1, loss)]
    assert got == pytest.approx(expected, rel=1e-12)
    report = select(backtest, reps=50)
    means = M.seed_mean(predictions, backtest.training)
    pointwise = (np.abs(means["prediction"] - means["target"]) if loss == "mae"
                 else huber(means["prediction"] - means["target"], strategy.huber_delta))
    by_date = pd.Series(np.asarray(pointwise), index=means.index).groupby(
        [means["date"], means["schedule"]]).mean().unstack()[report.losses.columns[:-1]]
    np.testing.assert_allclose(report.losses.drop(columns=report.baseline).to_numpy(), by_date.to_numpy(), rtol=1e-12)
    assert report.metric == loss and (loss != "huber" or report.loss_name == "Huber loss")


def test_huber_delta_in_target_units_reaches_every_window_scaled(tmp_path, prices):
    from harness.backtest.window import Scaler, WindowTrainer

    config = _config(tmp_path, training={"loss": "huber", "huber_delta": 0.05})
    the_plan = plan(config, prices)
    trainer = WindowTrainer(config, the_plan.strategy, the_plan.table)
    window = the_plan.windows[1]
    from harness.backtest.window import Start

    data, _, _ = trainer._prepare(window, Start())
    std = Scaler.fit(trainer.y[window.train_rows]).std
    assert data.huber_delta == pytest.approx(0.05 / std) and the_plan.strategy.huber_delta == 0.05


def test_a_bce_backtest_is_a_sign_classifier_scored_by_log_loss(tmp_path, prices):
    backtest = _loss_backtest(tmp_path, prices, "bce", strategy={"name": "return_forecast", "params": {"momentum": [21]}})
    predictions = backtest.predictions
    assert set(np.unique(predictions["target"])) == {0.0, 1.0}
    assert ((predictions["prediction"] > 0) & (predictions["prediction"] < 1)).all()
    table, windows = backtest.table, plan(backtest.config, prices).windows
    shares = {w.index: table.y.to_numpy()[w.train_rows].mean() for w in windows}
    np.testing.assert_allclose(predictions["baseline"], predictions["window"].map(shares))
    assert backtest.metric == "bce" and backtest.strategy.baseline_name == "train-window up share"
    metrics = backtest.metrics.set_index(["window", "schedule", "seed", "metric"])["value"]
    member = predictions[(predictions["window"] == 0) & (predictions["seed"] == 0) & (predictions["schedule"] == "constant")]
    y, p = member["target"].to_numpy(), member["prediction"].to_numpy()
    assert metrics[(0, "constant", 0, "bce")] == pytest.approx(np.mean(log_loss(y, p)), rel=1e-12)
    assert metrics[(0, "constant", 0, "accuracy")] == pytest.approx(np.mean((p > 0.5) == (y > 0.5)))
    assert metrics[(0, "constant", 0, "mse")] == pytest.approx(np.mean((p - y) ** 2))  # the Brier score
    assert "hit_rate" not in set(backtest.metrics["metric"])  # the strategy's own metrics read returns
    assert backtest.equity_curves() == {}
    report = select(backtest, reps=50)
    assert report.trading is None and report.loss_name.startswith("binary cross-entropy")
    # the trainer's last validation loss is the log loss of its probabilities on the validation tail
    assert np.isfinite(backtest.training["val_loss"]).all()


def test_bce_on_a_target_of_one_sign_is_refused(tmp_path, prices):
    with pytest.raises(HarnessError, match="bce trains a sign classifier .* 100% of strategy 'volatility_forecast'"):
        plan(_config(tmp_path, training={"loss": "bce"}), prices)


# --- a user's network ------------------------------------------------------------------------------

NET = '''
import torch
from torch import nn


class TinyNet(nn.Module):
    """Two layers with a layer norm; its own width."""

    def __init__(self, n_features, n_outputs=1, width=8):
        super().__init__()
        self.n_outputs = n_outputs
        self.body = nn.Sequential(nn.Linear(n_features, width), nn.LayerNorm(width), nn.Tanh())
        self.head = nn.Linear(width, n_outputs)

    def forward(self, x):
        out = self.head(self.body(x))
        return out.squeeze(-1) if self.n_outputs == 1 else out


class Sure(nn.Module):
    """A forward that reads a tensor's value: not vmap-able."""

    def __init__(self, n_features, n_outputs=1):
        super().__init__()
        self.a = nn.Linear(n_features, n_outputs)

    def forward(self, x):
        out = self.a(x).squeeze(-1)
        return out * float(out.mean())
'''


@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "usernets.py").write_text(textwrap.dedent(NET))
    monkeypatch.chdir(folder)
    return folder


def test_a_user_module_from_the_working_folder_trains_in_a_backtest(user_folder, prices):
    from harness.backtest import run_windows
    from harness.production import train_production

    config = _config(user_folder, model={"type": "usernets:TinyNet", "params": {"width": 6}},
                     training={"epochs": [2, 3], "seeds": 2})
    assert config.model.network() == {"type": "usernets:TinyNet", "params": {"width": 6}}
    the_plan = plan(config, prices)
    done = run_windows(the_plan, progress=False, keep_fitted=True)
    assert done[0].fitted.result.stack.path == "vmap"
    assert type(done[0].fitted.result.stack.template).__name__ == "TinyNet"
    backtest = run_backtest(config, prices=prices, progress=False)
    assert np.isfinite(backtest.predictions["prediction"]).all() and len(backtest.labels) == 4
    production = train_production(config, "cosine(warmup=0.1)@e3", prices=prices)
    assert production.epochs == 3 and production.schedule == "cosine(warmup=0.1)@e3"
    assert type(production.model.members[0]).__name__ == "TinyNet"
    np.testing.assert_allclose(production.predict(production.example), production.expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(("model", "message"), [
    ({"type": "usernets:Sure"}, r"model 'usernets:Sure': its forward cannot run under torch.func.vmap"),
    ({"type": "usernets:TinyNet", "params": {"widht": 3}}, r"TinyNet\(n_features=\d+, n_outputs=1, widht=3\) failed"),
    ({"type": "usernet:TinyNet"}, "cannot import module 'usernet'"),
])
def test_a_user_module_that_cannot_train_is_refused_when_planned(user_folder, prices, model, message):
    with pytest.raises(HarnessError, match=message) as info:
        plan(_config(user_folder, model=model), prices)
    assert "\n" not in str(info.value)


def test_the_example_network_is_a_valid_user_model():
    from harness.config import load_config
    from harness.training.models import check_module, make_model_factory

    config = load_config(ROOT / "examples" / "residual_net.yaml")
    assert config.model.custom and not config.model.recurrent and config.training.budgets == [10, 40]
    factory = make_model_factory(config.model.network(), n_features=5)
    check_module(factory, (5,), [0, 1])
    import torch

    assert factory()(torch.zeros(3, 5)).shape == (3,)
