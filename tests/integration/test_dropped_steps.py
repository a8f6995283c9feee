"""A worker names the steps it was handed and dropped, and their messages go back to the queue
at once (`workers.dropped`): on a real Redis broker, with messages taken by real consumer
processes that then died without a word (their connection broke, as a Redis restart breaks
it), so that the broker holds them unacknowledged."""

from __future__ import annotations

import multiprocessing
import os
import time
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from pipeline import keys
from pipeline.due import DueSteps, RunningSteps
from pipeline.heartbeat import LIVE_S
from pipeline.local_servers import RedisServer
from pipeline.steps import Next
from tests.integration.stack import stack_settings, worker_processes
from workers.app import create_app
from workers.dropped import DroppedSteps
from workers.sweeper import Sweeper
from workers.tasks import CeleryDispatcher, StepLeases, queued_messages

pytestmark = pytest.mark.slow

POLL = Next("poll", "b-dropped", "i-1")
LATER = 30.0
"""Seconds on the settler's clock: well past `settle_after_s`."""


def _take_and_die(broker_url: str, transport: dict[str, Any], queue: str, out: Any) -> None:
    """A consumer that takes one message without acknowledging it, says which, and dies
    without closing its connection (so kombu cannot give the message back)."""
    from kombu import Connection

    connection = Connection(broker_url, transport_options=transport)
    message = connection.default_channel.basic_get(queue, no_ack=False)
    out.send((message.headers["id"], message.delivery_tag) if message else None)
    os._exit(0)


def taken_by_a_consumer_that_died(app: Any, queue: str) -> tuple[str, str]:
    """(task id, delivery tag) of the queue's next message, now unacknowledged in Redis."""
    context = multiprocessing.get_context("spawn")
    here, there = context.Pipe()
    child = context.Process(
        target=_take_and_die,
        args=(app.conf.broker_url, dict(app.conf.broker_transport_options), queue, there),
    )
    child.start()
    taken = here.recv()
    child.join(timeout=30)
    assert taken is not None, "the queue was empty"
    return taken


def unacknowledged(client: redis.Redis) -> list[str]:
    """The delivery tags the broker holds unacknowledged (kombu's default key)."""
    return sorted(str(tag) for tag in client.hkeys("unacked"))


@pytest.fixture
def broker(settings):
    app = create_app(settings)
    client = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    yield SimpleNamespace(
        app=app,
        client=client,
        queue=settings.worker.queue,
        dispatcher=dispatcher(app, client, settings.worker.queue),
        leases=StepLeases(app, settings),
        running=RunningSteps(client),
    )
    client.close()


def dispatcher(app: Any, client: redis.Redis, queue: str) -> CeleryDispatcher:
    return CeleryDispatcher(app, queue, due=DueSteps(client, queue))


def settler(broker: SimpleNamespace, held: set[str] | None = None) -> DroppedSteps:
    return DroppedSteps(
        broker.app,
        broker.leases,
        held=lambda: set(held or ()),
        clock=lambda: time.time() + LATER,
    )


def dropped(broker: SimpleNamespace, worker: str = "w1@test") -> tuple[str, str]:
    """A step's message taken by `worker`, recorded as running, then dropped."""
    broker.dispatcher.send_now(POLL)
    task_id, tag = taken_by_a_consumer_that_died(broker.app, broker.queue)
    broker.running.start(task_id, worker, POLL, time.time(), broker.queue, tag)
    return task_id, tag


def test_a_dropped_step_goes_back_to_its_queue_once(broker):
    # Given a step's message a worker took and dropped: unacknowledged, not queued
    _, tag = dropped(broker)
    assert queued_messages(broker.app, broker.queue) == 0
    assert unacknowledged(broker.client) == [tag]
    # When the worker settles its records
    sent = settler(broker).settle(broker.running, "w1@test")
    # Then the message is back in the queue, its unacknowledged copy and the record gone
    assert sent == [POLL]
    assert queued_messages(broker.app, broker.queue) == 1
    assert unacknowledged(broker.client) == []
    assert broker.running.all() == []
    # And settling again sends nothing more
    assert settler(broker).settle(broker.running, "w1@test") == []
    assert queued_messages(broker.app, broker.queue) == 1


def test_a_step_still_held_or_of_another_worker_is_left_alone(broker):
    _, tag = dropped(broker, worker="w2@test")
    task_id, _ = dropped(broker, worker="w1@test")
    # When w1 settles while it still holds its own step
    assert settler(broker, held={task_id}).settle(broker.running, "w1@test") == []
    # Then both messages stay with their workers, and both records stay
    assert queued_messages(broker.app, broker.queue) == 0
    assert len(unacknowledged(broker.client)) == 2
    assert sorted(lease.worker for lease in broker.running.all()) == ["w1@test", "w2@test"]
    assert tag in unacknowledged(broker.client)


def test_a_message_delivered_again_since_is_left_with_its_new_holder(broker):
    # Given a dropped step whose message Redis gave back by itself, and another consumer took
    _, tag = dropped(broker)
    with broker.app.connection_for_write() as connection:
        connection.default_channel.qos.restore_by_tag(tag, leftmost=True)
    assert taken_by_a_consumer_that_died(broker.app, broker.queue)[1] == tag
    # When the first worker settles its record
    sent = settler(broker).settle(broker.running, "w1@test")
    # Then the later delivery stays where it is (no second copy in the queue)
    assert sent == []
    assert queued_messages(broker.app, broker.queue) == 0
    assert unacknowledged(broker.client) == [tag]
    assert broker.running.all() == []


def test_an_acknowledged_message_is_not_sent_again(broker):
    # Given a step that ran to its end, whose record stayed (Redis was away at its end)
    _, tag = dropped(broker)
    with broker.app.connection_for_write() as connection:
        connection.default_channel.qos.ack(tag)
    assert unacknowledged(broker.client) == []
    # When the worker settles: nothing to send, the record is forgotten
    assert settler(broker).settle(broker.running, "w1@test") == []
    assert queued_messages(broker.app, broker.queue) == 0
    assert broker.running.all() == []


def _request(app: Any, task_id: str, tag: str) -> tuple[Any, Any]:
    """What Celery's `task_received` passes (sender, request), for a poll of POLL."""
    sender = SimpleNamespace(app=app)
    request = SimpleNamespace(
        id=task_id,
        task_name="lipdub.poll",
        args=[POLL.batch_id, POLL.item_id],
        hostname="w1@test",
        message=SimpleNamespace(delivery_tag=tag),
    )
    return sender, request


def test_a_step_received_while_redis_was_away_is_recorded_or_sent_back(tmp_path, s3_server, bucket):
    with RedisServer(tmp_path / "redis") as server:
        settings = stack_settings(
            sandbox_url="http://127.0.0.1:9", redis_url=server.url, s3_url=s3_server.url,
            bucket=bucket,
        )  # fmt: skip
        app = create_app(settings)
        client = redis.Redis.from_url(server.url, decode_responses=True)
        running = RunningSteps(client)
        leases = StepLeases(app, settings)
        send = dispatcher(app, client, settings.worker.queue).send_now
        send(POLL)
        held_id, held_tag = taken_by_a_consumer_that_died(app, settings.worker.queue)
        send(POLL)
        lost_id, lost_tag = taken_by_a_consumer_that_died(app, settings.worker.queue)
        # Given two steps received while Redis was down: neither could be recorded
        server.stop()
        leases.received(*_request(app, held_id, held_tag))
        leases.received(*_request(app, lost_id, lost_tag))
        assert [lease.member for lease in leases.unrecorded()] == [held_id, lost_id]
        server.start()
        # When Redis is back and the worker settles, holding only the first
        settle = DroppedSteps(
            app, leases, held=lambda: {held_id}, clock=lambda: time.time() + LATER
        )
        sent = settle.settle(running, "w1@test")
        # Then the one it holds is recorded now, with its tag; the other went back to the queue
        assert sent == [POLL]
        assert [(lease.member, lease.delivery_tag) for lease in running.all()] == [
            (held_id, held_tag)
        ]
        assert leases.unrecorded() == []
        assert queued_messages(app, settings.worker.queue) == 1
        assert unacknowledged(client) == [held_tag]
        client.close()


def test_a_live_worker_sends_back_a_step_it_was_handed_and_dropped(settings, tmp_path):
    # Given a live worker, and a record that it holds a step whose message it does not hold
    # (received just before the broker's connection broke: Celery dropped it)
    app = create_app(settings)
    client = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    running = RunningSteps(client)
    # (taken before the worker starts, which would take it first)
    dispatcher(app, client, settings.worker.queue).send_now(POLL)
    task_id, tag = taken_by_a_consumer_that_died(app, settings.worker.queue)
    log = tmp_path / "holder-0.log"
    with worker_processes(settings, tmp_path, concurrency=1, name="holder"):
        deadline = time.monotonic() + 30
        while not (live := client.zrange(keys.WORKERS, 0, -1)):
            assert time.monotonic() < deadline, "the worker never beat"
            time.sleep(0.2)
        [name] = live
        running.start(task_id, str(name), POLL, time.time(), settings.worker.queue, tag)
        # When its heartbeat comes round: the message goes back, and the worker runs it
        deadline = time.monotonic() + 60
        while f"lipdub.poll[{task_id}] received" not in log.read_text() or unacknowledged(client):
            assert time.monotonic() < deadline, "the step was not sent back and run"
            time.sleep(0.5)
    assert (
        f"sent 1 step(s) back to the queue that this worker was handed and dropped: "
        f"poll {POLL.batch_id}/{POLL.item_id}" in log.read_text()
    )
    client.close()


def test_a_record_redis_took_without_answering_is_settled_once(broker, caplog):
    # Given a dropped step recorded in Redis and also kept in memory (Redis took the write,
    # but its answer was lost as the connection broke)
    dropped(broker)
    [lease] = broker.running.all()
    broker.leases.keep(lease)
    # When the worker settles
    with caplog.at_level("WARNING", logger="lipdub.worker"):
        sent = settler(broker).settle(broker.running, "w1@test")
    # Then the step goes back once, and is not also reported as forgotten
    assert sent == [POLL]
    assert queued_messages(broker.app, broker.queue) == 1
    assert broker.running.all() == [] and broker.leases.unrecorded() == []
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "sent 1 step(s) back to the queue that this worker was handed and dropped"
    ]


def test_a_dead_workers_step_goes_back_by_its_own_message(broker, settings):
    # Given a step a worker took and then died with (it never beat): its message unacknowledged
    dropped(broker, worker="dead@test")
    # When a sweeper looks for orphans once the dead worker's heartbeat would have lapsed
    sweeper = Sweeper(broker.app, settings, clock=lambda: time.time() + LIVE_S + 5)
    sent = sweeper.orphans_once(broker.client)
    # Then the step is sent again by its own message: one in the queue, and no unacknowledged
    # copy left to come back a second time after the visibility timeout
    assert sent == [POLL]
    assert queued_messages(broker.app, broker.queue) == 1
    assert unacknowledged(broker.client) == []
    assert broker.running.all() == []
