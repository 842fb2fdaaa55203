"""The built-in MLP's step by hand (:mod:`harness.training.fused`) is autograd's step, bit for bit.

Bitwise is stronger than the 1e-6 relative the fused step must meet: the hand-written backward calls
the aten ops autograd's formulas call, on the same shapes, so no bit moves, and every guarantee of
the eager step (a member computes the same beside any others) carries over.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import harness.training.fused as fused_module
import harness.training.loop as loop
from harness.training import MLP, GroupStreams, Stack, WindowData, make_model_factory, train, train_windows
from harness.training.fused import MLPStep, _chunk_bounds, _parts, fused_step_applies


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Numbers compared bitwise are computed at one torch thread (sums in one order)."""


def _step(way: str, factory, seeds, x, y, keep, count, live, span):
    stack = Stack(factory, seeds)
    streams = GroupStreams([slice(0, len(seeds) // 2), slice(len(seeds) // 2, len(seeds))], 7)
    streams.span = span
    denominator = count[span] * (1 if y.dim() == 2 else y.shape[2])
    mask = None if keep is None else keep[span]
    if way == "autograd":
        loss = loop._batch_loss(stack, x[span], y[span], mask, denominator, streams, span)
        stack.backward(torch.where(live[span], loss, 0.0).sum())
    else:
        step = MLPStep(stack)
        loss = step.loss(x[span], y[span], mask, denominator, streams, span)
        step.backward(None if bool(live[span].all()) else live[span])
    return loss.detach().clone(), stack.flat_grad.clone()


@pytest.mark.parametrize(("hidden", "activation", "dropout", "outputs"), [
    *itertools.product([[8, 8], [5, 2, 7]], ["relu", "tanh", "gelu", "silu"], [0.0, 0.3], [1, 2]),
    ([64, 64], "relu", 0.0, 1), ([3], "relu", 0.0, 1),
])
@pytest.mark.parametrize("case", ["full batches, all live", "pad rows, idle members, a span"])
def test_the_mlp_step_by_hand_is_autograds_step_bit_for_bit(hidden, activation, dropout, outputs, case):
    members, rows, features = 6, 16, 5
    factory = make_model_factory({"hidden": hidden, "activation": activation, "dropout": dropout}, features,
                                 n_outputs=outputs)
    g = torch.Generator().manual_seed(sum(hidden) + outputs)
    x = torch.randn(members, rows, features, generator=g)
    y = torch.randn(members, rows, *([outputs] if outputs > 1 else []), generator=g)
    if case.startswith("full"):
        keep, live, span = None, torch.ones(members, dtype=torch.bool), slice(0, members)
    else:
        keep = torch.ones(members, rows, dtype=torch.bool)
        keep[:, rows // 2 + 1:] = False
        live, span = torch.tensor([True, False, True, True, False, True]), slice(3, 6)
    count = torch.full((members,), float(rows)) if keep is None else keep.sum(1).float()
    expected = _step("autograd", factory, list(range(members)), x, y, keep, count, live, span)
    got = _step("fused", factory, list(range(members)), x, y, keep, count, live, span)
    assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])


def test_the_trainer_steps_the_mlp_by_hand_and_other_modules_by_autograd():
    factory = make_model_factory({"hidden": [4]}, 3)
    assert fused_step_applies(Stack(factory, [0, 1]))
    assert not fused_step_applies(Stack(factory, [0, 1], path="vmap"))
    assert not fused_step_applies(Stack(make_model_factory({"type": "gru", "hidden": [3]}, 2), [0]))


def _data(n: int, seed: int = 0, features: int = 4, outputs: int = 1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, features)).astype(np.float32)
    y = np.sin(X @ rng.normal(size=features)).astype(np.float32)
    return X, (y if outputs == 1 else np.stack([y, -0.5 * y], 1))


SETTINGS = {
    "adamw, decay, plateau, early stopping": dict(
        model={"hidden": [8, 8], "activation": "tanh"}, lr=0.02, weight_decay=0.05, patience=2,
        schedules=["constant", "cosine", "onecycle", {"name": "plateau", "patience": 0}]),
    "sgd, momentum, clipping": dict(model={"hidden": [8, 8], "activation": "gelu"}, optimizer="sgd", lr=0.05,
                                    momentum=0.9, weight_decay=0.01, grad_clip=0.5, schedules=["constant", "cosine"]),
    "schedule-free, dropout": dict(model={"hidden": [8], "activation": "silu", "dropout": 0.2}, lr=0.02,
                                   schedules=["schedule_free", "constant"]),
    "diverging members": dict(model={"hidden": [8, 8]}, lr=50.0, schedules=["constant", "cosine"]),
    "wide, float64": dict(model=lambda: MLP(4, (64, 32)).double(), schedules=["cosine"]),
}


@pytest.mark.parametrize("chunks", ["one chunk", "a chunk per window"])
@pytest.mark.parametrize("name", list(SETTINGS))
def test_a_training_with_the_fused_step_equals_the_eager_step(name, chunks, monkeypatch):
    """Whole trainings, the eager (autograd) step against the fused one: every number the same,
    also when the fused step takes each window's members as a chunk of their own."""
    windows = [WindowData(*_data(n, seed=n), *_data(24, seed=n + 1)) for n in (40, 70, 100)]  # expanding
    settings = dict(seeds=2, epochs=4, batch_size=16, **SETTINGS[name])
    if chunks != "one chunk":
        monkeypatch.setattr(fused_module, "CHUNK_BYTES", 1)
    fused = train_windows(windows, **settings)
    monkeypatch.setattr(loop, "fused_step_applies", lambda stack: False)
    eager = train_windows(windows, **settings)
    for a, b in zip(fused, eager):
        for key in a.state:
            assert torch.equal(a.state[key], b.state[key]), key
        for field in ("step_loss", "val_loss", "lr", "diverged", "best_epoch", "stopped_epoch"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    if name == "diverging members":
        assert any(result.diverged.any() for result in fused)


def test_several_outputs_train_the_same_by_hand():
    X, y = _data(60, outputs=2)
    settings = dict(model={"hidden": [5, 3]}, schedules=["constant"], seeds=2, epochs=3, batch_size=16)
    fused = train(X, y, **settings)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "fused_step_applies", lambda stack: False)
        eager = train(X, y, **settings)
    for key in fused.state:
        assert torch.equal(fused.state[key], eager.state[key])


def test_chunks_hold_whole_windows_within_the_cache_budget_and_cut_a_span_at_their_bounds(monkeypatch):
    factory = make_model_factory({"hidden": [64, 64]}, 3)
    stack = Stack(factory, list(range(6)) * 40)  # 40 windows of 6 members
    groups = [slice(6 * w, 6 * w + 6) for w in range(40)]
    bounds = _chunk_bounds(stack, groups, 64 * 64)  # 16 KiB a member: 64 members in 1 MiB -> 10 windows
    assert bounds == [0, 60, 120, 180, 240]
    assert _chunk_bounds(stack, groups[:1] + [slice(6, 240)], 64 * 64) == [0, 6, 240]  # a group is never cut
    assert _chunk_bounds(stack, [slice(0, 240)], 64 * 64) == [0, 240]  # one window: one chunk
    assert _parts(slice(30, 200), bounds) == [slice(30, 60), slice(60, 120), slice(120, 180), slice(180, 200)]
    assert _parts(slice(0, 240), [0, 240]) == [slice(0, 240)]
    torch.set_num_threads(2)  # a cache each: twice the members a chunk
    try:
        assert _chunk_bounds(stack, groups, 64 * 64) == [0, 126, 240]
    finally:
        torch.set_num_threads(1)
    monkeypatch.setattr(fused_module, "CHUNK_BYTES", 1)
    assert _chunk_bounds(stack, groups[:3], 64 * 64) == [0, 6, 12, 240]
