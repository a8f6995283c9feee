"""How long the provider takes, learned from the predictions it finished.

Each completed prediction that reports its processing time (WaveSpeed's `timings.inference`,
in ms) is a sample (video seconds, seconds taken), kept in Redis per model and sync mode (the
last `KEPT_SAMPLES`, shared by every worker). From at least `MIN_SAMPLES` of them a robust
line is fitted: seconds = fixed + per_video_s x video seconds, by the Theil-Sen estimator
(the median of the pairwise slopes, then the median intercept), which a few slow outliers do
not move; how far above the line most samples fall is kept too (`spread_s`). A prediction's
first poll is aimed at the time its line predicts plus that spread (and a quarter second),
never before `polling.first_poll_min_s`; without samples the configured expectation stands.

Only the provider's own figure is used: the time from submit to the poll that found it done
is bounded by when we chose to look, so learning from it could never bring the first poll
earlier than the guess it started from.

    >>> fit([Sample(2.0, 3.0), Sample(4.0, 5.0), Sample(6.0, 7.1), Sample(8.0, 9.0),
    ...      Sample(5.0, 6.1), Sample(3.0, 40.0)])  # one slow outlier
    Line(fixed_s=1.05, per_video_s=1.0, spread_s=0.05)
    >>> fit([Sample(3.0, 4.0), Sample(3.0, 4.4), Sample(3.0, 3.6)])
    Line(fixed_s=0.0, per_video_s=1.3333, spread_s=0.0)
    >>> fit([Sample(3.0, 4.0)]) is None
    True
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from pipeline import keys
from pipeline.settings import PollingSettings

log = logging.getLogger("lipdub.timing")

KEPT_SAMPLES = 50
MIN_SAMPLES = 3
SAME_LENGTH_S = 0.5
"""Videos closer than this in length give no slope: their seconds per video second is used."""
CACHE_S = 30.0
"""How long a process reuses a fitted line before reading the samples again."""
SCOUTS = 3
"""While there is no line, this many predictions look early and often (the scouts), so that
the first samples come soon after the provider's real time; the others wait for them."""
SCOUT_TERM_S = 600.0
"""Scouts are counted anew after this, in case the first ones never finished."""


@dataclass(frozen=True)
class Sample:
    video_s: float
    took_s: float


@dataclass(frozen=True)
class Line:
    """The provider's processing time: `fixed_s + per_video_s x video seconds`, and how far
    above the line nine in ten samples fell (`spread_s`: 0 for a provider as regular as a
    clock, more for one whose times vary)."""

    fixed_s: float
    per_video_s: float
    spread_s: float = 0.0
    residuals_s: tuple[float, ...] = field(default=(), repr=False, compare=False)
    """Each sample's seconds above (or below: negative) the line, in order: where a first
    look is best put (`pipeline.flow.poll_timing`)."""

    def seconds(self, video_s: float) -> float:
        return self.fixed_s + self.per_video_s * max(0.0, video_s)


def fit(samples: Sequence[Sample], shape: Line | None = None) -> Line | None:
    """The robust line through the samples; None with fewer than `MIN_SAMPLES`.

    Clips of about one length cannot tell the fixed part from the part per video second:
    then the line has the `shape` given (the configured expectation), scaled to the samples,
    or without one all of the time is taken as per video second.

    >>> fit([Sample(1.0, 5.25), Sample(1.2, 5.3), Sample(1.1, 5.275)], shape=Line(20.0, 1.0))
    Line(fixed_s=5.0, per_video_s=0.25, spread_s=0.0)
    """
    if len(samples) < MIN_SAMPLES:
        return None
    slopes = [
        (b.took_s - a.took_s) / (b.video_s - a.video_s)
        for i, a in enumerate(samples)
        for b in samples[i + 1 :]
        if abs(b.video_s - a.video_s) >= SAME_LENGTH_S
    ]
    if len(slopes) < MIN_SAMPLES and shape is not None and shape.seconds(1.0) > 0:
        scale = statistics.median(s.took_s / shape.seconds(s.video_s) for s in samples)
        line = Line(round(shape.fixed_s * scale, 4), round(shape.per_video_s * scale, 4))
    elif len(slopes) < MIN_SAMPLES:
        # Clips of one length and no shape: the time per video second says it all.
        rate = statistics.median(s.took_s / max(s.video_s, 1.0) for s in samples)
        line = Line(0.0, round(rate, 4))
    else:
        slope = max(0.0, statistics.median(slopes))
        fixed = max(0.0, statistics.median(s.took_s - slope * s.video_s for s in samples))
        line = Line(round(fixed, 4), round(slope, 4))
    above = sorted(round(s.took_s - line.seconds(s.video_s), 3) for s in samples)
    spread = max(0.0, above[int(0.9 * (len(above) - 1))])  # (a lone outlier is the last)
    return Line(line.fixed_s, line.per_video_s, round(spread, 3), tuple(above))


def expected_line(polling: PollingSettings) -> Line:
    """The configured expectation as a line (`expected_fixed_s`, `expected_per_video_s`)."""
    return Line(polling.expected_fixed_s, polling.expected_per_video_s)


class ProcessingTimes:
    """The samples in Redis (`lipdub:timing:<model>:<sync_mode>`), and the fitted lines,
    cached for `CACHE_S` in this process."""

    def __init__(
        self,
        client: redis.Redis,
        clock: Callable[[], float] = time.monotonic,
        *,
        shape: Line | None = None,
    ) -> None:
        self.redis = client
        self.clock = clock
        self.shape = shape
        """The expected line's shape, for samples of about one length (`fit`)."""
        self._lines: dict[str, tuple[float, Line]] = {}

    def record(self, model: str, sync_mode: str, video_s: float, took_s: float) -> None:
        """Keep one finished prediction's processing time (the last `KEPT_SAMPLES`). Only a
        measure: Redis trouble loses the sample, nothing else."""
        key = keys.timing(model, sync_mode)
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.lpush(key, json.dumps([round(video_s, 3), round(took_s, 3)]))
                pipe.ltrim(key, 0, KEPT_SAMPLES - 1)
                pipe.expire(key, keys.TIMING_TTL_S)
                pipe.execute()
        except redis.RedisError as err:
            log.warning("a processing time was not recorded: %s", type(err).__name__)

    def scout(self, model: str, sync_mode: str) -> bool:
        """Whether a prediction submitted now, with no line to aim at, should be one of the
        `SCOUTS`. Only a measure: Redis trouble makes it not a scout."""
        key = keys.timing_scouts(model, sync_mode)
        try:
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(key, 0, ex=int(SCOUT_TERM_S), nx=True)  # (the term starts)
                pipe.incr(key)
                _, count = pipe.execute()
        except redis.RedisError as err:
            log.warning("no scout was counted: %s", type(err).__name__)
            return False
        return int(count) <= SCOUTS

    def line(self, model: str, sync_mode: str) -> Line | None:
        """The line fitted to the recent samples, or None while there are too few (or
        Redis cannot be read: the configured expectation then stands)."""
        key = keys.timing(model, sync_mode)
        cached = self._lines.get(key)
        if cached is not None and self.clock() - cached[0] < CACHE_S:
            return cached[1]
        try:
            raw: Any = self.redis.lrange(key, 0, -1)
        except redis.RedisError:
            return None
        found = fit([Sample(*json.loads(str(entry))) for entry in raw], self.shape)
        if found is not None:  # (too few samples yet: ask again next time)
            self._lines[key] = (self.clock(), found)
        return found
