"""The window boundary policy, and independent windows trained in one stack: every number equals
training the windows one by one.

The policy (:func:`harness.backtest.boundary.policy`) alone decides whether windows are independent
(``fresh``: stacked, several to a job) or chained (``warm_restart``/``warm_continue``: one window
per job, one job at a time).

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

from harness.backtest import plan
from harness.backtest.boundary import JOB_WINDOWS, Chained, Independent, Job, policy
from harness.backtest.executors import Work
from harness.backtest.planning import Window
from harness.backtest.result import assemble
from harness.backtest.window import Fitted, Start, WindowResult, WindowTrainer
from harness.config import parse_config
from harness.data import load_prices
from harness.errors import DataError, HarnessError
from harness.training import MemberBatches, WindowData, train, train_windows, training_bytes
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
def test_a_job_trained_in_one_stack_gives_the_frames_and_metrics_of_window_by_window(tmp_path, prices, mode):
    from strategies import get_strategy

    config = _engine_config(tmp_path, mode)
    the_plan = plan(config, prices)
    windows = the_plan.windows
    strategy = get_strategy(config.strategy.name, config.strategy.params)
    following = {a.index: b.test_rows for a, b in zip(windows, windows[1:])}
    boundary = policy(config, windows)
    # one job of every window, as a worker runs it (its fitted members stay in the worker)
    together = Work(config, strategy, the_plan.table, boundary).run(Job(windows, following))
    trainer = WindowTrainer(config, strategy, the_plan.table)
    alone = [trainer.train([w], [Start()], {w.index: following[w.index]} if w.index in following else {})[0]
             for w in windows]
    assert len(windows) >= 4 and (mode == "rolling") == (len({len(w.train_rows) for w in windows}) == 1)
    for a, b in zip(together, alone, strict=True):
        assert a.index == b.index and a.fitted is None
        pd.testing.assert_frame_equal(a.predictions, b.predictions)
        pd.testing.assert_frame_equal(a.training, b.training)
        np.testing.assert_array_equal(a.lr, b.lr)
        if b.next_predictions is not None:
            np.testing.assert_array_equal(a.next_predictions, b.next_predictions)
    scored = [assemble(the_plan, boundary, done) for done in (together, alone)]
    pd.testing.assert_frame_equal(scored[0].metrics, scored[1].metrics)
    pd.testing.assert_frame_equal(scored[0].aggregates, scored[1].aggregates)
    # a job's results travel between processes
    copy = pickle.loads(pickle.dumps(together))
    pd.testing.assert_frame_equal(copy[1].predictions, together[1].predictions)
    assert pickle.loads(pickle.dumps(Job(windows, following))).windows[2].train_rows.tolist() == \
        windows[2].train_rows.tolist()


def test_stacks_are_bounded_by_the_memory_budget_and_chained_policies_go_one_window_at_a_time(tmp_path, prices):
    config = _engine_config(tmp_path, "expanding")
    windows = plan(config, prices).windows
    members = len(config.schedules) * config.training.seeds
    need = [training_bytes(config.model.network(), 32, 64, len(w.train_rows), members) for w in windows]
    assert need == sorted(need) and need[0] < need[-1]  # expanding windows need more as they grow
    boundary = policy(config, windows)
    assert [len(s) for s in boundary.stacks(windows, 32, memory_budget=sum(need))] == [len(windows)]
    assert [len(s) for s in boundary.stacks(windows, 32, memory_budget=1)] == [1] * len(windows)
    budget = need[0] + need[1]
    stacks = boundary.stacks(windows, 32, memory_budget=budget)
    assert len(stacks) > 1
    assert [w.index for s in stacks for w in s] == [w.index for w in windows]
    for stack in stacks:
        used = sum(need[w.index] for w in stack)
        assert used <= budget or len(stack) == 1
    assert len(windows) <= JOB_WINDOWS  # so each stack is one job (one worker)
    jobs = boundary.jobs(windows, n_features=32, memory_budget=budget)
    assert [[w.index for w in job.windows] for job in jobs] == [[w.index for w in s] for s in stacks]
    for job in jobs:  # each job knows the next window's test rows, across job borders too
        for w in job.windows:
            if w.index + 1 < len(windows):
                np.testing.assert_array_equal(job.next_test_rows[w.index], windows[w.index + 1].test_rows)
    chained = policy(parse_config(small_config(tmp_path, training={"boundary": "warm_restart"})), windows)
    assert chained.chained and not hasattr(chained, "stacks")
    chained_jobs = chained.jobs(windows, n_features=32)
    assert [[w.index for w in job.windows] for job in chained_jobs] == [[w.index] for w in windows]
    assert chained.workers(len(chained_jobs)) == 1


def _synthetic_windows(n: int) -> list[Window]:
    """``n`` rolling windows of 100 train rows and 10 test rows, 10 rows apart (no data needed)."""
    return [Window(k, np.arange(10 * k, 10 * k + 100), np.arange(10 * k + 105, 10 * k + 115)) for k in range(n)]


def _boundary_config(tmp_path, boundary: str, workers: int = 1):
    return parse_config(small_config(tmp_path, training={"boundary": boundary}, execution={"workers": workers}))


def _indices(jobs: list[Job]) -> list[list[int]]:
    return [[w.index for w in job.windows] for job in jobs]


def test_the_boundary_policy_alone_decides_independent_or_chained(tmp_path):
    windows = _synthetic_windows(2 * JOB_WINDOWS + 4)
    todo = [w for w in windows if w.index not in {0, 3, 4, 11}]  # a resumed run: some windows done
    kinds = {boundary: policy(_boundary_config(tmp_path, boundary), windows)
             for boundary in ("fresh", "warm_restart", "warm_continue")}
    assert type(kinds["fresh"]) is Independent and not kinds["fresh"].chained
    assert type(kinds["warm_restart"]) is Chained and type(kinds["warm_continue"]) is Chained
    assert kinds["warm_restart"].chained and kinds["warm_continue"].chained

    # chained: one window per job, in order, and one job at a time
    for boundary in ("warm_restart", "warm_continue"):
        for workers in (1, 4):
            chained = policy(_boundary_config(tmp_path, boundary, workers), windows)
            for some in (windows, todo):
                jobs = chained.jobs(some, n_features=3)
                assert _indices(jobs) == [[w.index] for w in some]
                assert all(job.previous is None for job in jobs)
            assert chained.workers(len(windows)) == 1 and chained.workers(1) == 1

    # independent: each todo window exactly once, in order, at most JOB_WINDOWS to a job
    for workers in (1, 2, 3, 8):
        independent = policy(_boundary_config(tmp_path, "fresh", workers), windows)
        assert independent.workers(7) == 7
        for some in (windows, todo, todo[:3]):
            jobs = independent.jobs(some, n_features=3)
            assert [i for job in _indices(jobs) for i in job] == [w.index for w in some]
            assert all(1 <= len(job.windows) <= JOB_WINDOWS for job in jobs)
            if workers > 1:  # jobs small enough for about two per worker
                assert max(len(job.windows) for job in jobs) <= -(-len(some) // (2 * workers))
            for job in jobs:  # churn: the next window of the whole backtest, not of the todo list
                assert sorted(job.next_test_rows) == [w.index for w in job.windows if w.index < len(windows) - 1]
                for w in job.windows:
                    if w.index + 1 < len(windows):
                        np.testing.assert_array_equal(job.next_test_rows[w.index], windows[w.index + 1].test_rows)
    assert _indices(policy(_boundary_config(tmp_path, "fresh"), windows).jobs(windows, n_features=3)) == [
        list(range(8)), list(range(8, 16)), list(range(16, 20))]


def test_a_chain_resumes_only_from_complete_saved_windows(tmp_path):
    windows = _synthetic_windows(6)
    chained = policy(_boundary_config(tmp_path, "warm_continue"), windows)
    empty = pd.DataFrame()
    saved = {i: WindowResult(i, empty, empty, empty, np.zeros((1, 1)), []) for i in range(6)}
    state = Fitted(result="members after window 3", x_scaler=None, y_scaler=None)

    done, restored = chained.restore({i: saved[i] for i in range(5)}, (3, state))
    assert sorted(done) == [0, 1, 2, 3] and all(done[i] is saved[i] for i in done)
    assert restored is state
    done, restored = chained.restore({i: saved[i] for i in range(4)}, (3, state))
    assert sorted(done) == [0, 1, 2, 3] and restored is state
    for gap in ({0, 1, 3}, {1, 2, 3}, {0, 2, 3, 4}):  # a window before the state is missing: start over
        assert chained.restore({i: saved[i] for i in gap}, (3, state)) == ({}, None)
    assert chained.restore({i: saved[i] for i in range(3)}, None) == ({}, None)  # no members to continue from
    # independent windows keep whatever was saved, and continue from nothing
    fresh = policy(_boundary_config(tmp_path, "fresh"), windows)
    partial = {i: saved[i] for i in (0, 2, 5)}
    done, restored = fresh.restore(partial, (5, state))
    assert sorted(done) == [0, 2, 5] and all(done[i] is saved[i] for i in done) and restored is None


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
