"""Undertrained members: was a member's validation loss still falling when its training stopped?

A decay schedule earns its keep at the end of training, by settling into the minimum. If the
budget stops the members while their validation loss is still falling, the comparison is between
half-trained models, and says little about decay. For each member (window × seed of a candidate)
the harness fits a least-squares line to ``log10`` of its validation loss over its last
:data:`TAIL` of epochs (at least :data:`MIN_EPOCHS` points), up to the epoch it stopped at (its
budget, early stopping or divergence). The member was **still improving** when the slope is
negative and significant against the scatter of its own points around the line: the one-sided
t-test of the slope at :data:`ALPHA` (t < the ``t(n−2)`` quantile), and the fitted line falls by at
least :data:`MIN_DROP` of the loss across the tail (a decayed LR leaves so little noise that a
negligible drift is "significant"; this keeps the flag for falls that matter). A member with fewer than
:data:`MIN_EPOCHS` validated epochs cannot show a levelling-off and counts as undertrained too.
Diverged members and members without a validation loss (``training.validation: 0``) are left out.

Per candidate, the share of its members still improving is logged as the aggregate metric
``still_improving``; at :data:`SHARE` or more the candidate is flagged, and the run and the report
say that the budget is too small to judge decay schedules.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

TAIL = 0.10  # the last share of a member's epochs the slope is fitted over
MIN_EPOCHS = 3  # points the slope needs (and the fewest a tail has)
ALPHA = 0.05  # one-sided level of the slope's t-test
MIN_DROP = 0.01  # the least relative fall of the fitted loss across the tail that counts as improving
SHARE = 0.5  # a candidate with at least this share of members still improving is flagged
MEMBER = ["window", "schedule", "seed"]


def member_trends(curves: pd.DataFrame, training: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per member with a validation loss: ``window, schedule, seed, epochs`` (validated
    epochs), ``slope`` (of log10 validation loss per epoch over the tail), ``t`` (its t statistic),
    ``too_short`` and ``still_improving``. Diverged members (``training``) are left out."""
    columns = [*MEMBER, "epochs", "slope", "t", "too_short", "still_improving"]
    if curves is None or curves.empty:
        return pd.DataFrame(columns=columns)
    finite = curves[np.isfinite(curves["val_loss"].to_numpy(np.float64)) & (curves["val_loss"] > 0)]
    if training is not None and len(training):
        diverged = training.loc[training["diverged"].astype(bool), MEMBER]
        keys = pd.MultiIndex.from_frame(finite[MEMBER])
        finite = finite[~keys.isin(pd.MultiIndex.from_frame(diverged))]
    rows = []
    for key, member in finite.sort_values([*MEMBER, "epoch"]).groupby(MEMBER, sort=False):
        rows.append((*key, *_trend(member["epoch"].to_numpy(np.float64), member["val_loss"].to_numpy(np.float64))))
    frame = pd.DataFrame(rows, columns=columns)
    order = {label: i for i, label in enumerate(pd.unique(curves["schedule"]))}
    return frame.sort_values(["schedule", "window", "seed"], key=lambda c: c.map(order) if c.name == "schedule" else c,
                             kind="stable").reset_index(drop=True)


def _trend(epochs: np.ndarray, loss: np.ndarray) -> tuple[int, float, float, bool, bool]:
    n = len(loss)
    if n < MIN_EPOCHS:
        return n, float("nan"), float("nan"), True, True
    k = max(MIN_EPOCHS, math.ceil(TAIL * n))
    x, y = epochs[-k:], np.log10(loss[-k:])
    x = x - x.mean()
    sxx = float(np.sum(x * x))
    slope = float(np.sum(x * (y - y.mean())) / sxx)
    residual = y - y.mean() - slope * x
    scale = math.sqrt(float(np.sum(residual * residual)) / (k - 2) / sxx)
    if scale > 0:
        t = slope / scale
    else:  # exactly on a line: the sign of the slope decides
        t = -math.inf if slope < 0 else (math.inf if slope > 0 else 0.0)
    drop = 1.0 - 10.0 ** (slope * float(x[-1] - x[0]))  # the fitted line's relative fall across the tail
    # scipy.stats.t.ppf's own function; here: `harness run`'s trainer never needs it
    from scipy.special import stdtrit

    improving = slope < 0 and t < stdtrit(k - 2, ALPHA) and drop >= MIN_DROP
    return n, slope, float(t), False, bool(improving)


def undertrained(curves: pd.DataFrame, training: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per candidate (the frames' ``schedule``): ``members`` judged, ``improving`` (still improving,
    too-short ones included), ``too_short``, ``share`` = improving / members, ``flagged`` (share >=
    :data:`SHARE`), and ``epochs`` (the most epochs a member validated), in the curves' order."""
    trends = member_trends(curves, training)
    labels = list(pd.unique(curves["schedule"])) if curves is not None and len(curves) else []
    grouped = trends.groupby("schedule", sort=False)
    table = pd.DataFrame({
        "members": grouped.size(), "improving": grouped["still_improving"].sum(),
        "too_short": grouped["too_short"].sum(), "epochs": grouped["epochs"].max(),
    }).reindex(labels)
    table.index.name = "schedule"
    table = table.reset_index()
    counts = ["members", "improving", "too_short", "epochs"]
    table[counts] = table[counts].fillna(0).astype(np.int64)
    table["share"] = np.where(table["members"] > 0, table["improving"] / table["members"].clip(lower=1), np.nan)
    table["flagged"] = (table["share"] >= SHARE).fillna(False).astype(bool)
    return table[["schedule", "members", "improving", "too_short", "share", "flagged", "epochs"]]


def aggregate_rows(curves: pd.DataFrame, training: pd.DataFrame | None = None) -> pd.DataFrame:
    """The ``still_improving`` share per candidate as aggregate rows (``schedule, metric, value``)."""
    table = undertrained(curves, training)
    return pd.DataFrame({"schedule": table["schedule"], "metric": "still_improving",
                         "value": table["share"].astype(np.float64)})


def notes(table: pd.DataFrame) -> list[str]:
    """One sentence per flagged candidate (empty when none is)."""
    lines = []
    for row in table[table["flagged"]].itertuples(index=False):
        if row.too_short == row.improving:
            lines.append(
                f"`{row.schedule}`: undertrained: {row.improving} of {row.members} members trained fewer than "
                f"{MIN_EPOCHS} epochs with a validation loss, too few to see it level off: the budget is too small "
                "to judge decay schedules; raise training.epochs"
            )
        else:
            lines.append(
                f"`{row.schedule}`: {row.improving} of {row.members} members were still improving when training "
                f"stopped (validation loss still falling over the last {TAIL:.0%} of epochs by {MIN_DROP:.0%} or more, "
                "significant against its noise): the budget is too small to judge decay schedules; raise training.epochs"
            )
    return lines


def summary(table: pd.DataFrame, limit: int = 4) -> list[str]:
    """What ``harness run`` prints: the flagged candidates' sentences (the first ``limit``, then a count)."""
    lines = notes(table)
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more undertrained candidates (see the selection report)"]
    return lines
