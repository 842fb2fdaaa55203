"""Independent windows trained in one stack: every number equals training the windows one by one.

Bitwise, not to a tolerance: a member's computation never depends on which other members share
its stack (every batch is ``batch_size`` rows wide, pad rows masked; a window with fewer batches
sits its extra steps out; random draws come from one stream per window). Against an independent
reference, a member of a short (expanding) window equals its solo torch run.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pandas as pd
import pytest
import torch

from harness.config import parse_config
from harness.data import load_prices
from harness.engine import assemble, chunk_windows, plan, score
from harness.errors import DataError, HarnessError
from harness.training import MemberBatches, WindowData, train, train_windows, training_bytes
from harness.window_run import Chunk, run_chunk, run_window, steps_per_window
from tests.conftest import ROOT, small_config
from tests.training.test_loop import assert_matches_solo

SCHEDULES = ["constant", {"name": "cosine", "warmup": 0.2}, {"name": "plateau", "patience": 0, "factor": 0.5},
             "schedule_free"]
SETTINGS = dict(model={"hidden": [8, 8], "activation": "tanh"}, schedules=SCHEDULES, seeds=2, epochs=5,
                batch_size=16, lr=0.02, patience=2)
RESULT_ARRAYS = ("step_loss", "val_loss", "lr", "diverged", "best_epoch", "stopped_epoch")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Numbers compared bitwise are computed at one torch thread (sums in one order)."""


def series(n: int = 400, features: int = 3, seq: int | None = None, seed: int = 0):
    """A noisy nonlinear regression whose relation drifts, so windows learn different things."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, features) if seq is None else (n, seq, features)).astype(np.float32)
    flat = X.reshape(n, -1)
    drift = np.linspace(0.0, 2.0, n)
    y = np.sin(flat @ rng.normal(size=flat.shape[1]) + drift) + 0.3 * rng.normal(size=n)
    return X, y.astype(np.float32)


def windows_of(X, y, mode: str, n_windows: int = 4, train: int = 90, step: int = 37):
    """Rolling (equal lengths) or expanding windows; the tail fifth of each is its validation."""
    out = []
    for k in range(n_windows):
        end = train + k * step
        start = end - train if mode == "rolling" else 0
        n_val = (end - start) // 5
        out.append(WindowData(X[start:end - n_val], y[start:end - n_val], X[end - n_val:end], y[end - n_val:end]))
    return out


def assert_same_results(together, alone, X_test):
    for a, b in zip(together, alone, strict=True):
        assert a.labels == b.labels and a.steps_per_epoch == b.steps_per_epoch
        for name in RESULT_ARRAYS:
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        for name, value in a.state.items():
            assert torch.equal(value, b.state[name]), name
        np.testing.assert_array_equal(a.predict(X_test), b.predict(X_test))


def huge_lr_for_one_member(windows, settings, window: int, member: int):
    """LR tables equal to the nominal constant LR, except one member of one window at 50 (it diverges)."""
    members = len(settings["schedules"]) * settings["seeds"]
    for w, data in enumerate(windows):
        steps = settings["epochs"] * math.ceil(len(data.X_train) / settings["batch_size"])
        tables = np.full((members, steps), settings["lr"])
        if w == window:
            tables[member] = 50.0
        data.lr_tables = tables
    return windows


@pytest.mark.parametrize("mode", ["rolling", "expanding"])
def test_windows_trained_together_equal_each_window_trained_alone(mode):
    X, y = series()
    windows = windows_of(X, y, mode)
    settings = {**SETTINGS, "schedules": ["constant", "schedule_free", {"name": "plateau", "patience": 0}]}
    huge_lr_for_one_member(windows, settings, window=1, member=1)
    together = train_windows(windows, **settings)
    alone = [train_windows([data], **settings)[0] for data in windows]
    assert_same_results(together, alone, X[-40:])
    # the test can fail: windows differ, one member diverged, early stopping and plateaus acted
    assert together[1].diverged.tolist() == [False, True] + [False] * 4
    assert not any(r.diverged.any() for k, r in enumerate(together) if k != 1)
    assert any((r.stopped_epoch < settings["epochs"]).any() for r in together)
    assert not np.array_equal(together[0].predict(X[-40:]), together[2].predict(X[-40:]))
    assert min(float(np.nanmin(r.lr[4:])) for r in together) < settings["lr"]  # a plateau member lowered its LR
    if mode == "expanding":
        assert len({r.steps_per_epoch for r in together}) == len(windows)


def test_every_schedule_kind_and_dropout_stay_bitwise_equal_when_stacked():
    X, y = series()
    windows = windows_of(X, y, "expanding", n_windows=3)
    settings = {**SETTINGS, "model": {"hidden": [8, 8], "dropout": 0.3}}
    together = train_windows(windows, **settings)
    alone = [train_windows([data], **settings)[0] for data in windows]
    assert_same_results(together, alone, X[-40:])


def test_recurrent_members_with_dropout_keep_their_own_random_stream_per_window():
    X, y = series(n=160, features=2, seq=3)
    windows = windows_of(X, y, "expanding", n_windows=2, train=60, step=41)
    settings = dict(model={"type": "gru", "hidden": [4, 3], "dropout": 0.5}, schedules=["cosine"], seeds=2,
                    epochs=2, batch_size=16, lr=0.02)
    together = train_windows(windows, **settings)
    assert together[0].stack.path == "vmap" and together[0].stack.stochastic
    alone = [train_windows([data], **settings)[0] for data in windows]
    assert_same_results(together, alone, X[-20:])


def test_a_member_of_a_short_window_equals_its_solo_torch_run():
    """The independent reference: the short window sits steps out and pads its last batch, yet
    each of its members is torch's AdamW + DataLoader over its own rows."""
    X, y = series()
    windows = windows_of(X, y, "expanding", n_windows=3, train=70, step=53)
    settings = dict(model={"hidden": [8, 8], "activation": "tanh"}, epochs=4, batch_size=16, lr=0.02)
    together = train_windows(windows, schedules=["cosine", "schedule_free"], seeds=2, **settings)
    short = windows[0]
    assert together[0].steps_per_epoch < together[-1].steps_per_epoch
    data = (short.X_train, short.y_train, short.X_val, short.y_val)
    for m, (spec, seed) in enumerate([("cosine", 0), ("cosine", 1), ("schedule_free", 0), ("schedule_free", 1)]):
        assert_matches_solo(together[0], m, data, model=settings["model"], spec=spec, seed=seed, **{
            k: v for k, v in settings.items() if k != "model"})


def test_train_is_one_window_of_train_windows():
    X, y = series()
    data = windows_of(X, y, "rolling", n_windows=1)[0]
    one = train(data.X_train, data.y_train, data.X_val, data.y_val, **SETTINGS)
    assert_same_results([one], train_windows([data], **SETTINGS), X[-20:])


def test_member_batches_of_different_lengths_are_each_members_dataloader_order():
    rows = [torch.arange(100, 123), torch.arange(7), torch.arange(200, 223)]
    batches = MemberBatches(rows, [5, 5, 9], width=30)
    assert len(batches.generators) == 3  # one per (seed, length); shared by equal keys only
    alone = [MemberBatches([r], [s]) for r, s in zip(rows, [5, 5, 9])]
    assert batches.mask.sum(1).tolist() == [23, 7, 23]
    for _ in range(2):
        order = batches.epoch()
        for m, single in enumerate(alone):
            n = len(rows[m])
            assert torch.equal(order[m, :n], single.epoch()[0])
            assert (order[m, n:] == rows[m][0]).all()  # pads repeat the member's first row
    with pytest.raises(HarnessError, match="width 5 is shorter"):
        MemberBatches(rows, [0, 0, 0], width=5)


@pytest.fixture(scope="module")
def prices():
    return load_prices("csv", path=ROOT / "data" / "sp500.csv", start="2010-01-01", end="2011-12-31")


def _engine_config(tmp_path, mode):
    return parse_config(small_config(
        tmp_path, windows={"train": 200, "test": 42, "purge": 5, "mode": mode},
        schedules=["constant", {"name": "cosine", "warmup": 0.1}, {"name": "plateau", "patience": 0}, "schedule_free"],
        training={"epochs": 3, "batch_size": 64, "seeds": 2, "patience": 2},
    ))


@pytest.mark.parametrize("mode", ["rolling", "expanding"])
def test_a_chunk_trained_in_one_stack_gives_the_frames_and_metrics_of_window_by_window(tmp_path, prices, mode):
    from strategies import get_strategy

    config = _engine_config(tmp_path, mode)
    the_plan = plan(config, prices)
    windows = the_plan.windows
    strategy = get_strategy(config.strategy.name, config.strategy.params)
    sizes = steps_per_window(config, windows)
    following = {a.index: b.test_rows for a, b in zip(windows, windows[1:])}
    together = run_chunk(config, strategy, the_plan.table, Chunk(windows, following), sizes)
    alone = [run_window(config, strategy, the_plan.table, w, None, sizes, following.get(w.index)) for w in windows]
    assert len(windows) >= 4 and (mode == "rolling") == (len({len(w.train_rows) for w in windows}) == 1)
    for a, b in zip(together, alone, strict=True):
        assert a.index == b.index and a.fitted is None
        pd.testing.assert_frame_equal(a.predictions, b.predictions)
        pd.testing.assert_frame_equal(a.training, b.training)
        np.testing.assert_array_equal(a.lr, b.lr)
        if b.next_predictions is not None:
            np.testing.assert_array_equal(a.next_predictions, b.next_predictions)
    scored = [score(assemble(config, the_plan, strategy, done, 0.0)) for done in (together, alone)]
    pd.testing.assert_frame_equal(scored[0].metrics, scored[1].metrics)
    pd.testing.assert_frame_equal(scored[0].aggregates, scored[1].aggregates)
    # a chunk's results travel between processes
    copy = pickle.loads(pickle.dumps(together))
    pd.testing.assert_frame_equal(copy[1].predictions, together[1].predictions)
    assert pickle.loads(pickle.dumps(Chunk(windows, following))).windows[2].train_rows.tolist() == \
        windows[2].train_rows.tolist()


def test_chunks_are_bounded_by_the_memory_budget_and_chained_policies_stay_one_sequence(tmp_path, prices):
    config = _engine_config(tmp_path, "expanding")
    windows = plan(config, prices).windows
    members = len(config.schedules) * config.training.seeds
    need = [training_bytes(config.model.network(), 32, 64, len(w.train_rows), members) for w in windows]
    assert need == sorted(need) and need[0] < need[-1]  # expanding windows need more as they grow
    assert [len(c.windows) for c in chunk_windows(config, windows, memory_budget=sum(need))] == [len(windows)]
    assert [len(c.windows) for c in chunk_windows(config, windows, memory_budget=1)] == [1] * len(windows)
    budget = need[0] + need[1]
    chunks = chunk_windows(config, windows, memory_budget=budget)
    assert [w.index for c in chunks for w in c.windows] == [w.index for w in windows]
    for chunk in chunks:
        used = sum(need[w.index] for w in chunk.windows)
        assert used <= budget or len(chunk.windows) == 1
    for chunk in chunks:  # each chunk knows the next window's test rows, across chunk borders too
        for w in chunk.windows:
            if w.index + 1 < len(windows):
                np.testing.assert_array_equal(chunk.next_test_rows[w.index], windows[w.index + 1].test_rows)
    chained = parse_config(small_config(tmp_path, training={"boundary": "warm_restart"}))
    assert len(chunk_windows(chained, windows, memory_budget=1)) == 1


def test_training_bytes_counts_parameters_activations_and_rows():
    model = {"hidden": [16]}
    one, two = (training_bytes(model, 5, 32, 100, members) for members in (1, 2))
    params = (5 * 16 + 16 + 16 + 1) * 4
    per_member = two - one
    activations = 2 * (32 * 16 * 4 + 32 * 5 * 4)  # saved hidden layer (at least) and the input batch
    assert per_member >= 10 * params + activations
    assert one - per_member == 100 * (5 + 1) * 4  # the window's rows
    assert training_bytes(model, 5, 64, 100, 1) > one  # wider batches, more activations


def test_window_data_mistakes_raise_one_line_errors():
    X, y = series(n=60)
    with pytest.raises(HarnessError, match="no windows"):
        train_windows([], seeds=1, epochs=1)
    with pytest.raises(DataError, match="window 1: X_train, y_train shapes") as info:
        train_windows([WindowData(X[:30], y[:30]), WindowData(X[30:, :2], y[30:])], seeds=1, epochs=1)
    assert "\n" not in str(info.value)
    bad = X.copy()
    bad[40, 0] = np.nan
    with pytest.raises(DataError, match="window 1: X_train: contains NaN"):
        train_windows([WindowData(X[:30], y[:30]), WindowData(bad[30:], y[30:])], seeds=1, epochs=1)


def test_windows_with_and_without_validation_rows_share_a_stack():
    """Members without validation rows watch their training loss (plateau) and never stop early."""
    X, y = series()
    with_val, without = windows_of(X, y, "expanding", n_windows=2)
    without = WindowData(without.X_train, without.y_train)
    together = train_windows([with_val, without], **SETTINGS)
    alone = [train_windows([data], **SETTINGS)[0] for data in (with_val, without)]
    assert_same_results(together, alone, X[-20:])
    assert np.isnan(together[1].val_loss).all() and (together[1].stopped_epoch == SETTINGS["epochs"]).all()
    assert np.isfinite(together[0].val_loss[:, 0]).all()


def test_windows_in_any_order_of_length_give_the_same_numbers():
    """Expanding windows in order let a step compute only the windows that have a batch (a
    suffix of the stack); a short window between long ones makes the step compute all."""
    X, y = series()
    long_a, short, long_b = (windows_of(X, y, "expanding", n_windows=4, train=60, step=70)[k] for k in (3, 0, 2))
    settings = {**SETTINGS, "model": {"hidden": [8, 8], "dropout": 0.2}}
    windows = [long_a, short, long_b]
    together = train_windows(windows, **settings)
    assert together[1].steps_per_epoch < together[2].steps_per_epoch < together[0].steps_per_epoch
    assert_same_results(together, [train_windows([data], **settings)[0] for data in windows], X[-20:])
