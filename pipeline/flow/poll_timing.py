"""When to look at a prediction again. Pure functions of the polling settings.

The first check comes when the item should be done; later ones grow by `growth_factor`, never
closer than `first_poll_min_s` (5 s for the real provider) nor further than `max_interval_s`.

    >>> from pipeline.settings import PollingSettings
    >>> p = PollingSettings()
    >>> first_poll_delay_s(p, video_s=10.0)
    30.0
    >>> next_poll_delay_s(p, 30.0)
    45.0
    >>> next_poll_delay_s(p, 50.0)
    60.0
"""

from __future__ import annotations

from pipeline.processing_time import Line
from pipeline.settings import PollingSettings

LEARNED_MARGIN_S = 0.25
"""A learned time is aimed past its line by the samples' spread above it and this much: a
miss costs a whole interval, a late look only the time it is late."""


def first_poll_delay_s(
    polling: PollingSettings, video_s: float, learned: Line | None = None
) -> float:
    """Seconds from submit to the first check: the processing time the provider has been
    taking (`learned`, `pipeline.processing_time`), else the configured expectation, within
    bounds.

    >>> from pipeline.settings import PollingSettings
    >>> first_poll_delay_s(PollingSettings(), 10.0, Line(2.0, 0.5, spread_s=0.4))
    7.65
    """
    if learned is not None:
        expected_s = learned.seconds(video_s) + learned.spread_s + LEARNED_MARGIN_S
    else:
        expected_s = polling.expected_fixed_s + polling.expected_per_video_s * max(0.0, video_s)
    return round(_bounded(polling, expected_s), 3)


def next_poll_delay_s(polling: PollingSettings, previous_s: float) -> float:
    """Seconds until the next check after one that found the prediction unfinished."""
    return _bounded(polling, previous_s * polling.growth_factor)


def _bounded(polling: PollingSettings, seconds: float) -> float:
    ceiling = max(polling.max_interval_s, polling.first_poll_min_s)
    return min(ceiling, max(polling.first_poll_min_s, seconds))
