"""LR schedules: equal to their anchors (torch by stepping it; Keras, transformers, MiniCPM by
their documented formulas written here independently), warmup composition, plateau, window
boundary policies, and the one-line errors."""

from __future__ import annotations

import inspect
import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.optim import lr_scheduler as tls

from harness.errors import HarnessError
from harness.schedules import (
    SCHEDULES,
    PlateauState,
    Schedule,
    catalogue,
    format_catalogue,
    get_schedule,
    lr_table,
    window_lr_table,
)

RTOL = 1e-9
LENGTHS = (1, 7, 64, 301)
TABLE_NAMES = [name for name, entry in SCHEDULES.items() if entry.kind == "table"]


def torch_lrs(cls: type, total: int, **kwargs) -> np.ndarray:
    """The LR torch's scheduler gives at steps 0..total-1: the group's lr before each step."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0, momentum=0.9)
    scheduler = cls(optimizer, **kwargs)
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return np.array(lrs, dtype=np.float64)


def ours(total: int, **spec) -> np.ndarray:
    return lr_table(spec, total)


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=0)


# --------------------------------------------------------------------------- torch anchors


@pytest.mark.parametrize("total", LENGTHS)
@pytest.mark.parametrize("step_size", [1, 3, 10])
@pytest.mark.parametrize("gamma", [0.1, 0.5, 0.9])
def test_step_equals_torch_steplr(total, step_size, gamma):
    expected = torch_lrs(tls.StepLR, total, step_size=step_size, gamma=gamma)
    assert_same(ours(total, name="step", step_size=step_size, gamma=gamma), expected)


@pytest.mark.parametrize("total", LENGTHS)
@pytest.mark.parametrize("milestones", [[1], [2, 5], [3, 4, 30], [10, 20, 40, 200]])
@pytest.mark.parametrize("gamma", [0.1, 0.5])
def test_multistep_equals_torch_multisteplr(total, milestones, gamma):
    expected = torch_lrs(tls.MultiStepLR, total, milestones=milestones, gamma=gamma)
    assert_same(ours(total, name="multistep", milestones=milestones, gamma=gamma), expected)


@pytest.mark.parametrize("total", LENGTHS)
@pytest.mark.parametrize("gamma", [0.5, 0.9, 0.999])
def test_exponential_equals_torch_exponentiallr(total, gamma):
    assert_same(ours(total, name="exponential", gamma=gamma), torch_lrs(tls.ExponentialLR, total, gamma=gamma))


@pytest.mark.parametrize("total", LENGTHS)
@pytest.mark.parametrize("final_ratio", [0.5, 0.01, 1e-4])
def test_exponential_final_ratio_reaches_it_at_T(total, final_ratio):
    steps = np.arange(total)
    assert_same(ours(total, name="exponential", final_ratio=final_ratio), final_ratio ** (steps / total))


@pytest.mark.parametrize("total", LENGTHS)
@pytest.mark.parametrize("end_ratio", [0.0, 0.1, 0.5])
def test_linear_equals_torch_linearlr(total, end_ratio):
    expected = torch_lrs(tls.LinearLR, total, start_factor=1.0, end_factor=end_ratio, total_iters=total)
    assert_same(ours(total, name="linear", end_ratio=end_ratio), expected)


@pytest.mark.parametrize("total", LENGTHS)
def test_linear_equals_torch_polynomiallr_power_one(total):
    expected = torch_lrs(tls.PolynomialLR, total, total_iters=total, power=1.0)
    assert_same(ours(total, name="linear"), expected)


@pytest.mark.parametrize("total", LENGTHS)
@pytest.mark.parametrize("power", [0.5, 1.0, 2.0, 3.0])
def test_polynomial_equals_torch_polynomiallr(total, power):
    expected = torch_lrs(tls.PolynomialLR, total, total_iters=total, power=power)
    assert_same(ours(total, name="polynomial", power=power), expected)


@pytest.mark.parametrize("total", LENGTHS)
@pytest.mark.parametrize("min_lr_ratio", [0.0, 0.01, 0.5])
def test_cosine_equals_torch_cosineannealinglr(total, min_lr_ratio):
    expected = torch_lrs(tls.CosineAnnealingLR, total, T_max=total, eta_min=min_lr_ratio)
    assert_same(ours(total, name="cosine", min_lr_ratio=min_lr_ratio), expected)


@pytest.mark.parametrize("total", LENGTHS)
@pytest.mark.parametrize("period", [1, 3, 10])
@pytest.mark.parametrize("t_mult", [1, 2, 3])
@pytest.mark.parametrize("min_lr_ratio", [0.0, 0.05])
def test_cosine_restarts_equals_torch_warm_restarts(total, period, t_mult, min_lr_ratio):
    expected = torch_lrs(
        tls.CosineAnnealingWarmRestarts, total, T_0=period, T_mult=t_mult, eta_min=min_lr_ratio
    )
    spec = {"name": "cosine_restarts", "period": period, "t_mult": t_mult, "min_lr_ratio": min_lr_ratio}
    assert_same(ours(total, **spec), expected)


CYCLIC_CASES = [
    (base, up, down, mode)
    for base, up, down, mode in itertools.product(
        [0.0, 0.1, 0.5], [1, 4, 7], [None, 3], ["triangular", "triangular2", "exp_range"]
    )
]


@pytest.mark.parametrize("total", LENGTHS)
@pytest.mark.parametrize(("base_ratio", "step_size", "step_size_down", "mode"), CYCLIC_CASES)
def test_cyclic_equals_torch_cycliclr(total, base_ratio, step_size, step_size_down, mode):
    gamma = 0.99 if mode == "exp_range" else 1.0
    expected = torch_lrs(
        tls.CyclicLR, total, base_lr=base_ratio, max_lr=1.0, step_size_up=step_size,
        step_size_down=step_size_down, mode=mode, gamma=gamma,
    )
    spec = {"name": "cyclic", "base_ratio": base_ratio, "step_size": step_size,
            "step_size_down": step_size_down, "mode": mode}
    if mode == "exp_range":
        spec["gamma"] = gamma
    assert_same(ours(total, **spec), expected)


@pytest.mark.parametrize("total", [2, 7, 64, 301])
@pytest.mark.parametrize("pct_start", [0.15, 0.3, 0.45])
@pytest.mark.parametrize(("div_factor", "final_div_factor"), [(25.0, 1e4), (10.0, 100.0)])
@pytest.mark.parametrize("anneal", ["cos", "linear"])
@pytest.mark.parametrize("three_phase", [False, True])
def test_onecycle_equals_torch_onecyclelr(total, pct_start, div_factor, final_div_factor, anneal, three_phase):
    expected = torch_lrs(
        tls.OneCycleLR, total, max_lr=1.0, total_steps=total, pct_start=pct_start, div_factor=div_factor,
        final_div_factor=final_div_factor, anneal_strategy=anneal, three_phase=three_phase,
    )
    spec = {"name": "onecycle", "pct_start": pct_start, "div_factor": div_factor,
            "final_div_factor": final_div_factor, "anneal": anneal, "three_phase": three_phase}
    assert_same(ours(total, **spec), expected)


def test_onecycle_where_torch_divides_by_zero_gives_finite_values():
    # pct_start * T == 1 makes torch's first phase zero steps long (ZeroDivisionError there).
    table = ours(10, name="onecycle", pct_start=0.1)
    assert np.all(np.isfinite(table)) and table[0] == 1.0 and table.max() == 1.0


# ------------------------------------------------------- formula anchors (Keras, transformers)


def keras_inverse_time(step: int, decay_rate: float, decay_steps: float, staircase: bool) -> float:
    # Keras InverseTimeDecay (keras/src/optimizers/schedules/learning_rate_schedule.py):
    #   p = step / decay_steps (floored when staircase); lr = initial / (1 + decay_rate * p)
    p = step / decay_steps
    if staircase:
        p = math.floor(p)
    return 1.0 / (1.0 + decay_rate * p)


@pytest.mark.parametrize("total", LENGTHS)
@pytest.mark.parametrize("decay_rate", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("decay_steps", [1, 5, 20])
@pytest.mark.parametrize("staircase", [False, True])
def test_inverse_time_equals_keras(total, decay_rate, decay_steps, staircase):
    expected = np.array([keras_inverse_time(t, decay_rate, decay_steps, staircase) for t in range(total)])
    spec = {"name": "inverse_time", "decay_rate": decay_rate, "decay_steps": decay_steps,
            "staircase": staircase}
    assert_same(ours(total, **spec), expected)


def keras_cosine_decay_restarts(step: int, first: float, t_mul: float, m_mul: float, alpha: float) -> float:
    # Keras CosineDecayRestarts (same file), transcribed from its __call__:
    #   fraction = step / first_decay_steps; geometric restarts when t_mul != 1:
    #   i = floor(log(1 - fraction * (1 - t_mul)) / log(t_mul)); sum_r = (1 - t_mul**i) / (1 - t_mul)
    #   fraction = (fraction - sum_r) / t_mul**i; else i = floor(fraction), fraction -= i
    #   decayed = (1 - alpha) * 0.5 * m_mul**i * (1 + cos(pi * fraction)) + alpha
    fraction = step / first
    if t_mul == 1.0:
        i = math.floor(fraction)
        fraction -= i
    else:
        i = math.floor(math.log(1.0 - fraction * (1.0 - t_mul)) / math.log(t_mul))
        sum_r = (1.0 - t_mul**i) / (1.0 - t_mul)
        fraction = (fraction - sum_r) / t_mul**i
    return (1 - alpha) * 0.5 * m_mul**i * (1.0 + math.cos(math.pi * fraction)) + alpha


@pytest.mark.parametrize("total", LENGTHS)
@pytest.mark.parametrize("first", [3, 10])
@pytest.mark.parametrize("t_mul", [1.0, 1.5, 2.0])
@pytest.mark.parametrize("m_mul", [1.0, 0.5, 0.8])
@pytest.mark.parametrize("alpha", [0.0, 0.1])
def test_cosine_restarts_equals_keras(total, first, t_mul, m_mul, alpha):
    expected = np.array([keras_cosine_decay_restarts(t, first, t_mul, m_mul, alpha) for t in range(total)])
    spec = {"name": "cosine_restarts", "period": first, "t_mult": t_mul, "m_mul": m_mul, "min_lr_ratio": alpha}
    assert_same(ours(total, **spec), expected)


def test_cosine_restarts_boundary_where_keras_log_rounds_down():
    # t_mul=3, first=1: step 121 = 1 + 3 + 9 + 27 + 81 starts cycle 5, but in float64
    # log(1 + 121 * 2) / log(3) falls just below 5, so Keras' floor(...) puts the step at the end
    # of cycle 4 (the minimum). We restart there, as torch's integer CosineAnnealingWarmRestarts does.
    assert math.floor(math.log(1.0 + 121 * 2.0) / math.log(3.0)) == 4
    assert keras_cosine_decay_restarts(121, 1, 3.0, 1.0, 0.0) < 1e-12
    table = ours(125, name="cosine_restarts", period=1, t_mult=3)
    assert table[121] == 1.0
    assert_same(table, torch_lrs(tls.CosineAnnealingWarmRestarts, 125, T_0=1, T_mult=3))


def transformers_inverse_sqrt(step: int, warmup: int, timescale: int) -> float:
    # transformers.optimization._get_inverse_sqrt_schedule_lr_lambda
    if step < warmup:
        return step / max(1, warmup)
    shift = timescale - warmup
    return 1.0 / math.sqrt((step + shift) / timescale)


@pytest.mark.parametrize("total", [30, 301])
@pytest.mark.parametrize("warmup", [0, 5, 20])
@pytest.mark.parametrize("timescale", [1, 10, 50])
def test_inverse_sqrt_equals_transformers(total, warmup, timescale):
    expected = np.array([transformers_inverse_sqrt(t, warmup, timescale) for t in range(total)])
    assert_same(ours(total, name="inverse_sqrt", timescale=timescale, warmup=warmup), expected)


def transformers_wsd(step: int, warmup: int, stable: int, decay: int, kind: str, min_lr_ratio: float) -> float:
    # transformers.optimization._get_wsd_scheduler_lambda, warmup_type="linear", num_cycles=0.5
    if step < warmup:
        return max(0.0, (step / max(1, warmup)) * (1.0 - min_lr_ratio) + min_lr_ratio)
    if step < warmup + stable:
        return 1.0
    if step < warmup + stable + decay:
        progress = (step - warmup - stable) / max(1, decay)
        factor = {"linear": 1.0 - progress, "cosine": 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)),
                  "1-sqrt": 1.0 - math.sqrt(progress)}[kind]
        return max(0.0, factor * (1.0 - min_lr_ratio) + min_lr_ratio)
    return min_lr_ratio


@pytest.mark.parametrize("total", [10, 64, 301])
@pytest.mark.parametrize("warmup", [0, 1, 6])
@pytest.mark.parametrize("decay_steps", [1, 4, 9])
@pytest.mark.parametrize("kind", ["linear", "cosine", "1-sqrt"])
@pytest.mark.parametrize("min_lr_ratio", [0.0, 0.1])
def test_wsd_equals_transformers(total, warmup, decay_steps, kind, min_lr_ratio):
    stable = total - warmup - decay_steps
    spec = {"name": "wsd", "warmup": warmup, "decay_fraction": decay_steps, "decay": kind,
            "min_lr_ratio": min_lr_ratio}
    if stable < 0:
        with pytest.raises(HarnessError, match="lower decay_fraction or warmup"):
            ours(total, **spec)
        return
    expected = np.array(
        [transformers_wsd(t, warmup, stable, decay_steps, kind, min_lr_ratio) for t in range(total)]
    )
    table = ours(total, **spec)
    # transformers' WSD warmup starts at min_lr_ratio; ours (every schedule's) starts at 0.
    start = warmup if min_lr_ratio else 0
    assert_same(table[start:], expected[start:])


@pytest.mark.parametrize("total", [20, 301])
@pytest.mark.parametrize("warmup", [0, 5])
@pytest.mark.parametrize(("decay_steps", "half_life"), [(5, 1), (10, 3), (15, 15)])
def test_wsd_exp_equals_minicpm(total, warmup, decay_steps, half_life):
    # MiniCPM (Hu et al. 2024, "MiniCPM: Unveiling the Potential of Small Language Models with
    # Scalable Training Strategies", sec. 4.2): WSD(T; s) = s/W * eta (s < W), eta (W < s < T),
    # f(s - T) * eta after, with the exponential decay f(x) = 0.5 ** (x / half_life).
    decay_start = total - decay_steps
    expected = np.array([
        t / warmup if t < warmup else 1.0 if t < decay_start else 0.5 ** ((t - decay_start) / half_life)
        for t in range(total)
    ])
    spec = {"name": "wsd", "warmup": warmup, "decay_fraction": decay_steps, "decay": "exp",
            "half_life": half_life}
    assert_same(ours(total, **spec), expected)


def transformers_cosine_with_warmup(step: int, warmup: int, total: int) -> float:
    # transformers.optimization._get_cosine_schedule_with_warmup_lr_lambda, num_cycles=0.5
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))


def transformers_linear_with_warmup(step: int, warmup: int, total: int) -> float:
    # transformers.optimization._get_linear_schedule_with_warmup_lr_lambda
    if step < warmup:
        return step / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def transformers_polynomial_with_warmup(step: int, warmup: int, total: int, end: float, power: float) -> float:
    # transformers.optimization._get_polynomial_decay_schedule_with_warmup_lr_lambda (lr_init = 1)
    if step < warmup:
        return step / max(1, warmup)
    return (1.0 - end) * (1 - (step - warmup) / (total - warmup)) ** power + end


@pytest.mark.parametrize("total", [12, 64, 301])
@pytest.mark.parametrize("warmup", [1, 3, 10])
def test_warmup_composition_equals_transformers_warmup_schedules(total, warmup):
    steps = range(total)
    cosine = np.array([transformers_cosine_with_warmup(t, warmup, total) for t in steps])
    linear = np.array([transformers_linear_with_warmup(t, warmup, total) for t in steps])
    poly = np.array([transformers_polynomial_with_warmup(t, warmup, total, 0.05, 2.0) for t in steps])
    assert_same(ours(total, name="cosine", warmup=warmup), cosine)
    assert_same(ours(total, name="linear", warmup=warmup), linear)
    assert_same(ours(total, name="polynomial", warmup=warmup, end_ratio=0.05, power=2.0), poly)


# ------------------------------------------------------------------ warmup, lengths, labels

# Every table schedule with its lengths as step counts, so that the same spec means the same
# curve over T and over T - warmup.
COUNT_SPECS = {
    "constant": {},
    "step": {"step_size": 7, "gamma": 0.5},
    "multistep": {"milestones": [5, 20], "gamma": 0.3},
    "exponential": {"gamma": 0.97},
    "inverse_time": {"decay_rate": 2.0, "decay_steps": 9},
    "inverse_sqrt": {"timescale": 6},
    "linear": {"end_ratio": 0.2},
    "polynomial": {"power": 3.0},
    "cosine": {"min_lr_ratio": 0.1},
    "cosine_restarts": {"period": 8, "t_mult": 2, "m_mul": 0.7},
    "cyclic": {"base_ratio": 0.2, "step_size": 5, "mode": "triangular2"},
    "onecycle": {"pct_start": 0.25},
    "wsd": {"decay_fraction": 12, "decay": "cosine", "warmup": 0},
}


def test_count_specs_cover_every_table_schedule():
    assert sorted(COUNT_SPECS) == sorted(TABLE_NAMES)


@pytest.mark.parametrize("name", sorted(COUNT_SPECS))
@pytest.mark.parametrize("warmup", [1, 7, 20])
def test_warmup_is_linear_from_zero_then_the_schedule(name, warmup):
    total = 61
    base = {"name": name, **COUNT_SPECS[name]}
    inner = lr_table(base, total - warmup)
    table = lr_table({**base, "warmup": warmup}, total)
    assert table[0] == 0.0
    assert_same(table[:warmup], np.arange(warmup) / warmup * inner[0])
    assert_same(table[warmup:], inner)


@pytest.mark.parametrize("warmup", [0.05, 0.1, 0.5, 0.99])
@pytest.mark.parametrize("total", [3, 10, 64, 1000])
def test_fractional_warmup_rounds_half_up(warmup, total):
    schedule = get_schedule({"name": "cosine", "warmup": warmup})
    expected = math.floor(warmup * total + 0.5)
    if expected >= total:
        with pytest.raises(HarnessError, match="leaves no steps"):
            schedule.table(total)
        return
    assert schedule.warmup_steps(total) == expected
    ramp = schedule.table(total)[:expected]
    assert_same(ramp, np.arange(expected) / max(expected, 1))


LENGTH_CASES = [
    ("step", "step_size", 0.3),
    ("multistep", "milestones", [0.2, 0.55]),
    ("inverse_time", "decay_steps", 0.15),
    ("inverse_sqrt", "timescale", 0.05),
    ("cosine_restarts", "period", 0.2),
    ("cyclic", "step_size", 0.08),
    ("cyclic", "step_size_down", 0.12),
    ("wsd", "decay_fraction", 0.35),
    ("wsd", "half_life", 0.03),
]


@pytest.mark.parametrize(("name", "param", "fraction"), LENGTH_CASES)
@pytest.mark.parametrize("total", [10, 64, 333])
def test_fraction_of_T_means_the_rounded_step_count(name, param, fraction, total):
    def count(f: float) -> int:
        return max(1, math.floor(f * total + 0.5))

    counts = [count(f) for f in fraction] if isinstance(fraction, list) else count(fraction)
    extra = {"decay": "exp"} if param == "half_life" else {}
    as_fraction = lr_table({"name": name, param: fraction, **extra}, total)
    as_count = lr_table({"name": name, param: counts, **extra}, total)
    assert_same(as_fraction, as_count)


def test_labels_are_the_name_for_defaults_and_list_changed_params():
    for name in SCHEDULES:
        assert get_schedule(name).label == name
        assert get_schedule({"name": name}).label == name
    assert get_schedule({"name": "step", "gamma": 0.5}).label == "step(gamma=0.5)"
    assert get_schedule({"name": "step", "gamma": 0.1}).label == "step"  # the default, given explicitly
    assert get_schedule({"name": "cosine", "min_lr_ratio": 0.01, "warmup": 0.05}).label == (
        "cosine(min_lr_ratio=0.01, warmup=0.05)"
    )
    assert get_schedule({"name": "multistep", "params": {"milestones": [10, 20]}}).label == (
        "multistep(milestones=[10, 20])"
    )
    specs = [{"name": "step", "gamma": g} for g in (0.1, 0.2, 0.5)] + ["wsd", {"name": "wsd", "decay": "exp"}]
    labels = [get_schedule(spec).label for spec in specs]
    assert len(set(labels)) == len(labels)


def test_params_hold_defaults_and_kinds():
    plateau = get_schedule("plateau")
    assert plateau.kind == "plateau"
    assert plateau.params == {"factor": 0.1, "patience": 5, "threshold": 1e-4, "cooldown": 0,
                              "min_lr_ratio": 0.0, "warmup": 0}
    free = get_schedule({"name": "schedule_free", "warmup": 50})
    assert (free.kind, free.params, free.label) == ("schedule_free", {"warmup": 50}, "schedule_free(warmup=50)")
    assert get_schedule("step").params == {"step_size": 0.33, "gamma": 0.1, "warmup": 0}
    exponential = get_schedule({"name": "exponential", "gamma": 0.9})
    assert exponential.params == {"gamma": 0.9, "final_ratio": None, "warmup": 0}
    assert get_schedule({"name": "step", "step_size": 30.0}).params["step_size"] == 30  # a whole count
    assert get_schedule(get_schedule("cosine")) == get_schedule("cosine")


def test_table_is_float64_scaled_by_base_lr():
    table = lr_table({"name": "cosine", "warmup": 3}, 50, base_lr=3e-4)
    assert table.dtype == np.float64 and table.shape == (50,)
    assert_same(table, 3e-4 * lr_table({"name": "cosine", "warmup": 3}, 50))


def test_catalogue_lists_every_name_with_defaults_and_anchor():
    rows = catalogue()
    assert [row["name"] for row in rows] == list(SCHEDULES)
    for row in rows:
        assert row["params"] == get_schedule(row["name"]).params
        assert row["anchor"] and row["description"] and row["kind"] in ("table", "plateau", "schedule_free")
    text = format_catalogue()
    for name in SCHEDULES:
        assert f"\n{name} " in text
    assert "torch CosineAnnealingLR" in text and "torch.optim.lr_scheduler" in text


# ------------------------------------------------------------------------ torch class paths


def test_torch_class_path_table_equals_the_catalogue_schedule():
    path = "torch.optim.lr_scheduler."
    step = get_schedule({"name": path + "StepLR", "step_size": 4, "gamma": 0.5})
    assert step.kind == "table" and step.label == f"{path}StepLR(step_size=4, gamma=0.5)"
    assert_same(step.table(50), lr_table({"name": "step", "step_size": 4, "gamma": 0.5}, 50))
    # total_steps is filled with the run's length; warmup composes as on every schedule
    onecycle = {"name": path + "OneCycleLR", "max_lr": 1.0, "warmup": 5}
    expected = lr_table({"name": "onecycle", "warmup": 5}, 80, base_lr=0.1)
    assert_same(lr_table(onecycle, 80, base_lr=0.1), expected)
    cosine = {"name": path + "CosineAnnealingLR", "eta_min": 0.1}
    assert_same(lr_table(cosine, 33), lr_table({"name": "cosine", "min_lr_ratio": 0.1}, 33))


def test_torch_class_path_failing_while_stepping_is_one_line():
    spec = {"name": "torch.optim.lr_scheduler.OneCycleLR", "max_lr": 1.0, "total_steps": 10}
    with pytest.raises(HarnessError) as info:
        lr_table(spec, 20)
    message = str(info.value)
    assert "\n" not in message and message.startswith("schedule 'torch.optim.lr_scheduler.OneCycleLR(")
    assert "Tried to step" in message


# ---------------------------------------------------------------------------- errors


TORCH = "torch.optim.lr_scheduler."
BAD_SPECS = [
    ("cosin", "unknown schedule 'cosin' (did you mean 'cosine'?); valid: constant, cosine,"),
    ({"name": "cosine_restarts", "period": 0}, "schedule 'cosine_restarts': period must be > 0, got 0"),
    ({"name": "step", "gamma": -0.5}, "schedule 'step': gamma must be in (0, 1], got -0.5"),
    ({"name": "step", "gama": 0.5}, "schedule 'step': unknown parameter 'gama' (did you mean 'gamma'?); valid:"),
    ({"name": "step", "step_size": 1.5}, "schedule 'step': step_size must be a fraction of the run in (0, 1) or"),
    ({"name": "step", "gamma": True}, "schedule 'step': gamma must be a finite number, got True"),
    ({"name": "onecycle", "pct_start": 1.2}, "schedule 'onecycle': pct_start must be in (0, 1), got 1.2"),
    ({"name": "onecycle", "pct_start": 0.0}, "schedule 'onecycle': pct_start must be in (0, 1), got 0.0"),
    ({"name": "multistep", "milestones": [0.5, 0.3]}, "schedule 'multistep': milestones must be strictly increasing"),
    ({"name": "multistep", "milestones": [0.5, 30]}, "schedule 'multistep': milestones must be all fractions"),
    ({"name": "multistep", "milestones": []}, "schedule 'multistep': milestones must be a non-empty list"),
    ({"name": "wsd", "decay": "lin"}, "schedule 'wsd': decay must be one of linear, cosine, 1-sqrt, exp, got 'lin'"),
    ({"name": "wsd", "half_life": 10}, "schedule 'wsd': half_life only applies to decay: exp, got decay: linear"),
    ({"name": "exponential", "gamma": 0.9, "final_ratio": 0.1}, "schedule 'exponential': gamma and final_ratio"),
    ({"name": "cyclic", "gamma": 0.9}, "schedule 'cyclic': gamma only applies to mode: exp_range"),
    ({"name": "cosine", "warmup": -1}, "schedule 'cosine': warmup must be >= 0, got -1"),
    ({"name": "cosine_restarts", "t_mult": 0.5}, "schedule 'cosine_restarts': t_mult must be >= 1, got 0.5"),
    ({"name": "plateau", "factor": 1.0}, "schedule 'plateau': factor must be in (0, 1), got 1.0"),
    ({"name": "plateau", "patience": 2.5}, "schedule 'plateau': patience must be a whole number >= 0, got 2.5"),
    ({"name": "cosine", "params": {"min_lr_ratio": 0.1}, "min_lr_ratio": 0.2},
     "schedule 'cosine': min_lr_ratio given twice"),
    ({"step_size": 3}, "schedule {'step_size': 3} needs a 'name' key"),
    (42, "a schedule is a name or a mapping with a 'name' key, got 42"),
    (TORCH + "StepLr", f"schedule '{TORCH}StepLr': torch.optim.lr_scheduler has no class 'StepLr' "
     "(did you mean 'StepLR'?)"),
    (TORCH + "ReduceLROnPlateau", "use the 'plateau' schedule"),
    ("torch.optim.SGD", "schedule 'torch.optim.SGD': not a torch.optim.lr_scheduler.LRScheduler class"),
    ("nosuchpackage.Sched", "schedule 'nosuchpackage.Sched': cannot import nosuchpackage"),
    ({"name": TORCH + "StepLR", "stepsize": 3}, "unknown parameter 'stepsize' (did you mean 'step_size'?)"),
    ({"name": TORCH + "StepLR", "step_size": 3, "last_epoch": 5}, "last_epoch is set by the harness"),
    ({"name": TORCH + "CosineAnnealingWarmRestarts", "T_0": 0}, "Expected positive integer T_0, but got 0"),
    ({"name": TORCH + "StepLR"}, "missing 1 required positional argument: 'step_size'"),
]


@pytest.mark.parametrize(("spec", "message"), BAD_SPECS)
def test_bad_specs_raise_one_line_naming_schedule_and_param(spec, message):
    with pytest.raises(HarnessError) as info:
        get_schedule(spec)
    text = str(info.value)
    assert "\n" not in text
    assert message in text


def test_errors_found_only_when_T_is_known_name_the_schedule():
    too_long = r"^schedule 'wsd\(decay_fraction=50\)': decay_fraction is 50 steps but only 38"
    with pytest.raises(HarnessError, match=too_long):
        lr_table({"name": "wsd", "decay_fraction": 50}, 40)
    with pytest.raises(HarnessError, match=r"^schedule 'cosine\(warmup=10\)': warmup of 10 steps leaves"):
        lr_table({"name": "cosine", "warmup": 10}, 10)
    with pytest.raises(HarnessError, match="total_steps must be a whole number >= 1, got 0"):
        lr_table("cosine", 0)
    with pytest.raises(HarnessError, match="base_lr must be a finite number > 0, got -0.1"):
        lr_table("cosine", 10, base_lr=-0.1)
    for name in ("plateau", "schedule_free"):
        with pytest.raises(HarnessError, match=f"schedule '{name}' has no fixed LR table"):
            lr_table(name, 10)
    with pytest.raises(HarnessError, match="not a plateau schedule"):
        get_schedule("cosine").plateau_state(3)


# ------------------------------------------------------------------------------ plateau


def loss_paths(rng: np.random.Generator, n_members: int, epochs: int) -> np.ndarray:
    """Loss sequences that plateau, creep below the threshold, jump, repeat and go NaN."""
    paths = np.empty((n_members, epochs))
    for m in range(n_members):
        drift = rng.choice([0.9, 0.99, 0.99995, 1.0, 1.02])
        noise = rng.choice([0.0, 0.01, 0.05])
        path = np.cumprod(np.full(epochs, drift) * np.exp(rng.normal(0, noise, epochs)))
        paths[m] = np.round(path, int(rng.integers(2, 8)))  # rounding makes exact repeats
    paths[0, epochs // 2:] = np.nan  # a diverged member
    paths[1] = 1.0 - 1e-5 * np.arange(epochs)  # improves, but below the relative threshold
    return paths


PLATEAU_SETTINGS = [
    {},
    {"patience": 10},
    {"factor": 0.5, "patience": 0},
    {"factor": 0.5, "patience": 2, "cooldown": 3},
    {"factor": 0.1, "patience": 1, "min_lr_ratio": 1e-3},
    {"factor": 0.3, "patience": 3, "threshold": 0.0, "cooldown": 1, "min_lr_ratio": 0.05},
    {"factor": 0.9, "patience": 0, "threshold": 0.05, "eps": 0.05},
]


@pytest.mark.parametrize("settings_", PLATEAU_SETTINGS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plateau_state_equals_torch_reduce_lr_on_plateau(settings_, seed):
    n_members, epochs = 6, 60
    losses = loss_paths(np.random.default_rng(seed), n_members, epochs)
    state = PlateauState(n_members, **settings_)
    torch_args = {"patience": 5}  # our default (torch's is 10: too slow for ~40-epoch retrains)
    torch_args |= {("min_lr" if key == "min_lr_ratio" else key): value for key, value in settings_.items()}
    optimizers = [torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0) for _ in range(n_members)]
    schedulers = [
        tls.ReduceLROnPlateau(opt, mode="min", threshold_mode="rel", **torch_args) for opt in optimizers
    ]
    reductions = 0
    for epoch in range(epochs):
        ours_now = state.step(losses[:, epoch])
        for sched, loss in zip(schedulers, losses[:, epoch], strict=True):
            sched.step(float(loss))
        expected = np.array([opt.param_groups[0]["lr"] for opt in optimizers])
        np.testing.assert_array_equal(ours_now, expected)
        reductions += int(np.sum(ours_now < 1.0))
    assert reductions > 0  # the sequences do make torch reduce


def test_plateau_schedule_builds_state_with_its_params():
    schedule = get_schedule({"name": "plateau", "factor": 0.5, "patience": 0, "min_lr_ratio": 0.2})
    state = schedule.plateau_state(3)
    assert np.all(state.step(np.array([1.0, 1.0, 1.0])) == 1.0)
    assert_same(state.step(np.array([2.0, 0.5, 1.0])), np.array([0.5, 1.0, 0.5]))
    assert_same(state.step(np.array([2.0, 0.6, 1.0])), np.array([0.25, 0.5, 0.25]))
    assert_same(state.step(np.array([2.0, 0.7, 1.0])), np.array([0.2, 0.25, 0.2]))
    with pytest.raises(ValueError, match=r"val_loss must have shape \(3,\)"):
        state.step(np.ones(4))


def test_plateau_state_defaults_are_the_catalogue_defaults():
    signature = inspect.signature(PlateauState)
    for key, value in get_schedule("plateau").params.items():
        if key != "warmup":
            assert signature.parameters[key].default == value


def test_nominal_tables_of_adaptive_kinds_are_warmup_then_constant():
    plateau = get_schedule({"name": "plateau", "warmup": 4})
    assert_same(plateau.nominal_table(10, base_lr=0.5), 0.5 * np.array([0, 0.25, 0.5, 0.75, 1, 1, 1, 1, 1, 1]))
    free = get_schedule({"name": "schedule_free", "warmup": 4})  # schedulefree ramps (k + 1) / warmup_steps
    assert free.warmup_steps(10) == 4
    assert_same(free.nominal_table(10), np.array([0.25, 0.5, 0.75, 1, 1, 1, 1, 1, 1, 1]))
    assert_same(get_schedule("cosine").nominal_table(20), lr_table("cosine", 20))


# ------------------------------------------------------------------- window boundaries


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(TABLE_NAMES),
    steps=st.integers(1, 40),
    n_windows=st.integers(1, 6),
    warmup=st.sampled_from([0, 0.1, 3]),
)
def test_warm_continue_is_one_curve_and_fresh_restarts(name, steps, n_windows, warmup):
    spec = {"name": name, "warmup": warmup}
    total = steps * n_windows
    if get_schedule(spec).warmup_steps(total) >= total:
        return
    pieces = [window_lr_table(spec, steps, k, "warm_continue", n_windows) for k in range(n_windows)]
    assert_same(np.concatenate(pieces), lr_table(spec, total))
    if get_schedule(spec).warmup_steps(steps) >= steps:
        return
    for boundary in ("fresh", "warm_restart"):
        for k in range(n_windows):
            assert_same(window_lr_table(spec, steps, k, boundary, n_windows), lr_table(spec, steps))


def test_warm_continue_with_growing_windows_and_its_warmup_only_once():
    sizes = [10, 12, 14, 16]
    spec = {"name": "cosine", "warmup": 5}
    pieces = [window_lr_table(spec, sizes, k, "warm_continue", 4, base_lr=0.01) for k in range(4)]
    assert [len(p) for p in pieces] == sizes
    assert_same(np.concatenate(pieces), lr_table(spec, sum(sizes), base_lr=0.01))
    assert pieces[0][0] == 0.0 and all(p[0] > 0 for p in pieces[1:])
    restarted = [window_lr_table(spec, sizes, k, "warm_restart", 4) for k in range(4)]
    assert all(p[0] == 0.0 for p in restarted)


def test_window_arguments_are_checked():
    typo = r"unknown boundary policy 'warm_contine' \(did you mean 'warm_continue'\?\)"
    with pytest.raises(HarnessError, match=typo):
        window_lr_table("cosine", 10, 0, "warm_contine", 3)
    with pytest.raises(HarnessError, match=r"window_index must be in \[0, 3\), got 3"):
        window_lr_table("cosine", 10, 3, "fresh", 3)
    with pytest.raises(HarnessError, match="steps_per_window lists 2 windows, n_windows is 3"):
        window_lr_table("cosine", [10, 10], 0, "warm_continue", 3)


def test_schedule_is_plain_picklable_data():
    import pickle

    schedule = get_schedule({"name": "cyclic", "mode": "exp_range", "gamma": 0.99})
    clone = pickle.loads(pickle.dumps(schedule))
    assert clone == schedule and isinstance(clone, Schedule)
    assert_same(clone.table(40), schedule.table(40))
