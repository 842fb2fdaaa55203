"""``harness bench``: the batched trainer against the plain torch loop, as ratios in one process.

Two workloads: :func:`bench_members` (one window's schedules × seeds) and :func:`bench_windows`
(a walk-forward: many windows, trained by a plain loop, window by window, or all in one stack).

The plain loop is what one would write per member: ``torch.manual_seed(seed)``, the model,
``torch.optim.AdamW`` + a ``LambdaLR`` scheduler over the schedule's LR table, a ``DataLoader``
over a ``TensorDataset`` shuffled by a generator seeded with the member's seed; the batched run
trains the same members on the same batches with the same steps (their final weights agree,
reported as ``max_rel_diff``). Times are medians over ``repeats``, measured interleaved so that
machine noise hits both sides alike, at one thread count for every side. The FLOP/s figure counts
the matmul work of training (forward, and backward for the weights and hidden activations),
against this machine's fp32 ``torch.matmul`` peak measured in the same run at the same thread
count (``peak_fraction``).

The reference workload (issue 4, :data:`REFERENCE`): 30 members = 10 schedules
(:data:`BENCH_SCHEDULES`) × 3 seeds, MLP 20-64-64-1, 1000 rows, batch 64, 50 epochs; plus the
batched trainer alone on a wider MLP (:data:`WIDE`: 3×256, batch 512, 10 epochs) for throughput.
``harness bench --scale`` times whole backtests instead (:func:`bench_scale`).

Modules: :mod:`~harness.bench.members` (:func:`bench_members`, :func:`bench_scaling`, the wide
workload), :mod:`~harness.bench.windows` (:func:`bench_windows`), :mod:`~harness.bench.scale`
(:func:`bench_scale`), :mod:`~harness.bench.plain` (the hand-written plain torch loops),
:mod:`~harness.bench.workloads` (sizes, schedules and data), :mod:`~harness.bench.measure`
(timings, memory, FLOPs) and :mod:`~harness.bench.report` (the text reports).
"""

from harness.bench.measure import peak_flops
from harness.bench.members import bench_members, bench_scaling
from harness.bench.report import format_report, format_windows_report
from harness.bench.scale import Sizes, bench_scale, format_scale
from harness.bench.windows import bench_windows
from harness.bench.workloads import (
    BENCH_SCHEDULES,
    LR,
    REFERENCE,
    WIDE,
    WINDOW_SCHEDULES,
    member_grid,
)

__all__ = [
    "BENCH_SCHEDULES", "LR", "REFERENCE", "WIDE", "WINDOW_SCHEDULES", "Sizes", "bench_members", "bench_scale",
    "bench_scaling", "bench_windows", "format_report", "format_scale", "format_windows_report", "member_grid",
    "peak_flops",
]
