"""How long a batch will take under the account's limits: the ideal makespan.

The provider lets `starts_per_minute` predictions start in any `rate_window_s` and runs at
most `max_concurrent` at once; each item takes its processing time (learned from the
provider's recent predictions, `pipeline.processing_time`, else the configured expectation).
Started in order, each as early as both limits allow, the last one ends at the makespan:
what `lipdub plan` shows, so an overnight window can be checked before a batch starts, and
what `make bench` compares lipdub's real makespan with.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipeline.processing_time import Line
from pipeline.send_order import SendOrder, in_send_order
from pipeline.settings import PollingSettings, ProviderSettings


def ideal_makespan_s(
    durations_s: Sequence[float], *, starts_per_window: int, window_s: float, max_concurrent: int
) -> float:
    """The shortest time in which a provider with these limits can run every job, all of them
    ready at 0: each starts as early as both the sliding window (at most `starts_per_window`
    starts in any `window_s`) and the concurrency limit allow. Jobs run in the given order,
    as a batch does.

    >>> ideal_makespan_s([1.0] * 4, starts_per_window=2, window_s=10.0, max_concurrent=4)
    11.0
    >>> ideal_makespan_s([3.0] * 4, starts_per_window=100, window_s=60.0, max_concurrent=2)
    6.0
    """
    starts: list[float] = []
    running: list[float] = []  # end times, a heap
    makespan = 0.0
    for duration in durations_s:
        at = starts[-1] if starts else 0.0  # in order: the heap below forgets ended jobs
        if len(starts) >= starts_per_window:
            at = max(at, starts[-starts_per_window] + window_s)
        while running and len(running) >= max_concurrent:
            at = max(at, heapq.heappop(running))
        while running and running[0] <= at:
            heapq.heappop(running)
        starts.append(at)
        heapq.heappush(running, at + duration)
        makespan = max(makespan, at + duration)
    return makespan


@dataclass(frozen=True)
class Duration:
    """A batch's expected duration, and what the processing times came from."""

    seconds: float
    learned: bool
    """True when every sync mode's time was learned from the provider's recent predictions."""

    def text(self) -> str:
        """E.g. `about 1:05:00`.

        >>> Duration(3900.4, True).text(), Duration(42.0, False).text()
        ('about 1:05:00', 'about 0:00:42')
        """
        whole = round(self.seconds)
        return f"about {whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def batch_duration(
    items: Sequence[tuple[str, float]],
    provider: ProviderSettings,
    polling: PollingSettings,
    learned: Callable[[str], Line | None],
    send_order: SendOrder = "longest_first",
) -> Duration:
    """The ideal makespan of items given as (sync mode, video seconds) in manifest order, sent
    in `send_order` (`pipeline.send_order`)."""
    lines = {mode: learned(mode) for mode in {mode for mode, _ in items}}
    durations = []
    for mode, video_s in in_send_order(items, lambda item: item[1], send_order):
        line = lines[mode]
        if line is not None:
            durations.append(line.seconds(video_s))
        else:
            durations.append(polling.expected_fixed_s + polling.expected_per_video_s * video_s)
    seconds = ideal_makespan_s(
        durations,
        starts_per_window=provider.starts_per_minute,
        window_s=provider.start_window_s,
        max_concurrent=provider.max_concurrent,
    )
    return Duration(seconds, all(line is not None for line in lines.values()))
