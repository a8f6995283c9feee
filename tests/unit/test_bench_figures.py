"""The benchmarks' arithmetic: if the ideal or the counts were wrong, every figure would be."""

from __future__ import annotations

import pytest

from pipeline.makespan import ideal_makespan_s
from pipeline.settings import PollingSettings
from tests.bench.figures import (
    ideal_by_order_s,
    ideal_either_order_s,
    min_polls,
    most_in_window,
    percentile,
)


def test_ideal_is_bound_by_the_window_when_jobs_are_short():
    # 120 per 60 s, 20 at a time, 1 s jobs: 120 in the first 6 s, the next 80 from 60 s
    jobs = [1.0] * 200
    assert ideal_makespan_s(jobs, starts_per_window=120, window_s=60, max_concurrent=20) == 64.0


def test_ideal_is_bound_by_concurrency_when_jobs_are_long():
    jobs = [10.0] * 40
    assert ideal_makespan_s(jobs, starts_per_window=1000, window_s=60, max_concurrent=20) == 20.0


def test_ideal_handles_uneven_jobs():
    # two slots: 5 s and 1 s start at 0; the 1 s job frees its slot first
    assert (
        ideal_makespan_s([5, 1, 1, 1], starts_per_window=10, window_s=60, max_concurrent=2) == 5.0
    )


def test_the_ideal_takes_the_better_order_longest_first_when_the_long_job_is_listed_last():
    # two slots: 1, 1, 1, 1 then 4 in manifest order ends at 6 s; the 4 s job first, at 4 s
    jobs = [1.0, 1.0, 1.0, 1.0, 4.0]
    limits = {"starts_per_window": 10, "window_s": 60.0, "max_concurrent": 2}
    assert ideal_makespan_s(jobs, **limits) == 6.0
    assert ideal_either_order_s(jobs, jobs, **limits) == 4.0
    # and the given order when it is the better one (longest first: 3+2+2 on one slot)
    listed = [3.0, 2.0, 2.0, 3.0, 2.0]
    assert ideal_makespan_s(sorted(listed, reverse=True), **limits) == 7.0
    assert ideal_either_order_s(listed, listed, **limits) == 6.0


def test_the_ideal_orders_by_what_a_client_knows_beforehand_the_videos_length():
    # the longest video is not the longest job (the provider's times vary): by the videos,
    # 3 | 1, 1, 5 ends at 7 s, so the manifest's 1, 1, 5, 3 (6 s) is the ideal, not the 5 s
    # that only a client knowing each job's time beforehand could reach (5 | 3, 1, 1)
    limits = {"starts_per_window": 10, "window_s": 60.0, "max_concurrent": 2}
    jobs, videos = [1.0, 1.0, 5.0, 3.0], [1.0, 1.0, 1.0, 2.0]
    assert ideal_either_order_s(jobs, videos, **limits) == 6.0
    assert ideal_either_order_s(jobs, jobs, **limits) == 5.0
    # each order's own ideal is kept, so a run can say what its order cost
    assert ideal_by_order_s(jobs, videos, **limits) == {"manifest": 6.0, "longest_first": 7.0}


@pytest.mark.parametrize(
    ("times", "window", "expected"),
    [([], 1.0, 0), ([0, 1, 2], 1.0, 1), ([0, 0.5, 0.99, 1.0], 1.0, 3), ([5, 1, 3, 2], 2.5, 3)],
)
def test_most_in_window(times, window, expected):
    assert most_in_window(times, window) == expected


def test_min_polls_follows_the_growing_schedule():
    policy = PollingSettings(
        first_poll_min_s=1, expected_fixed_s=2, expected_per_video_s=0, growth_factor=2,
        max_interval_s=100,
    )  # fmt: skip
    # With the account's watch (the default) the looks are a safety net, from twice the
    # expectation: 4, 4+8=12, 12+16=28 s
    assert [min_polls(policy, 0, p) for p in (1.0, 2.0, 4.1, 6.0, 13.9)] == [1, 1, 2, 2, 3]
    # Without it, after the first look each wait is the smaller of twice the last (from the
    # floor) and half the age: 2, 2+1=3, 3+1.5=4.5, 4.5+2.25=6.75, 10.125, 15.19
    unwatched = policy.model_copy(update={"watch_every_s": 0.0})
    assert [min_polls(unwatched, 0, p) for p in (1.0, 2.0, 2.1, 6.0, 13.9)] == [1, 1, 2, 4, 6]


def test_percentile_is_nearest_rank():
    assert percentile([3, 1, 2], 0.5) == 2
    assert percentile([1] * 19 + [9], 0.95) == 1
    assert percentile([1] * 18 + [9, 9], 0.95) == 9
