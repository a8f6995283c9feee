"""A poll that is due does not wait behind a batch's queued uploads, nor a freed slot's submit
behind collects: the broker hands out the time-critical steps first (priorities on the real
Redis transport, a real Celery worker)."""

from __future__ import annotations

import threading

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


def test_a_due_poll_overtakes_queued_uploads(stack: Stack):
    # Given a backlog of uploads (prepare steps) queued before a poll falls due
    dispatcher = _dispatcher(stack)
    for n in range(UPLOADS):
        dispatcher.send(Next("prepare", "backlog", f"item-{n}"))
    dispatcher.send(Next("poll", "backlog", "due"))
    # When one worker takes them
    ran = _run_order(stack, UPLOADS + 1)
    # Then all ran, and the poll ran first (or second: one upload may already be prefetched),
    # not 31st as a first-in-first-out queue would have it
    assert len(ran) == UPLOADS + 1, ran
    assert ran.index("poll:due") <= 1, ran


def test_a_freed_slots_submit_overtakes_queued_collects(stack: Stack):
    # Given collects queued (polls that found their predictions done) before a submit that
    # one of those polls woke for the slot it freed
    dispatcher = _dispatcher(stack)
    for n in range(COLLECTS):
        dispatcher.send(Next("collect", "busy", f"item-{n}"))
    dispatcher.send(Next("submit", "busy", "woken"))
    # When one worker takes them
    ran = _run_order(stack, COLLECTS + 1)
    # Then the submit ran first (or second), so the slot is not idle while outputs move
    assert len(ran) == COLLECTS + 1, ran
    assert ran.index("submit:woken") <= 1, ran
