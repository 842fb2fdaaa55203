"""Executors: the same numbers from ``local``, a ``process`` pool and Ray tasks; errors come home."""

from __future__ import annotations

import pandas as pd
import pytest

from harness.backtest import plan, run_backtest
from harness.backtest.boundary import policy
from harness.backtest.executors import _check_reachable
from harness.config import parse_config
from harness.data import load_prices
from harness.errors import HarnessError
from strategies.volatility_forecast import VolatilityForecast
from tests.conftest import ROOT, small_config

ray = pytest.importorskip("ray", reason="the ray extra is not installed (make test installs it)")


@pytest.fixture(scope="module")
def prices():
    return load_prices("csv", path=ROOT / "data" / "sp500.csv", start="2010-01-01", end="2011-12-31")


def _config(tmp_path, executor, boundary="fresh", **training):
    return parse_config(small_config(
        tmp_path, training={"epochs": 2, "seeds": 1, "boundary": boundary, **training},
        execution={"executor": executor, "workers": 2},
    ))


def _frames(tmp_path, prices, executor, boundary="fresh"):
    result = run_backtest(_config(tmp_path, executor, boundary), prices=prices, progress=False)
    return result.predictions, result.training


def test_jobs_split_the_windows_for_two_workers_and_chains_go_one_window_at_a_time(tmp_path, prices):
    for boundary, workers, expected in (("fresh", 1, [5]), ("fresh", 2, [2, 2, 1]), ("warm_restart", 2, [1] * 5)):
        config = parse_config(small_config(tmp_path, training={"boundary": boundary}, execution={"workers": workers}))
        the_plan = plan(config, prices)
        windows, n_features = the_plan.windows, the_plan.table.X.shape[1]
        assert len(windows) == 5
        boundary_policy = policy(config, windows)
        jobs = boundary_policy.jobs(windows, n_features=n_features)
        assert [len(job.windows) for job in jobs] == expected
        assert boundary_policy.workers(len(jobs)) == (1 if boundary_policy.chained else len(jobs))
        assert [w.index for job in jobs for w in job.windows] == list(range(5))
        for job in jobs:  # each job knows the next window's test rows (for churn), except the last window
            assert sorted(job.next_test_rows) == [w.index for w in job.windows if w.index < 4]
        done = {0: None, 3: None}  # a resumed run skips what it has
        todo = [w for w in windows if w.index not in done]
        assert [w.index for job in boundary_policy.jobs(todo, n_features=n_features)
                for w in job.windows] == [1, 2, 4]


@pytest.mark.slow
def test_process_and_ray_give_the_local_numbers(tmp_path, prices):
    """Ray starts its own local instance here (2 CPUs) and shuts it down afterwards."""
    local = _frames(tmp_path, prices, "local")
    for executor in ("process", "ray"):
        other = _frames(tmp_path, prices, executor)
        for a, b in zip(local, other):
            pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the tests below; the executor joins it and leaves it running."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.mark.slow
def test_a_chained_policy_ships_each_windows_members_to_the_next_job(tmp_path, prices, ray_session):
    local = _frames(tmp_path, prices, "local", "warm_continue")
    for executor in ("process", "ray"):
        other = _frames(tmp_path, prices, executor, "warm_continue")
        for a, b in zip(local, other):
            pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert ray.is_initialized()  # the caller's session is reused, not shut down


class NoBaseline(VolatilityForecast):
    """A user strategy whose baseline refuses a window (raised inside the worker)."""

    def baseline(self, train, test):
        raise HarnessError("strategy.params: this baseline needs more rows; lower windows.test")


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["process", "ray"])
def test_a_user_error_in_a_worker_comes_back_as_the_same_one_line_error(tmp_path, prices, executor, ray_session):
    raw = small_config(tmp_path, strategy={"name": "tests.backtest.test_executors:NoBaseline", "params": {}},
                       training={"epochs": 1, "seeds": 1}, execution={"executor": executor, "workers": 2})
    with pytest.raises(HarnessError) as caught:
        run_backtest(parse_config(raw), prices=prices, progress=False)
    assert type(caught.value) is HarnessError
    assert str(caught.value) == "strategy.params: this baseline needs more rows; lower windows.test"


@pytest.mark.parametrize(("address", "words"), [
    ("10.0.0.5", "is not 'auto' or HOST:PORT"),
    ("127.0.0.1:1", "no Ray cluster answers at 127.0.0.1:1"),
])
def test_a_bad_ray_address_fails_fast_with_one_line(address, words):
    with pytest.raises(HarnessError, match=words):
        _check_reachable(address, timeout=2.0)


@pytest.mark.slow
def test_bench_scale_doubles_one_size_at_a_time_and_times_each_executor():
    """A smoke test on tiny sizes: the figures' shape, never their values (the machine is shared)."""
    from harness.bench import Sizes, bench_scale, format_scale

    figures = bench_scale(Sizes(windows=2, seeds=1, train=100, test=10, epochs=1, hidden=4), workers=2)
    axes = {row["axis"]: row for row in figures["axes"]}
    assert (axes["base"]["windows"], axes["base"]["members"], axes["base"]["rows"]) == (2, 5, 100)
    assert (axes["windows"]["windows"], axes["members"]["members"], axes["rows"]["rows"]) == (4, 10, 200)
    assert axes["base"]["ratio"] == 1.0 and all(row["seconds"] > 0 for row in figures["axes"])
    executors = [(row["executor"], row["workers"]) for row in figures["executors"]]
    assert executors[0] == ("local", 1) and executors[-1] == ("process", 2)
    assert all(row["windows"] == 4 and row["seconds"] > 0 for row in figures["executors"])
    table = format_scale(figures)
    assert "| windows | 4 | 5 | 100 |" in table and "| process | 2 | 1 | 4 |" in table
