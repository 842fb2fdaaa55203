"""Batched optimizers: each member's row equals torch's own optimizer stepped alone.

Gradient sequences are random, LRs differ per member and per step, and members sit out random
steps (the reference then simply does not step), over grids of the optimizer settings.
"""

from __future__ import annotations

import itertools

import pytest
import schedulefree
import numpy as np
import torch

from harness.errors import HarnessError
from harness.training import BatchedAdamW, BatchedSGD, ScheduleFreeMembers, make_optimizer

M, P, T = 4, 37, 25


def sequences(seed: int, grad_scale: float = 1.0):
    """Initial params, per-step gradients, per-member LRs and activity masks."""
    g = torch.Generator().manual_seed(seed)
    params = torch.randn(M, P, generator=g)
    grads = torch.randn(T, M, P, generator=g) * grad_scale
    lrs = torch.rand(T, M, generator=g, dtype=torch.float64) * 0.05
    active = torch.rand(T, M, generator=g) > 0.25
    active[:, 0] = True  # one member never sits out
    return params, grads, lrs, active


def reference(torch_optimizer, params, grads, lrs, active, **settings):
    """Each member alone: torch's optimizer, stepped only where the member is active."""
    rows = []
    for m in range(M):
        p = params[m].clone().requires_grad_()
        opt = torch_optimizer([p], lr=1.0, **settings)
        for t in range(T):
            if active[t, m]:
                opt.param_groups[0]["lr"] = float(lrs[t, m])
                p.grad = grads[t, m].clone()
                opt.step()
        rows.append(p.detach())
    return torch.stack(rows)


def run(batched, params, grads, lrs, active):
    for t in range(T):
        batched.step(grads[t], lrs[t], active[t])
    return batched.params


@pytest.mark.parametrize(
    ("weight_decay", "betas", "eps", "grad_scale"),
    list(itertools.product([0.0, 0.1], [(0.9, 0.999), (0.5, 0.9)], [1e-8, 1e-3], [1.0, 1e-7])),
)
def test_batched_adamw_equals_torch_adamw_for_every_member(weight_decay, betas, eps, grad_scale):
    params, grads, lrs, active = sequences(seed=1, grad_scale=grad_scale)
    settings = dict(weight_decay=weight_decay, betas=betas, eps=eps)
    ours = run(BatchedAdamW(params.clone(), **settings), params, grads, lrs, active)
    expected = reference(torch.optim.AdamW, params, grads, lrs, active, **settings)
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-7)
    assert not torch.equal(ours, params)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_adamw_on_the_cpu_is_bitwise_torchs_fused_adamw_for_every_member(weight_decay, dtype):
    params, grads, lrs, active = sequences(seed=4)
    params, grads = params.to(dtype), grads.to(dtype)
    ours = BatchedAdamW(params.clone(), weight_decay=weight_decay)
    assert ours._rows is not None  # the fused path runs on the CPU
    run(ours, params, grads, lrs, active)
    fused = lambda rows, **settings: torch.optim.AdamW(rows, fused=True, **settings)  # noqa: E731
    expected = reference(fused, params, grads, lrs, active, weight_decay=weight_decay)
    assert torch.equal(ours.params, expected)


def test_the_fused_path_reuses_its_lr_groupings_and_stays_bitwise_as_they_recur_and_change():
    """As in training: one gradient buffer every step, members sharing a few LRs, so the same
    groupings recur (their tensor lists are kept) and change (members sit out, LRs move)."""
    params, grads, _, active = sequences(seed=6)
    g = torch.Generator().manual_seed(6)
    lrs = torch.tensor([0.01, 0.02, 0.03], dtype=torch.float64)[torch.randint(0, 3, (T, M), generator=g)]
    lrs[: T // 2] = lrs[0]  # the first half repeats one grouping
    active = active.clone()
    active[T // 2] = False  # a step where nobody updates
    ours = BatchedAdamW(params.clone(), weight_decay=0.1)
    buffer = torch.empty_like(params)
    for t in range(T):
        buffer.copy_(grads[t])
        ours.step(buffer, lrs[t], active[t])
    kept = len(ours._rows.calls)
    assert 1 < kept < T  # the repeated grouping made its lists once
    fused = lambda rows, **settings: torch.optim.AdamW(rows, fused=True, **settings)  # noqa: E731
    assert torch.equal(ours.params, reference(fused, params, grads, lrs, active, weight_decay=0.1))


def test_the_fused_path_keeps_its_lr_groups_while_they_hold_and_regroups_when_a_member_leaves_its_own(monkeypatch):
    """As schedules do: every LR moves every step, members of one schedule together (no regrouping),
    until one member's LR leaves its schedule's (a plateau cut): regrouped, and bitwise still."""
    params, grads, _, active = sequences(seed=7)
    active = torch.ones_like(active)
    steps = torch.arange(T, dtype=torch.float64)[:, None]
    lrs = torch.tensor([0.01, 0.02, 0.01, 0.02], dtype=torch.float64) * 0.9 ** steps  # two schedules x two seeds
    lrs[T // 2:, 2] *= 0.5  # member 2 leaves member 0's LR from the middle on
    counted = []
    unique = np.unique
    monkeypatch.setattr(np, "unique", lambda *a, **k: (counted.append(1), unique(*a, **k))[1])
    ours = BatchedAdamW(params.clone(), weight_decay=0.1)
    buffer = torch.empty_like(params)
    for t in range(T):
        buffer.copy_(grads[t])
        ours.step(buffer, lrs[t], active[t])
    assert len(counted) == 2  # grouped at the first step, regrouped once when member 2 left
    fused = lambda rows, **settings: torch.optim.AdamW(rows, fused=True, **settings)  # noqa: E731
    assert torch.equal(ours.params, reference(fused, params, grads, lrs, active, weight_decay=0.1))


def test_batched_adamw_by_whole_buffer_ops_equals_torch_adamw_too():
    """The path other devices take (no fused kernel per row), checked here on the CPU."""
    params, grads, lrs, active = sequences(seed=5)
    ours = BatchedAdamW(params.clone(), weight_decay=0.1)
    ours._rows = None
    expected = reference(torch.optim.AdamW, params, grads, lrs, active, weight_decay=0.1)
    torch.testing.assert_close(run(ours, params, grads, lrs, active), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("momentum", "weight_decay"), list(itertools.product([0.0, 0.9], [0.0, 0.01])))
def test_batched_sgd_equals_torch_sgd_for_every_member(momentum, weight_decay):
    params, grads, lrs, active = sequences(seed=2)
    settings = dict(momentum=momentum, weight_decay=weight_decay)
    ours = run(BatchedSGD(params.clone(), **settings), params, grads, lrs, active)
    expected = reference(torch.optim.SGD, params, grads, lrs, active, **settings)
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["adamw", "sgd"])
@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_a_frozen_member_is_untouched_even_by_nan_gradients_and_does_not_leak(name, poison):
    params, grads, lrs, active = sequences(seed=3)
    active[:] = True
    clean = make_optimizer(name, params.clone(), weight_decay=0.01)
    dirty = make_optimizer(name, params.clone(), weight_decay=0.01)
    frozen = torch.tensor([True, False, True, True])
    for t in range(T):
        clean.step(grads[t], lrs[t], active[t])
        poisoned = grads[t].clone()
        poisoned[1] = poison
        dirty.step(poisoned, lrs[t], active[t] & frozen)
    assert torch.equal(dirty.params[1], params[1])
    keep = frozen.nonzero().squeeze(1)
    assert torch.equal(dirty.params[keep], clean.params[keep])
    state = dirty.exp_avg if name == "adamw" else dirty.buffer
    assert torch.equal(state[1], torch.zeros(P))
    if name == "adamw":
        assert dirty.steps.tolist() == [T, 0, T, T]


def test_unknown_optimizer_names_the_valid_ones():
    with pytest.raises(HarnessError, match="unknown optimizer 'adam' \\(did you mean 'adamw'\\?\\); valid: adamw, sgd"):
        make_optimizer("adam", torch.zeros(2, 3))


@pytest.mark.parametrize(("warmup", "weight_decay"), [(0, 0.0), (5, 0.05)])
def test_schedule_free_rows_equal_solo_schedulefree_runs(warmup, weight_decay):
    params, grads, _, _ = sequences(seed=4)
    flat = params.clone()
    rows, stop = [0, 2, 3], 15  # member 3 is frozen from step `stop` on, with NaN gradients
    members = ScheduleFreeMembers(flat, rows, lr=0.03, warmup_steps=warmup, weight_decay=weight_decay)
    active = torch.ones(M, dtype=torch.bool)
    for t in range(T):
        if t == stop:
            active[3] = False
            grads[t:, 3] = float("nan")
        if t % 10 == 9:  # evaluate mid-run, as the trainer does each epoch
            members.eval()
            members.train()
        members.step(grads[t], active)
    members.eval()
    for m in rows:
        p = params[m].clone().requires_grad_()
        solo = schedulefree.AdamWScheduleFree([p], lr=0.03, warmup_steps=warmup, weight_decay=weight_decay)
        solo.train()
        for t in range(T if m != 3 else stop):
            if t % 10 == 9:
                solo.eval()
                solo.train()
            p.grad = grads[t, m].clone()
            solo.step()
        solo.eval()
        torch.testing.assert_close(flat[m], p.detach(), rtol=1e-6, atol=1e-7)
    assert torch.equal(flat[1], params[1])  # not a schedule-free member


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_lrs_and_who_is_active_may_come_as_host_arrays(name):
    """The trainer keeps LRs and activity on the host: the same updates as from tensors; None is everyone."""
    params, grads, lrs, active = sequences(seed=5)
    as_tensors = make_optimizer(name, params.clone(), weight_decay=0.01)
    as_arrays = make_optimizer(name, params.clone(), weight_decay=0.01)
    everyone = make_optimizer(name, params.clone(), weight_decay=0.01)
    for t in range(T):
        as_tensors.step(grads[t], lrs[t], active[t])
        as_arrays.step(grads[t], lrs[t].numpy(), active[t].numpy())
        everyone.step(grads[t], lrs[t].numpy(), None)
    assert torch.equal(as_tensors.params, as_arrays.params)
    all_active = make_optimizer(name, params.clone(), weight_decay=0.01)
    for t in range(T):
        all_active.step(grads[t], lrs[t], torch.ones(M, dtype=torch.bool))
    assert torch.equal(everyone.params, all_active.params)


def test_the_fused_path_runs_at_one_thread_and_gives_back_the_thread_count_it_found():
    params, grads, lrs, active = sequences(seed=6)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)
            results.append(run(BatchedAdamW(params.clone(), weight_decay=0.1), params, grads, lrs, active))
            assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    assert torch.equal(results[0], results[1])  # the same at any caller's thread count
