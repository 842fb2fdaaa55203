"""Budget and LR axes, training losses and user networks in the stacked trainer.

A member of a budget x LR grid equals, bitwise, the same member trained alone at its budget and
LR; each loss trains as torch's loss would (a member equals its solo torch run) and validates with
the same loss; a user's module gets one-line errors when it cannot be stacked.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from harness.errors import DataError, HarnessError
from harness.schedules.candidates import candidate_label, candidates, lr_text
from harness.training import make_model_factory, train
from harness.training.models import UserModelFactory, check_module

MODEL = {"hidden": [8, 8], "activation": "tanh"}
SCHEDULES = ["constant", {"name": "cosine", "warmup": 0.2}, {"name": "plateau", "patience": 0},
             "schedule_free", "onecycle"]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Numbers compared bitwise are computed at one torch thread."""


def make_data(n: int = 90, n_val: int = 30, features: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n + n_val, features)).astype(np.float32)
    y = (np.sin(X @ rng.normal(size=features)) + 0.3 * rng.normal(size=len(X))).astype(np.float32)
    return X[:n], y[:n], X[n:], y[n:]


def assert_member_equals(grid, m, alone, k=0):
    """Member ``m`` of ``grid`` is bitwise member ``k`` of ``alone`` over ``alone``'s steps; NaN after."""
    steps, epochs = alone.step_loss.shape[1], alone.val_loss.shape[1]
    for name in alone.state:
        np.testing.assert_array_equal(grid.state[name][m], alone.state[name][k])
    np.testing.assert_array_equal(grid.step_loss[m, :steps], alone.step_loss[k])
    np.testing.assert_array_equal(grid.lr[m, :steps], alone.lr[k])
    np.testing.assert_array_equal(grid.val_loss[m, :epochs], alone.val_loss[k])
    assert np.isnan(grid.step_loss[m, steps:]).all() and np.isnan(grid.val_loss[m, epochs:]).all()
    assert grid.stopped_epoch[m] == alone.stopped_epoch[k] and grid.best_epoch[m] == alone.best_epoch[k]
    assert grid.diverged[m] == alone.diverged[k]


@pytest.mark.parametrize(("schedules", "patience"), [
    (["constant", "schedule_free"], None),
    pytest.param(SCHEDULES, None, marks=pytest.mark.slow),
    pytest.param(SCHEDULES, 2, marks=pytest.mark.slow),
])
def test_every_member_of_a_budget_and_lr_grid_equals_its_training_alone(schedules, patience):
    data = make_data()
    settings = dict(model=MODEL, batch_size=16, weight_decay=0.01, patience=patience)
    grid = train(*data, schedules=schedules, seeds=2, seed=3, epochs=[2, 5], lr=[0.01, 0.03], **settings)
    expected = [(candidate_label(c.schedule.label, c.epochs, c.lr, show_epochs=True, show_lr=True), seed)
                for c in candidates(schedules, [2, 5], [0.01, 0.03]) for seed in (3, 4)]
    assert grid.labels == expected and grid.labels[0] == ("constant@e2,lr1e-2", 3)
    assert grid.val_loss.shape[1] == 5 and grid.step_loss.shape[1] == 5 * grid.steps_per_epoch
    for m, c in enumerate(c for c in candidates(schedules, [2, 5], [0.01, 0.03]) for _ in range(2)):
        assert grid.budget[m] == c.epochs and grid.base_lr[m] == c.lr
        alone = train(*data, schedules=[c.spec], seeds=1, seed=grid.labels[m][1], epochs=c.epochs, lr=c.lr,
                      **settings)
        assert_member_equals(grid, m, alone)
        np.testing.assert_array_equal(grid.predict(data[2])[m], alone.predict(data[2])[0])


def test_one_budget_and_one_lr_in_lists_change_nothing():
    data = make_data()
    plain = train(*data, model=MODEL, schedules=["constant", "cosine"], seeds=2, epochs=3, lr=0.02, batch_size=16)
    listed = train(*data, model=MODEL, schedules=["constant", "cosine"], seeds=2, epochs=[3], lr=[0.02], batch_size=16)
    assert plain.labels == listed.labels == [("constant", 0), ("constant", 1), ("cosine", 0), ("cosine", 1)]
    for name in plain.state:
        np.testing.assert_array_equal(plain.state[name], listed.state[name])
    assert (plain.budget == 3).all() and (plain.base_lr == 0.02).all()


def test_a_budget_grid_with_lr_tables_uses_each_members_own_columns():
    data = make_data()
    steps = math.ceil(len(data[0]) / 16)
    tables = np.tile(np.linspace(0.03, 0.0, 4 * steps), (4, 1))  # [members, longest budget's steps]
    grid = train(*data, model=MODEL, schedules=["constant"], seeds=2, epochs=[2, 4], batch_size=16, lr_tables=tables)
    np.testing.assert_array_equal(grid.lr[0, :2 * steps], tables[0, :2 * steps])
    alone = train(*data, model=MODEL, schedules=["constant"], seeds=1, epochs=2, batch_size=16,
                  lr_tables=tables[:1, :2 * steps])
    assert_member_equals(grid, 0, alone)
    with pytest.raises(HarnessError, match=r"lr_tables: shape \(4, 3\)"):
        train(*data, model=MODEL, schedules=["constant"], seeds=2, epochs=[2, 4], batch_size=16,
              lr_tables=np.ones((4, 3)))


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(epochs=[2, 2]), "epochs: lists 2 twice"),
    (dict(epochs=[]), "epochs: an empty list"),
    (dict(epochs=[3, 0]), "epochs: must be a whole number > 0"),
    (dict(lr=[1e-3, -1.0]), "lr: must be > 0"),
    (dict(lr=[1e-3, 0.001]), "lr: lists 1e-3 twice"),
    (dict(loss="mse2"), "unknown loss 'mse2'"),
    (dict(loss="huber", huber_delta=0.0), "huber_delta: must be a finite number > 0"),
])
def test_bad_axes_and_losses_are_one_line_errors(kwargs, message):
    X, y, Xv, yv = make_data(n=20, n_val=5)
    with pytest.raises(HarnessError, match=message) as info:
        train(X, y, Xv, yv, **{"seeds": 1, "epochs": 1, **kwargs})
    assert "\n" not in str(info.value)


def test_labels_write_lrs_short_and_distinct():
    assert [lr_text(v) for v in (1e-3, 3e-4, 2.5e-3, 0.05, 1.0, 1.25e-4)] == [
        "1e-3", "3e-4", "2.5e-3", "5e-2", "1e0", "1.25e-4"]
    labels = [c.label for c in candidates([{"name": "cosine", "min_lr_ratio": 0.01}], [20, 80], 1e-3)]
    assert labels == ["cosine(min_lr_ratio=0.01)@e20", "cosine(min_lr_ratio=0.01)@e80"]
    assert [c.label for c in candidates(["wsd"], 40, [1e-3, 3e-3])] == ["wsd@lr1e-3", "wsd@lr3e-3"]


# --- losses --------------------------------------------------------------------------------------

TORCH_LOSSES = {
    "mse": lambda out, y: F.mse_loss(out, y),
    "mae": lambda out, y: F.l1_loss(out, y),
    "huber": lambda out, y: F.huber_loss(out, y, delta=0.4),
    "bce": lambda out, y: F.binary_cross_entropy_with_logits(out, y),
}


def solo_loss(X, y, Xv, yv, *, loss, seed, epochs, batch_size, lr):
    """One member alone: torch's AdamW and DataLoader, torch's own loss, validation with it."""
    factory = make_model_factory(MODEL, X.shape[-1])
    torch.manual_seed(seed)
    net = factory()
    loader = DataLoader(TensorDataset(torch.as_tensor(X), torch.as_tensor(y)), batch_size=batch_size,
                        shuffle=True, generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    fn, val = TORCH_LOSSES[loss], []
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            fn(net(xb), yb).backward()
            opt.step()
        with torch.no_grad():
            val.append(fn(net(torch.as_tensor(Xv)).double(), torch.as_tensor(yv).double()).item())
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()]).numpy(), np.array(val)


@pytest.mark.parametrize("loss", ["mse", "mae", "huber", "bce"])
def test_each_loss_trains_as_torchs_loss_and_validates_with_it(loss):
    X, y, Xv, yv = make_data()
    if loss == "bce":
        y, yv = (y > 0).astype(np.float32), (yv > 0).astype(np.float32)
    settings = dict(epochs=4, batch_size=16, lr=0.02)
    result = train(X, y, Xv, yv, model=MODEL, schedules=["constant"], seeds=2, loss=loss, huber_delta=0.4, **settings)
    for m in range(2):
        weights, val = solo_loss(X, y, Xv, yv, loss=loss, seed=m, **settings)
        flat = torch.cat([value[m].reshape(-1) for value in result.state.values()]).numpy()
        np.testing.assert_allclose(flat, weights, rtol=1e-5, atol=1e-5 * np.abs(weights).max())
        np.testing.assert_allclose(result.val_loss[m], val, rtol=1e-5)
    # the last validation loss is the loss of the members' own predictions
    out = torch.as_tensor(result.predict(Xv)).double()
    last = [TORCH_LOSSES[loss](out[m], torch.as_tensor(yv).double()).item() for m in range(2)]
    np.testing.assert_allclose(result.val_loss[:, -1], last, rtol=1e-6)


def test_huber_takes_one_delta_per_window():
    from harness.training import WindowData, train_windows

    X, y, Xv, yv = make_data()
    small, large = (train_windows([WindowData(X, y, Xv, yv, huber_delta=d)], schedules=["constant"], seeds=1,
                                  epochs=2, model=MODEL, loss="huber")[0] for d in (0.05, 10.0))
    both = train_windows([WindowData(X, y, Xv, yv, huber_delta=0.05), WindowData(X, y, Xv, yv, huber_delta=10.0)],
                         schedules=["constant"], seeds=1, epochs=2, model=MODEL, loss="huber")
    np.testing.assert_array_equal(both[0].val_loss, small.val_loss)
    np.testing.assert_array_equal(both[1].val_loss, large.val_loss)
    mse = train(X, y, Xv, yv, schedules=["constant"], seeds=1, epochs=2, model=MODEL)
    np.testing.assert_allclose(large.step_loss, 0.5 * mse.step_loss, rtol=1e-5)  # a wide delta: half the squares


def test_bce_needs_labels():
    X, y, Xv, yv = make_data(n=20, n_val=5)
    with pytest.raises(DataError, match="bce trains a classifier on labels in"):
        train(X, y, Xv, yv, seeds=1, epochs=1, loss="bce")


# --- a user's network ------------------------------------------------------------------------------


class Wobbly(nn.Module):
    """Its width depends on the seed's draws: members of different seeds differ."""

    def __init__(self) -> None:
        super().__init__()
        width = int(torch.randint(3, 9, ()).item())
        self.a, self.b = nn.Linear(4, width), nn.Linear(width, 1)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x))).squeeze(-1)


class Branchy(nn.Module):
    """A Python branch on a tensor's value: not vmap-able."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 1)

    def forward(self, x):
        out = self.a(x).squeeze(-1)
        return out if out.sum().item() > 0 else -out


class Normed(nn.Module):
    """BatchNorm updates its running statistics in the forward: the stack cannot keep them per member."""

    def __init__(self) -> None:
        super().__init__()
        self.norm, self.a = nn.BatchNorm1d(4), nn.Linear(4, 1)

    def forward(self, x):
        return self.a(self.norm(x)).squeeze(-1)


@pytest.mark.parametrize(("factory", "message"), [
    (Wobbly, r"seed 0 and seed 1 build different parameters \(a.weight \[\d, 4\] vs a.weight \[\d, 4\]\)"),
    (Branchy, "its forward cannot run under torch.func.vmap"),
    (Normed, "its training forward updates the buffer 'norm.running_mean'"),
])
def test_a_module_that_cannot_be_stacked_is_a_one_line_error(factory, message):
    X, y, Xv, yv = make_data(n=20, n_val=5)
    with pytest.raises(HarnessError, match=message) as info:
        train(X, y, Xv, yv, model=factory, seeds=3, epochs=1)
    assert "\n" not in str(info.value)


NET = '''
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, n_features, n_outputs=1, width=8):
        super().__init__()
        self.n_outputs = n_outputs
        self.body = nn.Sequential(nn.Linear(n_features, width), nn.LayerNorm(width), nn.SiLU())
        self.head = nn.Linear(width, n_outputs)

    def forward(self, x):
        out = self.head(self.body(x))
        return out.squeeze(-1) if self.n_outputs == 1 else out


class NotAModule:
    pass
'''


@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    """A working folder holding ``tinynet.py`` (imported as ``tinynet``), the cwd for the test."""
    (tmp_path / "tinynet.py").write_text(textwrap.dedent(NET))
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def test_a_user_class_from_the_working_folder_trains_through_vmap_as_its_own_module_would(user_folder):
    data = make_data()
    model = {"type": "tinynet:TinyNet", "params": {"width": 6}}
    factory = make_model_factory(model, n_features=4)
    assert isinstance(factory, UserModelFactory) and factory().body[0].out_features == 6
    result = train(*data, model=model, schedules=["constant", "cosine"], seeds=2, epochs=3, lr=0.01, batch_size=16)
    assert result.stack.path == "vmap"
    from tinynet import TinyNet  # the same module, as a plain factory: the same numbers

    plain = train(*data, model=lambda: TinyNet(n_features=4, width=6), schedules=["constant", "cosine"], seeds=2,
                  epochs=3, lr=0.01, batch_size=16)
    np.testing.assert_array_equal(result.val_loss, plain.val_loss)
    import pickle

    assert pickle.loads(pickle.dumps(factory)) == factory


@pytest.mark.parametrize(("model", "message"), [
    ({"type": "nosuchmodule:Net"}, "cannot import module 'nosuchmodule'"),
    ({"type": "tinynet:TinyNt"}, r"has no class 'TinyNt' \(did you mean 'TinyNet'\?\)"),
    ({"type": "tinynet:NotAModule"}, "is not a torch.nn.Module subclass"),
    ({"type": "tinynet:TinyNet", "params": {"depth": 3}}, r"TinyNet\(n_features=4, n_outputs=1, depth=3\) failed with"),
    ({"type": "tinynet:TinyNet", "params": {"n_features": 3}}, "model.params.n_features: set by the harness"),
    ({"type": "tinynet:TinyNet", "hidden": [3]}, "model.hidden: a user's model"),
])
def test_user_class_mistakes_are_one_line_errors(user_folder, model, message):
    X, y, Xv, yv = make_data(n=20, n_val=5)
    with pytest.raises(HarnessError, match=message) as info:
        train(X, y, Xv, yv, model=model, seeds=1, epochs=1)
    assert "\n" not in str(info.value)


def test_built_in_models_are_not_probed():
    factory = make_model_factory({"type": "gru", "hidden": [4]}, n_features=3)
    check_module(factory, (5, 3), [0, 1])  # returns at once (built-ins are known to stack)
