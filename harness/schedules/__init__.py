"""Learning-rate schedules as pure functions of the optimizer step (design section 5).

A schedule is a multiplier of the base LR at step ``t`` in ``[0, T)``, ``T = epochs *
steps_per_epoch``; the training loop owns ``t`` and reads ``lr_table(spec, T, base_lr)[t]``.
No scheduler object, no state (optax / nanoGPT ``get_lr`` style); the one adaptive schedule,
``plateau``, keeps its per-member state in a :class:`PlateauState` the loop steps once per epoch.

Conventions: lengths are fractions of T in (0, 1) or step counts >= 1; ``warmup`` (on every
schedule) ramps linearly from 0 and the schedule then runs over the remaining ``T - warmup``
steps; where torch, Keras or transformers have the same schedule the table equals theirs to
1e-9 relative (``tests/test_schedules.py``).
"""

from harness.schedules.catalogue import SCHEDULES, catalogue, format_catalogue
from harness.schedules.curves import with_warmup
from harness.schedules.grid import expand_grid
from harness.schedules.plateau import PlateauState
from harness.schedules.schedule import (
    BOUNDARIES,
    Schedule,
    get_schedule,
    lr_table,
    window_lr_table,
)

__all__ = [
    "BOUNDARIES",
    "SCHEDULES",
    "PlateauState",
    "Schedule",
    "catalogue",
    "expand_grid",
    "format_catalogue",
    "get_schedule",
    "lr_table",
    "window_lr_table",
    "with_warmup",
]
