"""When to look at a prediction. Pure functions of the polling settings and what was learned.

Never sooner than `first_poll_min_s` after the submit or the last look (5 s: the provider's
guidance for video tasks), never further apart than `max_interval_s`.

- **With the account's watch** (`polling.watch_every_s`, on by default: `pipeline.flow.watch`)
  a prediction's end is seen within seconds by one list call for the whole account; its own
  looks are only the safety net: the first where the learned line says nearly every
  prediction of its length has ended (else at twice the configured expectation), then growing
  by `growth_factor`.
- **Without it**, the looks are all there is, so they are aimed:
  - with a learned line (`pipeline.processing_time`) the first look goes where a prediction
    of this length is expected to be seen soonest after it ends, given how the recent samples
    fell around the line, that a miss is looked at again one floor later, and that each look
    is worth `POLL_COST_S` of a slot held (`first_look_offset_s`); while the prediction is
    within the samples' range, later looks come as often as the floor allows;
  - without one (a new model or sync mode, or a new deployment), the first `SCOUTS`
    predictions look early and then every tenth of their age, so that the line is learned
    from the provider's real times soon; the others look at the configured expectation and
    are brought forward when the scouts' line says they should be done (`pipeline.flow.nudge`);
  - past what anyone expected, the wait grows from the floor by `growth_factor`, but never
    beyond half the prediction's age (a miss by a little is looked at again soon).

    >>> from pipeline.settings import PollingSettings
    >>> p = PollingSettings(watch_every_s=0)
    >>> first_poll_delay_s(p, video_s=10.0)
    30.0
    >>> next_poll_delay_s(p, 30.0, age_s=30.0, video_s=10.0, first=True)
    5.0
    >>> next_poll_delay_s(p, 50.0, age_s=200.0, video_s=10.0)
    60.0
    >>> first_poll_delay_s(PollingSettings(), video_s=10.0)  # the watch on: a safety net
    60.0
    >>> next_poll_delay_s(PollingSettings(), 60.0, age_s=60.0, video_s=10.0, first=True)
    60.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pipeline.processing_time import Line
from pipeline.settings import PollingSettings

LEARNED_MARGIN_S = 0.25
"""A look is put this far past the time a sample ended: the provider's answer and our clock
are not instant."""
POLL_COST_S = 1.0
"""One more look weighed as this many seconds of a slot held. It decides between one look a
little late and two where the first is often too early."""
SCOUT_SHARE = 0.1
"""A scout looks again after this share of its prediction's age (at least the floor)."""
AGE_SHARE = 0.5
"""Past every expectation, a look waits at most this share of the prediction's age."""
SAFETY_FACTOR = 2.0
"""With the account's watch and nothing learned, an item's first look comes at this many times
the configured expectation: the watch sees the end sooner, and a provider three times slower
than expected then costs two looks instead of four."""


def first_look_offset_s(
    residuals_s: Sequence[float], relook_s: float, poll_cost_s: float = POLL_COST_S
) -> float:
    """Seconds past the line for the first look: of the looks just after each sample's end,
    the one with the least expected lateness plus `poll_cost_s` per look, when a miss is
    looked at again every `relook_s`.

    >>> first_look_offset_s([-2.0, -1.0, 0.0, 1.0, 2.0], relook_s=5.0)  # narrow: one look
    2.25
    >>> first_look_offset_s([-6.0, -3.0, 0.0, 3.0, 6.0], relook_s=5.0)  # wide: two
    -2.75
    """
    if not residuals_s:
        return LEARNED_MARGIN_S
    best_s, best_cost = 0.0, math.inf
    for candidate in sorted({r + LEARNED_MARGIN_S for r in residuals_s}):
        cost = 0.0
        for residual in residuals_s:
            misses = max(0, math.ceil((residual - candidate) / relook_s))
            cost += candidate + misses * relook_s - residual + poll_cost_s * (1 + misses)
        if cost < best_cost - 1e-9:
            best_s, best_cost = candidate, cost
    return best_s


def first_poll_delay_s(
    polling: PollingSettings,
    video_s: float,
    learned: Line | None = None,
    *,
    scout: bool = False,
    queued: bool = False,
) -> float:
    """Seconds from submit to the first look: where the `learned` line puts it (past the
    samples' range when the account's watch is on), else at once for a scout, else at the
    configured expectation; within bounds. A `queued` prediction (sent beyond the account's
    concurrency: `provider.queue_ahead`) first waits for one of ours to end, at most about
    one processing time, which is added after the bounds (twice over with the account's
    watch, which sees its end: the look is only the safety net, and nothing tells when the
    queue let it start).

    >>> from pipeline.settings import PollingSettings
    >>> unwatched = PollingSettings(watch_every_s=0)
    >>> first_poll_delay_s(unwatched, 10.0, Line(2.0, 0.5, spread_s=0.4))
    7.65
    >>> first_poll_delay_s(PollingSettings(), 10.0, Line(2.0, 0.5, spread_s=0.4))
    8.65
    >>> first_poll_delay_s(unwatched, 10.0, scout=True)
    5.0
    >>> first_poll_delay_s(unwatched, 10.0, Line(2.0, 0.5, spread_s=0.4), queued=True)
    14.65
    >>> first_poll_delay_s(PollingSettings(), 10.0, Line(2.0, 0.5, spread_s=0.4), queued=True)
    22.65
    >>> first_poll_delay_s(PollingSettings(), 40.0, queued=True)  # 2 x 60 s, then the bound
    180.0
    """
    queue_s = 0.0
    if queued:
        queue_s = learned.seconds(video_s) if learned is not None else _expected_s(polling, video_s)
        if polling.watch_every_s > 0:
            queue_s *= SAFETY_FACTOR
    if learned is not None:
        if polling.watch_every_s > 0:
            offset_s = _range_top_s(learned) + LEARNED_MARGIN_S + polling.watch_every_s
        elif learned.residuals_s:
            offset_s = first_look_offset_s(learned.residuals_s, polling.first_poll_min_s)
        else:
            offset_s = learned.spread_s + LEARNED_MARGIN_S
        expected_s = learned.seconds(video_s) + offset_s
    elif scout:
        expected_s = polling.first_poll_min_s
    else:
        expected_s = _expected_s(polling, video_s)
        if polling.watch_every_s > 0:
            expected_s *= SAFETY_FACTOR
    # The bounds are for the looks at a prediction the provider is working on: the wait in
    # its queue comes before them (`max_interval_s` would otherwise bring a look at a
    # queued prediction due while it still waits).
    return round(queue_s + _bounded(polling, expected_s), 3)


def _expected_s(polling: PollingSettings, video_s: float) -> float:
    """The configured expectation of a prediction's processing time."""
    return polling.expected_fixed_s + polling.expected_per_video_s * max(0.0, video_s)


def next_poll_delay_s(
    polling: PollingSettings,
    previous_s: float,
    *,
    age_s: float,
    video_s: float,
    learned: Line | None = None,
    scout: bool = False,
    first: bool = False,
) -> float:
    """Seconds until the next look after one that found the prediction unfinished, `age_s`
    after its submit (`previous_s`: the wait before that look; `first`: it was the first).

    >>> from pipeline.settings import PollingSettings
    >>> p, line = PollingSettings(watch_every_s=0), Line(20.0, 1.0, 2.0, (-2.0, 0.0, 2.0))
    >>> next_poll_delay_s(p, 23.0, age_s=23.0, video_s=2.0, learned=line, first=True)  # in range
    5.0
    >>> next_poll_delay_s(p, 5.0, age_s=40.0, video_s=2.0, learned=line)  # past it
    7.5
    >>> next_poll_delay_s(p, 5.0, age_s=80.0, video_s=2.0, scout=True)
    8.0
    """
    if polling.watch_every_s > 0:
        return _bounded(polling, previous_s * polling.growth_factor)
    if learned is not None and age_s < learned.seconds(video_s) + _range_top_s(learned) + (
        LEARNED_MARGIN_S
    ):
        return _bounded(polling, polling.first_poll_min_s)
    if learned is None and scout:
        return _bounded(polling, SCOUT_SHARE * age_s)
    if first:  # its wait was aimed, not grown: the waits grow from the floor after it
        return _bounded(polling, polling.first_poll_min_s)
    return _bounded(polling, min(previous_s * polling.growth_factor, AGE_SHARE * age_s))


def _range_top_s(learned: Line) -> float:
    """How far above its line the slowest recent sample fell."""
    return max((*learned.residuals_s, learned.spread_s))


def _bounded(polling: PollingSettings, seconds: float) -> float:
    ceiling = max(polling.max_interval_s, polling.first_poll_min_s)
    return min(ceiling, max(polling.first_poll_min_s, seconds))
