"""Celery's own cost per task on lipdub's stack: the floor under the orchestration overhead.

The overhead bench measures the CPU an item costs the workers and Redis; an item is several
Celery tasks (one per step), and each task costs Celery and its Redis broker something before
a line of lipdub runs: the message sent, delivered, acknowledged late (kombu's unacknowledged
copy), four task events. This measures that part alone, on the same stack (the same `lipdub
worker` processes, settings and Redis): chains of no-op tasks (Celery's built-in
`celery.accumulate`), each link sent by the worker that ran the one before, as a step sends the
next, in lipdub's queue at a step's priority. CPU per task is that of the workers and Redis
while they run the chains, less the stack's quiet background (below); times the tasks an item
of the overhead batch ran, it is what any design with one Celery task per step pays per item.

It measures Celery somewhat generously: lipdub's own `task_received` work (the step's record
as running) is not done for these tasks, and the first link of each chain is sent from the
bench's process, whose CPU is not counted.

CPU is read from the live processes (`stack_cpu_s`) at the start and end of the work, not
from start to stop of the stack: a stack's start-up (the workers importing everything) costs
several CPU-seconds and varies by more than a second between two starts, which over a
thousand tasks is noise of a millisecond a task. The stack's background (heartbeats, the
pump's looks) is measured first, while it does nothing, and taken off at that rate.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import psutil
import redis
from celery import Celery, chain

from tests.bench.stack import connected
from workers.demo import DemoStack
from workers.tasks import queued_messages

CHAIN_LINKS = 5
NOOP_PRIORITY = 5  # the priority of most steps (`workers.tasks.STEP_PRIORITY`)
UNACKED_KEY = "unacked"  # kombu's Redis transport: messages delivered and not yet acknowledged
QUIET_S = 3.0
"""How long the stack's background CPU is measured, before the work."""


def stack_cpu_s() -> float:
    """CPU seconds so far of every live process this one started, and of theirs: the
    workers, their pool processes, redis-server (the S3 server and the sandbox run in this
    process and are not counted)."""
    total = 0.0
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def background_cpu_s_per_s(quiet_s: float = QUIET_S) -> float:
    """The stack's CPU per second while it has nothing to do."""
    before, start = stack_cpu_s(), time.perf_counter()
    time.sleep(quiet_s)  # the benchmark waits, not a worker
    return (stack_cpu_s() - before) / (time.perf_counter() - start)


def tasks_run(app: Celery) -> dict[str, int]:
    """Tasks each name has run, summed over the workers that answer (`inspect stats`)."""
    totals: dict[str, int] = {}
    for stats in (app.control.inspect(timeout=2.0).stats() or {}).values():
        for name, count in dict(stats.get("total") or {}).items():
            totals[name] = totals.get(name, 0) + int(count)
    return totals


def run_chains(
    stack: DemoStack,
    items: int,
    cpu_s: Callable[[], tuple[float, float]],
    redis_calls: Callable[[redis.Redis], dict[str, int]],
) -> dict[str, Any]:
    """`items` chains of `CHAIN_LINKS` no-op tasks on `stack` (not yet started), to the last;
    the stack's CPU (`cpu_s()` before and after: this process, its children) and Redis calls."""
    before = cpu_s()
    with stack, connected(stack) as session:
        assert stack.settings is not None
        queue = stack.settings.worker.queue
        app = session.app
        noop = app.signature(
            "celery.accumulate", immutable=True, queue=queue, priority=NOOP_PRIORITY
        )
        background = background_cpu_s_per_s()
        start, cpu_before = time.perf_counter(), stack_cpu_s()
        for n in range(items):
            chain(*(noop.clone(args=(n, link)) for link in range(CHAIN_LINKS))).apply_async()
        # Done when no message waits and none is out with a worker: a link sends the next
        # before its own message is acknowledged, so a chain under way always shows in one.
        while queued_messages(app, queue) or session.redis.hlen(UNACKED_KEY):
            time.sleep(0.1)  # the benchmark waits, not a worker
        wall, in_work = time.perf_counter() - start, stack_cpu_s() - cpu_before
        ran = tasks_run(app).get("celery.accumulate", 0)
        calls = redis_calls(session.redis)
    after = cpu_s()
    return {
        "tasks": items * CHAIN_LINKS,
        "tasks_run": ran,
        "wall_s": round(wall, 2),
        "cpu_s": {
            "self": round(after[0] - before[0], 2),
            "children": round(after[1] - before[1], 2),
        },
        "background_cpu_s_per_s": round(background, 4),
        "stack_cpu_s_in_work": round(in_work, 3),
        "redis_calls": calls,
    }
