"""A poll that is due does not wait behind a batch's queued uploads, nor a freed slot's submit
behind collects: the broker hands out the time-critical steps first (priorities on the real
Redis transport, a real Celery worker)."""

from __future__ import annotations

import threading

import pytest
from celery.signals import task_prerun

from pipeline.due import DueSteps
from pipeline.steps import Next
from tests.integration.stack import Stack, in_process_worker
from workers.tasks import CeleryDispatcher

UPLOADS = 30
COLLECTS = 10


def _run_order(stack: Stack, expected: int) -> list[str]:
    """The steps one single-threaded worker runs, in the order it runs them."""
    ran: list[str] = []
    lock = threading.Lock()

    def record(task=None, args=None, **_):  # Celery's own signal: which step ran, in order
        with lock:
            ran.append(f"{task.name.removeprefix('lipdub.')}:{args[1]}")

    task_prerun.connect(record, weak=False)
    try:
        # One worker with one thread takes them (the steps find no such items: fast)
        with in_process_worker(stack, concurrency=1):
            deadline = threading.Event()
            for _ in range(300):
                if len(ran) == expected:
                    break
                deadline.wait(0.05)
    finally:
        task_prerun.disconnect(record)
    return ran


def _dispatcher(stack: Stack) -> CeleryDispatcher:
    return CeleryDispatcher(
        stack.app,
        stack.settings.worker.queue,
        due=DueSteps(stack.redis, stack.settings.worker.queue),
    )


@pytest.mark.parametrize(
    ("backlog", "count", "urgent"),
    [
        # uploads (prepare steps) queued before a poll falls due
        ("prepare", UPLOADS, "poll"),
        # collects (polls that found their predictions done) queued before the submit one of
        # those polls woke for the slot it freed: the slot must not idle while outputs move
        ("collect", COLLECTS, "submit"),
    ],
)
def test_a_time_critical_step_overtakes_a_queued_backlog(
    stack: Stack, backlog: str, count: int, urgent: str
):
    # Given a backlog queued before a time-critical step
    dispatcher = _dispatcher(stack)
    for n in range(count):
        dispatcher.send(Next(backlog, "busy", f"item-{n}"))
    dispatcher.send(Next(urgent, "busy", "urgent"))
    # When one worker takes them
    ran = _run_order(stack, count + 1)
    # Then all ran, and the urgent step ran first (or second: one message may already be
    # prefetched), not last as a first-in-first-out queue would have it
    assert len(ran) == count + 1, ran
    assert ran.index(f"{urgent}:urgent") <= 1, ran
