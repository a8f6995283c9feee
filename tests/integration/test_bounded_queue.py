"""A batch's uploads are fed to the broker as it has room: the broker never holds more than
`worker.queue_window` of them, the rest wait in Redis as ids, and the batch completes."""

from __future__ import annotations

import time

import pytest

from pipeline import keys
from pipeline.due import DueSteps
from pipeline.steps import Next
from tests.integration.stack import Stack, in_process_worker, plan, write_manifest
from workers.pump import Pump
from workers.session import Session
from workers.tasks import CeleryDispatcher, queued_messages

pytestmark = pytest.mark.slow

WINDOW = 15


class _Ready:
    """What Celery's worker_ready hands a main-process thread: the worker's app."""

    def __init__(self, app: object) -> None:
        self.app = app


def _connections_received(stack: Stack) -> int:
    return int(stack.redis.info("stats")["total_connections_received"])


def test_uploads_wait_in_redis_until_the_broker_has_room(settings, tmp_path):
    from pipeline.settings import Settings

    windowed = Settings(**{**settings.model_dump(), "worker": {
        **settings.worker.model_dump(), "queue_window": WINDOW}})  # fmt: skip
    stack = Stack(windowed)
    due = DueSteps(stack.redis, windowed.worker.queue)
    try:
        # Given 400 uploads sent, and a pump running while no worker takes anything
        dispatcher = CeleryDispatcher(stack.app, windowed.worker.queue, due=due)
        for n in range(400):
            dispatcher.send(Next("prepare", "big", f"item-{n:03d}"))
        assert due.fed_waiting() == 400 and queued_messages(stack.app, windowed.worker.queue) == 0
        pump = Pump(stack.app, windowed)
        pump.start(sender=_Ready(stack.app))
        try:
            deadline = time.monotonic() + 10
            while queued_messages(stack.app, windowed.worker.queue) < WINDOW:
                assert time.monotonic() < deadline, "the pump fed nothing"
                time.sleep(0.05)
            connections = _connections_received(stack)
            time.sleep(1.0)  # (it would feed more now if it were going to)
            # (and it looks at the broker's queue five times a second meanwhile)
            connections = _connections_received(stack) - connections
        finally:
            pump.stop(sender=_Ready(stack.app))
        # Then the broker holds the window, in order, and the rest wait as ids in Redis
        assert queued_messages(stack.app, windowed.worker.queue) == WINDOW
        assert due.fed_waiting() == 400 - WINDOW
        assert [step for _, step in due.take_fed(1)] == [
            Next("prepare", "big", f"item-{WINDOW:03d}")
        ]
        # And it looked on the connection it keeps, not on a new one each time
        assert connections == 0, connections
        per_item = (
            stack.redis.memory_usage(f"lipdub:feed:{windowed.worker.queue}") / due.fed_waiting()
        )
        print(f"\nfeed: {per_item:.0f} bytes per waiting upload")
        assert per_item <= 100
    finally:
        stack.app.control.purge()
        stack.redis.delete(f"lipdub:feed:{windowed.worker.queue}")
        stack.close()


def test_the_starting_process_hands_an_upload_over_while_the_feed_is_empty(settings):
    from pipeline.settings import Settings

    windowed = Settings(**{**settings.model_dump(), "worker": {
        **settings.worker.model_dump(), "queue_window": 3}})  # fmt: skip
    stack = Stack(windowed)
    queue = windowed.worker.queue
    due = DueSteps(stack.redis, queue)
    try:
        # Given the process that starts batches, with no pump running
        with Session.connect(windowed) as session:
            # When three uploads are sent, one after another
            for n in range(3):
                session.control.dispatcher.send(Next("prepare", "b", f"item-{n}"))
            # Then each went to the broker from here, none waits for a pump
            assert queued_messages(stack.app, queue) == 3 and due.fed_waiting() == 0
            # When the broker holds the window and two more are sent
            for n in range(3, 5):
                session.control.dispatcher.send(Next("prepare", "b", f"item-{n}"))
        # Then they wait in the feed, in order, for the pumps (nothing was left leased)
        assert queued_messages(stack.app, queue) == 3
        assert not stack.redis.zcard(keys.due_sending(queue))
        assert [step.item_id for _, step in due.take_fed(5)] == ["item-3", "item-4"]
    finally:
        stack.app.control.purge()
        stack.redis.delete(keys.feed(queue), keys.due_sending(queue))
        stack.close()


def test_a_batch_bigger_than_the_window_completes(settings, tmp_path):
    from pipeline.settings import Settings

    windowed = Settings(**{**settings.model_dump(), "worker": {
        **settings.worker.model_dump(), "queue_window": 3}})  # fmt: skip
    stack = Stack(windowed)
    items = [(f"w{n}", 0.4 + 0.04 * n, 0.6, "cut_off") for n in range(12)]
    with in_process_worker(stack, concurrency=4):
        batch_id = stack.control.start(plan(write_manifest(tmp_path / "m", items), windowed))
        status = stack.wait(batch_id, timeout_s=90)
    assert {k: v for k, v in status["counts"].items() if v} == {"completed": 12}, status
    stack.close()
