"""The Liu, Oosterlee & Bohte (2019) reproduction script: its samples cover the paper's ranges with
Black–Scholes labels, and it runs end to end through the public API (a tiny scale here)."""

from __future__ import annotations

import numpy as np

from examples.liu2019 import RANGES, main, sample
from harness.pricing import call_price


def test_latin_hypercube_samples_cover_the_papers_ranges_with_black_scholes_labels():
    X, y = sample(4000, seed=0)
    for j, (lo, hi) in enumerate(RANGES.values()):
        assert lo <= X[:, j].min() < lo + (hi - lo) / 4000 * 2 and hi - (hi - lo) / 4000 * 2 < X[:, j].max() <= hi
        counts, _ = np.histogram(X[:, j], bins=10, range=(lo, hi))
        assert (counts == 400).all()  # one point per stratum
    np.testing.assert_allclose(y, call_price(X[:, 0], 1.0, X[:, 1], X[:, 2], X[:, 3]), rtol=1e-15)
    assert not np.array_equal(sample(100, seed=1)[0], sample(100, seed=2)[0])


def test_the_script_runs_through_the_public_api(tmp_path, capsys):
    out = tmp_path / "table.md"
    rows = main(["--samples", "2000", "--epochs", "2", "--seeds", "2", "--width", "8", "--depth", "2",
                 "--markdown", str(out)])
    assert [r["schedule"] for r in rows] == ["constant", "exponential", "multistep", "cosine"]
    assert all(np.isfinite(r["test_mse"]) and r["test_mse"] > 0 for r in rows)
    assert "| constant |" in out.read_text() and "Liu, Oosterlee & Bohte" in capsys.readouterr().out
