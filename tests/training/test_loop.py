"""Batched trainer: every member equals the same model trained alone with torch's own tools.

The reference (:func:`solo`) is the textbook loop: ``torch.manual_seed(seed)``, the model, a
``DataLoader(shuffle=True, generator=Generator().manual_seed(seed))``, ``torch.optim.AdamW``/
``SGD`` with the schedule through ``LambdaLR`` (plateau: warmup × torch's ``ReduceLROnPlateau``),
or ``schedulefree.AdamWScheduleFree``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import schedulefree
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from harness.errors import DataError, HarnessError
from harness.schedules import get_schedule
from harness.training import (
    MLP,
    MemberBatches,
    RecurrentNet,
    Stack,
    TrainResult,
    WindowData,
    build_member,
    make_model_factory,
    train,
    train_windows,
)
from harness.training.models import _RecurrentLayer

TABLE_SCHEDULES = [
    "constant",
    {"name": "step", "step_size": 0.3, "gamma": 0.5},
    {"name": "cosine", "min_lr_ratio": 0.01, "warmup": 0.1},
    "onecycle",
    {"name": "plateau", "factor": 0.5, "patience": 0, "warmup": 3},
]
MODEL = {"hidden": [8, 8], "activation": "tanh"}
SETTINGS = dict(epochs=6, batch_size=16)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Numbers compared bitwise are computed at one torch thread (sums in one order)."""


def make_data(n: int = 100, n_val: int = 30, features: int = 4, seq: int | None = None, seed: int = 0):
    """A noisy nonlinear regression; 100 rows / batch 16 leaves a partial last batch."""
    rng = np.random.default_rng(seed)
    shape = (n + n_val, features) if seq is None else (n + n_val, seq, features)
    X = rng.normal(size=shape).astype(np.float32)
    flat = X.reshape(len(X), -1)
    y = (np.sin(flat @ rng.normal(size=flat.shape[1])) + 0.3 * rng.normal(size=len(X))).astype(np.float32)
    return X[:n], y[:n], X[n:], y[n:]


def solo(X, y, Xv, yv, *, model, spec, seed, epochs, batch_size, lr, optimizer="adamw",
         weight_decay=0.0, momentum=0.9, grad_clip=None, table=None):
    """One member trained alone with torch's optimizer, scheduler and DataLoader."""
    schedule = get_schedule(spec)
    factory = model if callable(model) else make_model_factory(model, X.shape[-1])
    torch.manual_seed(seed)
    net = factory()
    loader = DataLoader(TensorDataset(torch.as_tensor(X), torch.as_tensor(y)), batch_size=batch_size,
                        shuffle=True, generator=torch.Generator().manual_seed(seed))
    total = epochs * math.ceil(len(X) / batch_size)
    if schedule.kind == "schedule_free":
        opt = schedulefree.AdamWScheduleFree(net.parameters(), lr=lr, weight_decay=weight_decay,
                                             warmup_steps=schedule.warmup_steps(total))
        opt.train()
    elif optimizer == "adamw":
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    plateau = None
    if schedule.kind == "plateau":
        holder = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)  # its LR is the multiplier
        p = schedule.params
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            holder, factor=p["factor"], patience=p["patience"], threshold=p["threshold"],
            cooldown=p["cooldown"], min_lr=p["min_lr_ratio"])
        ramp = schedule.nominal_table(total, lr) if table is None else table
    scheduler = None
    if schedule.kind == "table":
        table = schedule.table(total, lr) if table is None else table
        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: table[min(t, total - 1)] / lr)
    losses, val_losses, lrs, t = [], [], [], 0
    for _ in range(epochs):
        net.train()
        for xb, yb in loader:
            if plateau is not None:
                opt.param_groups[0]["lr"] = ramp[t] * holder.param_groups[0]["lr"]
            lrs.append(opt.param_groups[0]["lr"])
            opt.zero_grad()
            loss = F.mse_loss(net(xb), yb)
            losses.append(loss.item())
            loss.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
            opt.step()
            if schedule.kind == "schedule_free":
                lrs[-1] = opt.param_groups[0]["scheduled_lr"]
            if scheduler is not None:
                scheduler.step()
            t += 1
        if Xv is not None:
            if schedule.kind == "schedule_free":
                opt.eval()
            net.eval()
            with torch.no_grad():
                val = ((net(torch.as_tensor(Xv)).double() - torch.as_tensor(yv).double()) ** 2).mean().item()
            val_losses.append(val)
            if schedule.kind == "schedule_free":
                opt.train()
            if plateau is not None:
                plateau.step(val)
    if schedule.kind == "schedule_free":
        opt.eval()
    weights = torch.cat([p.detach().reshape(-1) for p in net.parameters()]).numpy()
    return weights, np.array(losses), np.array(val_losses), np.array(lrs)


def member_weights(result: TrainResult, m: int) -> np.ndarray:
    return torch.cat([value[m].reshape(-1) for value in result.state.values()]).numpy()


def assert_close(actual, expected, rtol=1e-5):
    """Equal to ``rtol`` relative to the reference's scale (elementwise relative fails near 0)."""
    expected = np.asarray(expected, dtype=np.float64)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * np.nanmax(np.abs(expected)))


def assert_matches_solo(result, m, data, *, model, spec, seed, table=None, **settings):
    weights, losses, val, lrs = solo(*data, model=model, spec=spec, seed=seed, table=table, **settings)
    assert_close(member_weights(result, m), weights)
    assert_close(result.step_loss[m], losses)
    assert_close(result.val_loss[m], val)
    assert_close(result.lr[m], lrs, rtol=1e-9)


@pytest.mark.parametrize(
    ("optimizer", "extra"),
    [("adamw", dict(lr=0.02, weight_decay=0.05)),
     ("sgd", dict(lr=0.05, momentum=0.9, weight_decay=0.01, grad_clip=0.5))],
)
def test_every_member_equals_its_solo_torch_run(optimizer, extra):
    data = make_data()
    result = train(*data, model=MODEL, schedules=TABLE_SCHEDULES, seeds=2, seed=3,
                   optimizer=optimizer, **extra, **SETTINGS)
    assert [label for label, _ in result.labels] == [
        get_schedule(spec).label for spec in TABLE_SCHEDULES for _ in range(2)]
    assert [seed for _, seed in result.labels] == [3, 4] * len(TABLE_SCHEDULES)
    for m, (spec, seed) in enumerate((spec, seed) for spec in TABLE_SCHEDULES for seed in (3, 4)):
        assert_matches_solo(result, m, data, model=MODEL, spec=spec, seed=seed, optimizer=optimizer,
                            **extra, **SETTINGS)
    after_warmup = result.lr[-2:, 3:]
    assert after_warmup.min() <= 0.5 * extra["lr"] * (1 + 1e-12), "the plateau members never reduced their LR"
    assert not result.diverged.any()


def test_schedule_free_members_equal_solo_schedulefree_runs():
    data = make_data()
    schedules = ["schedule_free", {"name": "schedule_free", "warmup": 0.2}, "constant"]
    settings = dict(lr=0.02, weight_decay=0.05, **SETTINGS)
    result = train(*data, model=MODEL, schedules=schedules, seeds=2, **settings)
    for m, (spec, seed) in enumerate((spec, seed) for spec in schedules for seed in (0, 1)):
        assert_matches_solo(result, m, data, model=MODEL, spec=spec, seed=seed, **settings)
    # eval-mode (averaged) weights are what predict uses
    x_val = torch.as_tensor(data[2])
    net = build_member(make_model_factory(MODEL, 4), 0)
    torch.nn.utils.vector_to_parameters(torch.as_tensor(member_weights(result, 0)), net.parameters())
    assert_close(result.predict(data[2])[0], net(x_val).detach().numpy())


def test_in_float64_members_equal_solo_runs_far_beyond_float32_roundoff():
    """Long runs amplify float32 roundoff (batched vs per-member matmuls sum in different orders);
    in float64 the same comparison is exact to ~1e-12, so the formulas are the same."""
    data = make_data(n=300, n_val=60, features=10)
    model = lambda: MLP(10, (32, 32)).double()  # noqa: E731
    schedules = [{"name": "cosine", "warmup": 0.1}, {"name": "plateau", "patience": 1}]
    settings = dict(epochs=10, batch_size=64, lr=0.01, weight_decay=0.01)
    result = train(*data, model=model, schedules=schedules, seeds=2, **settings)
    for m, (spec, seed) in enumerate((spec, seed) for spec in schedules for seed in (0, 1)):
        weights, losses, val, _ = solo(*[np.asarray(a, np.float64) for a in data], model=model, spec=spec,
                                       seed=seed, **settings)
        assert_close(member_weights(result, m), weights, rtol=1e-10)
        assert_close(result.step_loss[m], losses, rtol=1e-10)
        assert_close(result.val_loss[m], val, rtol=1e-10)


def test_a_member_is_the_same_alone_or_beside_others():
    data = make_data()
    settings = dict(model=MODEL, lr=0.02, weight_decay=0.05, **SETTINGS)
    crowd = train(*data, schedules=["constant", "cosine", "schedule_free"], seeds=3, seed=5, **settings)
    for m, (schedule, seed) in enumerate([("cosine", 6), ("schedule_free", 7)]):
        alone = train(*data, schedules=[schedule], seeds=1, seed=seed, **settings)
        index = crowd.labels.index((schedule, seed))
        np.testing.assert_array_equal(member_weights(alone, 0), member_weights(crowd, index))
        np.testing.assert_array_equal(alone.step_loss[0], crowd.step_loss[index])
        np.testing.assert_array_equal(alone.val_loss[0], crowd.val_loss[index])


@pytest.mark.parametrize(("optimizer", "huge_lr"), [("adamw", 50.0), ("sgd", 1e4)])
def test_a_diverging_member_is_frozen_and_flagged_and_the_others_match_solo(optimizer, huge_lr):
    data = make_data()
    steps = SETTINGS["epochs"] * math.ceil(len(data[0]) / SETTINGS["batch_size"])
    tables = np.full((3, steps), 0.01)
    tables[1] = huge_lr
    result = train(*data, model=MODEL, schedules=["constant"], seeds=3, optimizer=optimizer, lr=0.01,
                   lr_tables=tables, **SETTINGS)
    assert result.diverged.tolist() == [False, True, False]
    losses = result.step_loss[1]
    frozen_at = np.flatnonzero(np.isnan(result.lr[1]))[0]
    bad = losses[frozen_at]
    assert not np.isfinite(bad) or bad > 1e3 * losses[0]
    assert np.isnan(losses[frozen_at + 1:]).all() and np.isnan(result.lr[1, frozen_at:]).all()
    assert np.isfinite(result.lr[1, :frozen_at]).all()
    assert result.stopped_epoch[1] == frozen_at // result.steps_per_epoch
    assert np.isnan(result.val_loss[1, result.stopped_epoch[1]:]).all()
    for m in (0, 2):
        assert_matches_solo(result, m, data, model=MODEL, spec="constant", seed=m, optimizer=optimizer,
                            lr=0.01, table=tables[m], **SETTINGS)


def test_early_stopping_restores_each_members_best_epoch_weights():
    data = make_data(n=40, n_val=40, features=6)  # few rows, wide net, high LR: it overfits
    patience = 2
    result = train(*data, model={"hidden": [32, 32]}, schedules=["constant", "cosine"], seeds=3,
                   epochs=30, batch_size=8, lr=0.03, patience=patience)
    val = result.val_loss
    stopped = result.stopped_epoch
    assert (stopped < 30).any(), "no member stopped early; the test would not test anything"
    for m in range(len(val)):
        trained = val[m, :stopped[m]]
        assert np.isfinite(trained).all() and np.isnan(val[m, stopped[m]:]).all()
        assert result.best_epoch[m] == np.argmin(trained)
        if stopped[m] < 30:
            assert stopped[m] == result.best_epoch[m] + 1 + patience
        # the weights it ends with give exactly its best validation loss
        prediction = result.predict(data[2])[m].astype(np.float64)
        assert_close(np.mean((prediction - data[3]) ** 2), val[m, result.best_epoch[m]], rtol=1e-6)


def test_without_early_stopping_members_keep_their_last_weights_and_no_validation_means_no_val_loss():
    data = make_data()
    result = train(*data, model=MODEL, schedules=["constant"], seeds=2, epochs=4, batch_size=16, lr=0.05)
    last = np.mean((result.predict(data[2]).astype(np.float64) - data[3]) ** 2, axis=1)
    assert_close(last, result.val_loss[:, -1], rtol=1e-6)
    blind = train(data[0], data[1], model=MODEL, schedules=["constant", {"name": "plateau", "patience": 0}],
                  seeds=1, epochs=4, batch_size=16, lr=0.05, patience=3)
    assert np.isnan(blind.val_loss).all() and (blind.best_epoch == -1).all()
    assert (blind.stopped_epoch == 4).all()


def test_same_inputs_give_bitwise_identical_results_and_leave_the_global_rng_alone():
    data = make_data()
    settings = dict(model={"hidden": [8], "dropout": 0.2}, seeds=2, lr=0.02, seed=1, patience=2,
                    schedules=["cosine", {"name": "plateau", "patience": 0}, "schedule_free"], **SETTINGS)
    rng_before = torch.get_rng_state()
    first, second = train(*data, **settings), train(*data, **settings)
    assert torch.equal(torch.get_rng_state(), rng_before)
    for name in ("step_loss", "val_loss", "lr", "diverged", "best_epoch", "stopped_epoch"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    for name, value in first.state.items():
        assert torch.equal(value, second.state[name])
    np.testing.assert_array_equal(first.predict(data[2]), second.predict(data[2]))


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")], ids=["str", "torch.device"])
def test_training_on_the_cpu_device_gives_bitwise_the_default_result(device):
    data = make_data()
    settings = dict(model={"hidden": [8], "dropout": 0.2}, seeds=2, lr=0.02, seed=1, patience=2,
                    schedules=["cosine", {"name": "plateau", "patience": 0}, "schedule_free"], **SETTINGS)
    default = train_windows([WindowData(*data), WindowData(data[0][:60], data[1][:60])], **settings)
    placed = train_windows([WindowData(*data), WindowData(data[0][:60], data[1][:60])], device=device, **settings)
    for ours, theirs in zip(placed, default):
        assert ours.stack.device == torch.device("cpu")
        for name in ("step_loss", "val_loss", "lr", "diverged", "best_epoch", "stopped_epoch"):
            np.testing.assert_array_equal(getattr(ours, name), getattr(theirs, name))
        for name, value in theirs.state.items():
            assert torch.equal(ours.state[name], value)
        np.testing.assert_array_equal(ours.predict(data[2]), theirs.predict(data[2]))


def test_warm_start_from_a_previous_result():
    data = make_data()
    first = train(*data, model=MODEL, schedules=["constant", "schedule_free"], seeds=2, lr=0.02, **SETTINGS)
    steps = SETTINGS["epochs"] * math.ceil(len(data[0]) / SETTINGS["batch_size"])
    # with LR 0 AdamW changes nothing: the result is exactly the state it started from
    still = train(*data, model=MODEL, schedules=["constant", "cosine"], seeds=2, lr=0.02,
                  init_state=first, lr_tables=np.zeros((4, steps)), **SETTINGS)
    for name, value in first.state.items():
        assert torch.equal(still.state[name], value)
    # and a warm start continues training from those weights, like a solo run that loads them
    warm = train(*data, model=MODEL, schedules=["cosine"], seeds=1, lr=0.02, init_state={
        name: value[:1] for name, value in first.state.items()}, **SETTINGS)
    start = {name: value[0] for name, value in first.state.items()}

    def loaded():
        net = make_model_factory(MODEL, 4)()
        net.load_state_dict(start)
        return net

    assert_matches_solo(warm, 0, data, model=loaded, spec="cosine", seed=0, lr=0.02, **SETTINGS)


def test_gru_and_lstm_members_train_through_the_vmap_path_and_equal_solo_runs():
    data = make_data(n=48, n_val=16, features=3, seq=5)
    for cell in ("gru", "lstm"):
        model = {"type": cell, "hidden": [6, 4]}
        result = train(*data, model=model, schedules=["cosine"], seeds=2, epochs=2, batch_size=16, lr=0.02)
        assert result.stack.path == "vmap"
        for m in range(2):
            assert_matches_solo(result, m, data, model=model, spec="cosine", seed=m, epochs=2,
                                batch_size=16, lr=0.02)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_builtin_recurrent_layer_equals_torch_rnn_with_the_same_init(cell):
    reference = {"gru": nn.GRU, "lstm": nn.LSTM}[cell]
    x = torch.randn(4, 7, 5)
    for seed in (0, 1):
        torch.manual_seed(seed)
        torch_rnn = reference(5, 6, batch_first=True)
        torch.manual_seed(seed)
        ours = _RecurrentLayer(cell, 5, 6)
        for (name, theirs), mine in zip(torch_rnn.named_parameters(), ours.parameters()):
            assert torch.equal(theirs, mine), name
        torch.testing.assert_close(ours(x), torch_rnn(x)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu", "silu"])
def test_batched_matmul_and_vmap_paths_agree_with_each_member_alone(activation):
    factory = make_model_factory({"hidden": [7, 5], "activation": activation}, 3, n_outputs=2)
    seeds = [4, 9, 2]
    x = torch.randn(3, 11, 3)
    outputs = {path: Stack(factory, seeds, path=path).forward(x, training=False) for path in ("bmm", "vmap")}
    for m, seed in enumerate(seeds):
        alone = build_member(factory, seed)(x[m])
        for out in outputs.values():
            torch.testing.assert_close(out[m], alone, rtol=1e-6, atol=1e-6)
    shared = Stack(factory, seeds).forward(x[0], training=False, shared=True)
    torch.testing.assert_close(shared[1], build_member(factory, 9)(x[0]), rtol=1e-6, atol=1e-6)


def test_member_init_is_the_factorys_init_under_the_member_seed():
    factory = make_model_factory({"hidden": [5]}, 3)
    stack = Stack(factory, [0, 7])
    torch.manual_seed(7)
    solo_net = factory()
    for name, value in solo_net.named_parameters():
        assert torch.equal(stack.state()[name][1], value)
    assert isinstance(solo_net, MLP) and isinstance(make_model_factory({"type": "gru", "hidden": [3]}, 2)(),
                                                     RecurrentNet)


def test_the_batched_matmul_weights_are_stored_transposed_behind_views_of_the_modules_shape():
    """The bmm path keeps its matmul layers' weights ``[in, out]`` in the flat buffer (so their
    gradients add in contiguously); every view, state, load and pickle still speaks ``[out, in]``."""
    import pickle

    factory = make_model_factory({"hidden": [6, 5]}, 3)
    stack = Stack(factory, [0, 7])
    assert stack.transposed == {"net.0.weight", "net.2.weight"}  # not the narrow head, net.4
    assert not Stack(factory, [0], path="vmap").transposed
    torch.manual_seed(7)
    solo = dict(factory().named_parameters())
    first = solo["net.0.weight"]  # [6, 3], stored as its transpose at the buffer's start
    assert torch.equal(stack.flat[1, :first.numel()], first.detach().t().reshape(-1))
    for name, value in solo.items():
        assert stack.params[name].shape[1:] == value.shape and torch.equal(stack.state()[name][1], value)
        assert stack.state()[name].is_contiguous()
        assert stack.params[name].grad.stride() == stack.params[name].stride()
    other = Stack(factory, [3, 4])
    other.load_state(stack.state())
    assert torch.equal(other.flat, stack.flat)
    copy = pickle.loads(pickle.dumps(stack))
    assert copy.params["net.2.weight"].data_ptr() == copy.flat[:, 6 * 3 + 6:].data_ptr()
    assert all(torch.equal(copy.state()[name], value) for name, value in stack.state().items())


def test_member_batches_are_the_dataloader_batches_for_that_seed():
    n, batch_size = 23, 5
    batches = MemberBatches(torch.arange(n).expand(3, -1), [0, 11, 42])
    loaders = [DataLoader(TensorDataset(torch.arange(n)), batch_size=batch_size, shuffle=True,
                          generator=torch.Generator().manual_seed(seed)) for seed in (0, 11, 42)]
    for _ in range(3):
        order = batches.epoch()
        for m, loader in enumerate(loaders):
            assert torch.equal(order[m], torch.cat([b for (b,) in loader]))
    shifted = MemberBatches(torch.arange(100, 100 + n).expand(1, -1), [0]).epoch()
    assert torch.equal(shifted[0] - 100, MemberBatches(torch.arange(n)[None], [0]).epoch()[0])


def test_predict_is_chunked_eval_mode_and_shaped_members_by_rows():
    data = make_data()
    result = train(*data, model={"hidden": [8], "dropout": 0.5}, schedules=["constant"], seeds=2, epochs=1, lr=0.01)
    whole = result.predict(data[2])
    assert whole.shape == (2, len(data[2]))
    assert_close(result.predict(data[2], chunk_rows=7), whole, rtol=1e-6)  # other matmul shapes: roundoff
    np.testing.assert_array_equal(result.predict(data[2]), whole)  # no dropout at predict time
    two = train(data[0], np.stack([data[1], -data[1]], 1), model=MODEL, seeds=1, epochs=1)
    assert two.predict(data[2]).shape == (1, len(data[2]), 2)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(lr=0.0), HarnessError, "lr: must be > 0"),
        (dict(epochs=0), HarnessError, "epochs: must be a whole number > 0"),
        (dict(optimizer="adam"), HarnessError, "did you mean 'adamw'"),
        (dict(optimizer="sgd", schedules=["schedule_free"]), HarnessError, "use optimizer 'adamw'"),
        (dict(schedules=["cosine", "cosine"]), HarnessError, "'cosine' is listed twice"),
        (dict(schedules=["cosin"]), HarnessError, "did you mean 'cosine'"),
        (dict(patience=0), HarnessError, "patience: must be"),
        (dict(lr_tables=np.ones((2, 3))), HarnessError, "lr_tables: shape"),
        (dict(init_state={"w": torch.zeros(3)}), HarnessError, "init_state: parameter names"),
        (dict(model={"hiden": [3]}), HarnessError, "did you mean 'hidden'"),
        (dict(model={"activation": "relu6"}), HarnessError, "unknown activation"),
        (dict(model={"type": "transformer"}), HarnessError, "unknown model type"),
        (dict(model=lambda: nn.Linear(4, 1)), HarnessError, "model: output shape"),
        (dict(model=lambda: nn.GRU(4, 2)), HarnessError, "cannot run under torch.func.vmap"),
    ],
)
def test_user_mistakes_raise_one_line_errors(kwargs, error, message):
    X, y, Xv, yv = make_data(n=20, n_val=5)
    with pytest.raises(error, match=message.replace("(", r"\(")) as info:
        train(X, y, Xv, yv, **{"seeds": 1, "epochs": 1, **kwargs})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((np.ones((10, 3)), np.ones(9)), "with the same n, got"),
        ((np.ones(10), np.ones(10)), "X_train: expected shape"),
        ((np.full((10, 3), np.nan), np.ones(10)), "X_train: contains NaN"),
        ((np.ones((10, 3)), np.ones(10), np.ones((4, 3))), "give both"),
        ((np.ones((10, 3)), np.ones(10), np.ones((4, 2)), np.ones(4)), "X_val: expected shape"),
    ],
)
def test_bad_data_raises_data_errors(args, message):
    with pytest.raises(DataError, match=message):
        train(*args, seeds=1, epochs=1)


def test_a_result_pickles_and_predicts_the_same_after_unpickling():
    import pickle

    data = make_data()
    result = train(*data, model=MODEL, schedules=["constant", "schedule_free"], seeds=1, epochs=2, lr=0.01)
    copy = pickle.loads(pickle.dumps(result))
    np.testing.assert_array_equal(copy.predict(data[2]), result.predict(data[2]))
    assert copy.stack.params["net.0.weight"].grad.data_ptr() == copy.stack.flat_grad.data_ptr()


def test_the_package_exports_its_api_lazily_and_its_memory_budget_without_torch():
    import subprocess
    import sys

    import harness.training

    for name in harness.training.__all__:
        assert getattr(harness.training, name) is not None
    assert harness.training.train is train and harness.training.STACK_MEMORY_BUDGET == 512 * 2**20
    code = ("import sys; from harness.training.budget import STACK_MEMORY_BUDGET; import harness.training; "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
