"""A pump between looks wakes when nudged: a batch's uploads and a countdown shorter than its
look go to the broker at once, not at its next look. The pump here looks every 30 s, so a
step it sends within the test's 10 s came from a nudge, not from a look."""

from __future__ import annotations

import time

import pytest

from pipeline.due import DueSteps
from pipeline.steps import Next
from tests.integration.stack import Stack
from workers.pump import Pump
from workers.tasks import CeleryDispatcher, queued_messages

pytestmark = pytest.mark.slow

LOOK_EVERY_S = 30.0
SEEN_WITHIN_S = 10.0


class _Ready:
    """What Celery's worker_ready hands a main-process thread: the worker's app."""

    def __init__(self, app: object) -> None:
        self.app = app


def _until_queued(stack: Stack, count: int) -> None:
    deadline = time.monotonic() + SEEN_WITHIN_S
    while queued_messages(stack.app, stack.settings.worker.queue) < count:
        assert time.monotonic() < deadline, "the pump was not woken: it waits for its look"
        time.sleep(0.02)


def test_a_waiting_pump_sends_an_upload_and_a_short_countdown_when_nudged(settings):
    stack = Stack(settings)
    queue = settings.worker.queue
    # Producers that know this pump's look: anything due before it nudges
    due = DueSteps(stack.redis, queue, nudge_within_s=LOOK_EVERY_S)
    dispatcher = CeleryDispatcher(stack.app, queue, due=due)
    pump = Pump(stack.app, settings, look_every_s=LOOK_EVERY_S)
    try:
        pump.start(sender=_Ready(stack.app))
        time.sleep(0.5)  # (it has looked once and waits for its next look, or a nudge)
        # Given an upload fed while the pump waits
        dispatcher.send(Next("prepare", "nudged", "upload-1"))
        # Then it is in the broker long before the pump's next look
        _until_queued(stack, 1)
        # And a poll due in half a second goes at its time, not at the next look
        dispatcher.send(Next("poll", "nudged", "item-1", countdown_s=0.5))
        _until_queued(stack, 2)
        assert due.count() == 0 and due.fed_waiting() == 0
    finally:
        pump.stop(sender=_Ready(stack.app))  # (it waits up to 5 s for the thread)
        stack.app.control.purge()
        stack.close()
    # And a stop is seen between looks, not at the 30 s look
    assert pump._thread is not None and not pump._thread.is_alive()
