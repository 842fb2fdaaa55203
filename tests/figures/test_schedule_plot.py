"""LR-curve PNGs: real files that open, with the promised size, and the nominal labels."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest

from harness.errors import HarnessError
from harness.figures import NOMINAL, plot_lr_curves, plot_schedules, schedule_curves
from harness.schedules import SCHEDULES, lr_table


def read_png(path) -> np.ndarray:
    image = mpimg.imread(path)
    assert image.shape[:2] == (450, 800)  # 8 x 4.5 inches at 100 dpi
    return image


def test_plot_lr_curves_writes_a_png_that_opens(tmp_path):
    curves = {"cosine": lr_table("cosine", 200, 1e-3), "step": lr_table("step", 150, 1e-3)}
    out = plot_lr_curves(curves, tmp_path / "nested" / "lr.png", title="two curves")
    assert out == tmp_path / "nested" / "lr.png"
    image = read_png(out)
    assert image[..., :3].std() > 0.01  # not a blank canvas


def test_log_scale_with_zero_lrs_still_draws(tmp_path):
    curves = {"wsd": lr_table({"name": "wsd", "warmup": 10}, 100), "linear": lr_table("linear", 100)}
    linear_png = read_png(plot_lr_curves(curves, tmp_path / "linear.png"))
    log_png = read_png(plot_lr_curves(curves, tmp_path / "log.png", log_scale=True))
    assert not np.array_equal(linear_png, log_png)


def test_plot_schedules_draws_the_whole_catalogue(tmp_path):
    out = plot_schedules(list(SCHEDULES), 300, tmp_path / "all.png", base_lr=0.01, log_scale=True)
    assert out == tmp_path / "all.png" and out.is_file()
    image = read_png(out)
    assert image[..., :3].std() > 0.01  # not a blank canvas
    # every schedule is drawn: the same plot without the last one differs, and so do other steps
    fewer = read_png(plot_schedules(list(SCHEDULES)[:-1], 300, tmp_path / "fewer.png", base_lr=0.01, log_scale=True))
    assert not np.array_equal(image, fewer)
    longer = read_png(plot_schedules(list(SCHEDULES), 600, tmp_path / "longer.png", base_lr=0.01, log_scale=True))
    assert not np.array_equal(image, longer)
    # and it is the catalogue's curves, drawn by plot_lr_curves with the promised title
    curves = schedule_curves(list(SCHEDULES), 300, base_lr=0.01)
    same = plot_lr_curves(curves, tmp_path / "same.png", log_scale=True,
                          title="LR schedules over 300 optimizer steps (base LR 0.01)")
    np.testing.assert_array_equal(image, read_png(same))


def test_adaptive_kinds_are_drawn_as_labelled_nominal_curves():
    curves = schedule_curves(["cosine", {"name": "plateau", "warmup": 10}, "schedule_free"], 100, base_lr=0.5)
    assert list(curves) == ["cosine", "plateau(warmup=10)" + NOMINAL, "schedule_free" + NOMINAL]
    plateau = curves["plateau(warmup=10)" + NOMINAL]
    np.testing.assert_allclose(plateau[:10], 0.5 * np.arange(10) / 10)
    assert np.all(plateau[10:] == 0.5)


def test_plot_errors_are_one_line(tmp_path):
    with pytest.raises(HarnessError, match="no LR curves to plot"):
        plot_lr_curves({}, tmp_path / "empty.png")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(HarnessError, match=r"cannot write the plot to .*choose a writable path"):
        plot_lr_curves({"c": np.ones(3)}, blocker / "lr.png")
    with pytest.raises(HarnessError, match="unknown schedule 'cosin'"):
        plot_schedules(["cosin"], 100, tmp_path / "x.png")
