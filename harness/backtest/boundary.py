"""The window boundary policy (``training.boundary``, design section 5): the one place that knows
whether a backtest's windows are independent or chained.

- :class:`Independent` (``fresh``): every window starts from a new initialisation with its
  schedule at t=0, so windows are independent: consecutive windows share one training stack (as
  many as fit the memory budget), jobs go out all at once, in any order, to any worker.
- :class:`Chained` (``warm_restart``, ``warm_continue``): window k starts from window k-1's
  weights (``warm_continue`` also takes window k's slice of one schedule spanning all windows), so
  windows train one after another, one job each, and a checkpoint keeps the newest fitted members.

The backtest loop, the executors and resume ask the policy; none of them looks at
``training.boundary`` themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.backtest.planning import Window
from harness.backtest.window import (
    Fitted,
    Start,
    WindowResult,
    WindowTrainer,
    steps_per_window,
)
from harness.config import Config
from harness.schedules import window_lr_table
from harness.training.budget import STACK_MEMORY_BUDGET, training_bytes

JOB_WINDOWS = 8  # the most independent windows per job: what a kill can lose, and load balance


@dataclass(frozen=True)
class Job:
    """One unit of work: windows trained together, the test rows of the window after each (for
    churn), and the fitted members a chained window starts from."""

    windows: list[Window]
    next_test_rows: dict[int, np.ndarray] = field(default_factory=dict)
    previous: Fitted | None = None


class Boundary:
    """What every boundary policy answers; :func:`policy` picks the config's."""

    chained: bool = False

    def __init__(self, config: Config, windows: list[Window]) -> None:
        self.config, self.windows = config, windows
        self.following = {a.index: b.test_rows for a, b in zip(windows, windows[1:])}

    def jobs(self, todo: list[Window], *, n_features: int) -> list[Job]:
        """The jobs that train ``todo`` (windows not yet done, in order)."""
        raise NotImplementedError

    def workers(self, n_jobs: int) -> int:
        """How many jobs can run at once."""
        return n_jobs

    def run(self, executor: Any, jobs: list[Job], state: Fitted | None) -> Iterator[list[WindowResult]]:
        """Each job's results as it finishes; ``state``: the members a chain continues from."""
        yield from executor.results(jobs)

    def train(self, trainer: WindowTrainer, job: Job) -> list[WindowResult]:
        """A job's windows trained (in a worker): one result per window, in order."""
        raise NotImplementedError

    def lr_windows(self, done: list[WindowResult]) -> list[WindowResult]:
        """The windows whose LRs make a schedule's LR curve: the first (every window restarts it)."""
        return done[:1]

    def restore(self, done: dict[int, WindowResult], state: tuple[int, Fitted] | None
                ) -> tuple[dict[int, WindowResult], Fitted | None]:
        """What a resumed backtest keeps of its saved windows, and the state it continues from."""
        return done, None

    def _job(self, windows: list[Window], previous: Fitted | None = None) -> Job:
        return Job(windows, {w.index: self.following[w.index] for w in windows if w.index in self.following},
                   previous)


class Independent(Boundary):
    """``fresh``: windows are independent and train stacked, several to a job."""

    def jobs(self, todo: list[Window], *, n_features: int, memory_budget: int | None = None) -> list[Job]:
        """Stacks of consecutive windows within ``memory_budget`` bytes (by
        :func:`harness.training.budget.training_bytes`), cut into jobs of at most
        :data:`JOB_WINDOWS` windows and at least two jobs per worker when there are windows enough.
        A member trains to the same bits whichever windows share its stack, so cutting changes no number."""
        workers = self.config.execution.workers
        size = max(1, min(JOB_WINDOWS, -(-len(todo) // (2 * workers)) if workers > 1 else JOB_WINDOWS))
        return [self._job(stack[i:i + size]) for stack in self.stacks(todo, n_features, memory_budget)
                for i in range(0, len(stack), size)]

    def stacks(self, todo: list[Window], n_features: int, memory_budget: int | None = None) -> list[list[Window]]:
        """Consecutive windows grouped so that each group's training fits the memory budget
        (at least one window a group)."""
        config = self.config
        budget = STACK_MEMORY_BUDGET if memory_budget is None else memory_budget
        members = len(config.schedule_labels()) * config.training.seeds  # candidates x seeds
        model, batch_size = config.model.network(), config.training.batch_size
        row_shape = (config.model.sequence, n_features) if config.model.recurrent else (n_features,)
        needs: dict[int, int] = {}  # by train length: expanding windows differ, rolling ones share one
        groups: list[list[Window]] = []
        used = 0
        for window in todo:
            n_rows = len(window.train_rows)
            if n_rows not in needs:
                needs[n_rows] = training_bytes(model, row_shape, batch_size, n_rows, members)
            if not groups or used + needs[n_rows] > budget:
                groups.append([])
                used = 0
            groups[-1].append(window)
            used += needs[n_rows]
        return groups

    def train(self, trainer: WindowTrainer, job: Job) -> list[WindowResult]:
        return trainer.train(job.windows, [Start()] * len(job.windows), job.next_test_rows)


class Chained(Boundary):
    """``warm_restart`` / ``warm_continue``: each window starts from the previous window's weights."""

    chained = True

    def __init__(self, config: Config, windows: list[Window]) -> None:
        super().__init__(config, windows)
        self.continues = config.training.boundary == "warm_continue"
        self.sizes = steps_per_window(config, windows)  # the longest budget's
        self.budget_sizes = {epochs: steps_per_window(config, windows, epochs) for epochs in config.training.budgets}

    def jobs(self, todo: list[Window], *, n_features: int) -> list[Job]:
        return [self._job([window]) for window in todo]

    def workers(self, n_jobs: int) -> int:
        return 1

    def run(self, executor: Any, jobs: list[Job], state: Fitted | None) -> Iterator[list[WindowResult]]:
        """One window at a time, each starting from the previous one's members (the checkpoint's
        after a resume), so every window is saved, with its members, as soon as it is done."""
        for job in jobs:
            for results in executor.results([Job(job.windows, job.next_test_rows, state)]):
                state = results[-1].fitted
                yield results

    def train(self, trainer: WindowTrainer, job: Job) -> list[WindowResult]:
        (window,) = job.windows
        return trainer.train([window], [self.start(window.index, job.previous)], job.next_test_rows)

    def start(self, k: int, previous: Fitted | None) -> Start:
        """Window k's start: the previous window's members, and for ``warm_continue`` its slice of
        one schedule spanning every window (:func:`harness.schedules.window_lr_table`)."""
        if not self.continues:
            return Start(previous)
        training, n, longest = self.config.training, len(self.windows), self.sizes[k]
        rows = []
        for candidate in self.config.candidates():  # each at its own budget and LR, zeros after its budget
            own = window_lr_table(candidate.spec, self.budget_sizes[candidate.epochs], k, "warm_continue", n,
                                  candidate.lr)
            rows += [np.pad(own, (0, longest - len(own)))] * training.seeds
        return Start(previous, np.stack(rows))

    def lr_windows(self, done: list[WindowResult]) -> list[WindowResult]:
        return done if self.continues else done[:1]

    def restore(self, done: dict[int, WindowResult], state: tuple[int, Fitted] | None
                ) -> tuple[dict[int, WindowResult], Fitted | None]:
        """Windows ``0..k`` and the members after window k, when all of them were saved; else
        nothing (the chain trains again from window 0)."""
        if state is None or any(i not in done for i in range(state[0] + 1)):
            return {}, None
        return {i: done[i] for i in range(state[0] + 1)}, state[1]


def policy(config: Config, windows: list[Window]) -> Boundary:
    """The boundary policy ``config.training.boundary`` names, over the backtest's ``windows``."""
    return Independent(config, windows) if config.training.boundary == "fresh" else Chained(config, windows)
