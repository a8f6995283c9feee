"""Pure arithmetic for the benchmarks: the ideal makespan, window counts, poll minimums.

Kept apart from the runs so that tests/unit/test_bench_figures.py can check it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pipeline.flow.poll_timing import first_poll_delay_s, next_poll_delay_s
from pipeline.makespan import ideal_makespan_s
from pipeline.settings import PollingSettings


def ideal_either_order_s(
    durations_s: Sequence[float],
    video_s: Sequence[float],
    *,
    starts_per_window: int,
    window_s: float,
    max_concurrent: int,
) -> float:
    """The ideal makespan of the jobs (`durations_s`: each one's real processing time) in the
    better of the two orders a client can choose before it knows those times: as given (the
    manifest's, the SDK pool's) and by `video_s`, longest first, ties as given (lipdub's,
    `pipeline.send_order`).

    >>> ideal_either_order_s([1.0, 1.0, 2.0], [1.0, 1.0, 2.0], starts_per_window=9,
    ...                      window_s=60.0, max_concurrent=2)
    2.0
    """
    return min(
        ideal_by_order_s(
            durations_s,
            video_s,
            starts_per_window=starts_per_window,
            window_s=window_s,
            max_concurrent=max_concurrent,
        ).values()
    )


def ideal_by_order_s(
    durations_s: Sequence[float],
    video_s: Sequence[float],
    *,
    starts_per_window: int,
    window_s: float,
    max_concurrent: int,
) -> dict[str, float]:
    """The ideal makespan in each order a client can choose beforehand: `"manifest"` (as
    given) and `"longest_first"` (by `video_s`, ties as given: lipdub's send order). When
    the processing time varies between items more than with their videos' length, either
    order can be the better one, by luck.

    >>> ideal_by_order_s([1.0, 1.0, 2.0], [1.0, 1.0, 2.0], starts_per_window=9,
    ...                  window_s=60.0, max_concurrent=2)
    {'manifest': 3.0, 'longest_first': 2.0}
    """
    by_video = sorted(range(len(durations_s)), key=lambda n: -video_s[n])
    orders = {"manifest": list(durations_s), "longest_first": [durations_s[n] for n in by_video]}
    return {
        name: ideal_makespan_s(
            order,
            starts_per_window=starts_per_window,
            window_s=window_s,
            max_concurrent=max_concurrent,
        )
        for name, order in orders.items()
    }


def most_in_window(times_s: Sequence[float], window_s: float) -> int:
    """The largest number of `times_s` inside any window of `window_s` (half-open).

    >>> most_in_window([0.0, 0.5, 1.0, 1.2, 5.0], 1.0)
    3
    """
    ordered = sorted(times_s)
    best = 0
    first = 0
    for last, time_s in enumerate(ordered):
        while time_s - ordered[first] >= window_s:
            first += 1
        best = max(best, last - first + 1)
    return best


def min_polls(polling: PollingSettings, video_s: float, processing_s: float) -> int:
    """The fewest result requests the polling policy can make to see a job that takes
    `processing_s` from its submit, with nothing learned: its schedule's first point at or
    after the end.

    >>> p = PollingSettings(first_poll_min_s=5, expected_fixed_s=20, expected_per_video_s=1)
    >>> min_polls(p, video_s=10.0, processing_s=25.0), min_polls(p, video_s=10.0, processing_s=70.0)
    (1, 2)
    """
    at = first_poll_delay_s(polling, video_s)
    delay = at
    polls = 1
    while at < processing_s:
        delay = next_poll_delay_s(polling, delay, age_s=at, video_s=video_s, first=polls == 1)
        at += delay
        polls += 1
    return polls


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (`fraction` 0.95 for p95).

    >>> percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.95)
    10
    """
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]
