"""How long a batch should take: the account's limits and the provider's processing time."""

from __future__ import annotations

import pytest

from pipeline.makespan import batch_duration
from pipeline.processing_time import Line
from pipeline.settings import PollingSettings, ProviderSettings

ITEMS = [("cut_off", 10.0)] * 6


def test_a_learned_time_replaces_the_expectation_and_the_limits_shape_the_total():
    silver = ProviderSettings(starts_per_minute=500, max_concurrent=3)
    learned = batch_duration(ITEMS, silver, PollingSettings(), lambda _: Line(2.0, 0.5))
    # Two waves of three at once, 7 s each
    assert (learned.seconds, learned.learned) == (pytest.approx(14.0), True)
    expected = batch_duration(ITEMS, silver, PollingSettings(), lambda _: None)
    assert (expected.seconds, expected.learned) == (pytest.approx(60.0), False)  # 2 x 30 s


def test_the_starts_per_minute_window_holds_back_the_rest():
    bronze = ProviderSettings(starts_per_minute=2, max_concurrent=10, start_margin_s=0.0)
    found = batch_duration(ITEMS, bronze, PollingSettings(), lambda _: Line(1.0, 0.0))
    # 2 start at 0, 2 at 60 s, 2 at 120 s, each 1 s
    assert found.seconds == pytest.approx(121.0)
    assert found.text() == "about 0:02:01"


def test_a_mode_not_learned_yet_marks_the_whole_estimate_as_expected():
    mixed = [("cut_off", 1.0), ("loop", 1.0)]
    found = batch_duration(
        mixed, ProviderSettings(), PollingSettings(),
        lambda mode: Line(1.0, 0.0) if mode == "cut_off" else None,
    )  # fmt: skip
    assert not found.learned and found.seconds == pytest.approx(21.0)


@pytest.mark.parametrize(("send_order", "seconds"), [("longest_first", 40.0), ("manifest", 60.0)])
def test_the_duration_assumes_the_order_items_are_sent_in(send_order, seconds):
    # Two slots; four 10 s clips, then a 40 s one (1 s per video second, nothing fixed)
    rows = [("cut_off", 10.0)] * 4 + [("cut_off", 40.0)]
    two = ProviderSettings(starts_per_minute=500, max_concurrent=2)
    found = batch_duration(rows, two, PollingSettings(), lambda _: Line(0.0, 1.0), send_order)
    # Longest first, the four short ones run beside the long one: 40 s, not 20 + 40 s
    assert found.seconds == pytest.approx(seconds)
