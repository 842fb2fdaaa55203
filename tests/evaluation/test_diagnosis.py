"""The undertrained diagnosis on curves whose answer is known: a falling tail, a flat noisy one,
too few epochs, early stopping, divergence, no validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.evaluation.diagnosis import (
    MIN_DROP,
    aggregate_rows,
    member_trends,
    notes,
    summary,
    undertrained,
)


def curves(members: dict[tuple[str, int, int], np.ndarray]) -> pd.DataFrame:
    """A curves frame from ``{(schedule, window, seed): validation losses per epoch}`` (NaN: stopped)."""
    parts = [pd.DataFrame({"window": w, "schedule": s, "seed": seed, "epoch": np.arange(len(v)), "val_loss": v})
             for (s, w, seed), v in members.items()]
    return pd.concat(parts, ignore_index=True)


rng = np.random.default_rng(0)
EPOCHS = np.arange(100)
FALLING = 0.5 * 0.97 ** EPOCHS * np.exp(0.002 * rng.normal(size=100))  # still 3% a epoch at the end
FLAT = (0.2 + 0.3 * np.exp(-EPOCHS / 5)) * np.exp(0.05 * rng.normal(size=100))  # a plateau with noise
SETTLED = 0.2 + 0.3 * np.exp(-EPOCHS / 5) + 1e-9 * EPOCHS[::-1]  # falls, but by far less than MIN_DROP at the end


def test_a_falling_tail_is_still_improving_and_a_plateau_is_not():
    frame = curves({("decay", 0, 0): FALLING, ("decay", 1, 0): FALLING * 1.1, ("flat", 0, 0): FLAT,
                    ("flat", 1, 0): FLAT[::-1][::-1] * 0.9, ("settled", 0, 0): SETTLED})
    trends = member_trends(frame).set_index(["schedule", "window"])
    assert trends.loc[("decay", 0), "still_improving"] and trends.loc[("decay", 0), "t"] < -10
    assert not trends.loc[("flat", 0), "still_improving"]
    assert trends.loc[("settled", 0), "slope"] < 0 and not trends.loc[("settled", 0), "still_improving"]
    table = undertrained(frame).set_index("schedule")
    assert table.loc["decay", "share"] == 1.0 and table.loc["decay", "flagged"]
    assert table.loc["flat", "share"] == 0.0 and not table.loc["flat", "flagged"]
    (line,) = notes(table.reset_index())
    assert line.startswith("`decay`: 2 of 2 members were still improving when training stopped")
    assert f"by {MIN_DROP:.0%} or more" in line and "the budget is too small to judge decay schedules" in line


def test_the_slope_is_fitted_on_the_last_tenth_of_the_epochs_a_member_trained():
    # early stopped after a long fall: the tail it stopped in is flat, so it was not still improving
    stopped = np.concatenate([FALLING[:60], np.full(6, FALLING[59]) * np.exp(0.01 * rng.normal(size=6)),
                              np.full(34, np.nan)])
    trend = member_trends(curves({("s", 0, 0): stopped})).iloc[0]
    assert trend["epochs"] == 66 and not trend["still_improving"]
    # the same fall cut by the budget while still falling: improving
    assert member_trends(curves({("s", 0, 0): FALLING[:30]})).iloc[0]["still_improving"]


def test_too_few_epochs_count_as_undertrained():
    frame = curves({("one", w, s): np.array([0.3 + 0.01 * w + 0.001 * s]) for w in range(3) for s in range(2)})
    table = undertrained(frame)
    row = table.iloc[0]
    assert (row["members"], row["improving"], row["too_short"], row["flagged"]) == (6, 6, 6, True)
    (line,) = notes(table)
    assert "undertrained: 6 of 6 members trained fewer than 3 epochs" in line


def test_diverged_members_and_members_without_validation_are_left_out():
    frame = curves({("s", 0, 0): FALLING, ("s", 0, 1): FLAT, ("s", 1, 0): np.full(100, np.nan)})
    training = pd.DataFrame({"window": [0, 0, 1], "schedule": "s", "seed": [0, 1, 0], "diverged": [True, False, False]})
    table = undertrained(frame, training)
    assert table.iloc[0][["members", "improving"]].tolist() == [1, 0]
    rows = aggregate_rows(frame, training)
    assert rows.to_dict("records") == [{"schedule": "s", "metric": "still_improving", "value": 0.0}]
    empty = undertrained(curves({("s", 0, 0): np.full(5, np.nan)}))
    assert empty.iloc[0]["members"] == 0 and np.isnan(empty.iloc[0]["share"]) and not empty.iloc[0]["flagged"]


def test_the_run_summary_lists_a_few_candidates_then_counts():
    frame = curves({(f"c{k}", 0, 0): np.array([0.3]) for k in range(6)})
    lines = summary(undertrained(frame), limit=4)
    assert len(lines) == 5 and lines[-1] == "... and 2 more undertrained candidates (see the selection report)"


@pytest.mark.parametrize("noise", [0.0, 1e-3])
def test_an_exact_line_is_judged_by_its_sign(noise):
    falling = np.exp(-0.05 * EPOCHS) * (1 + noise * rng.normal(size=100))
    rising = np.exp(0.01 * EPOCHS)
    trends = member_trends(curves({("down", 0, 0): falling, ("up", 0, 0): rising})).set_index("schedule")
    assert trends.loc["down", "still_improving"] and not trends.loc["up", "still_improving"]
