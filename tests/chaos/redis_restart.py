"""Restart Redis (the broker and the ledger) in the middle of a batch.

A test-owned `redis-server` with AOF persistence is stopped (SIGTERM: it writes its log and
exits, as a restart does) while items are in flight, and started again on the same port from
the same directory. Workers reconnect; tasks they had taken but not finished come back after
the visibility timeout.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pipeline.local_servers import RedisServer
from pipeline.planning import Plan
from tests.integration.stack import Stack, worker_processes


def run_with_redis_restarts(
    stack: Stack,
    server: RedisServer,
    batch_plan: Plan,
    workdir: Path,
    *,
    restarts: int = 1,
    down_s: float = 1.0,
    workers: int = 1,
    timeout_s: float = 120.0,
) -> tuple[str, int, dict[str, Any]]:
    """Run the batch, restarting Redis each time a few more items are in flight or done.

    Returns (batch id, restarts done, final status).
    """
    batch_id = stack.control.start(batch_plan, name="redis-restart")
    total = len(batch_plan.items)
    done = 0
    # `lipdub worker`, as shipped: its supervisor restarts a Celery worker that dies of the
    # broker's restart (workers.supervise says why).
    with worker_processes(
        stack.settings, workdir, count=workers, concurrency=2, name="w", supervised=True
    ):
        for n in range(restarts):
            # Restart when the batch is a share of the way through: items in every phase.
            threshold = total * (n + 1) // (restarts + 2)
            if not _wait_until_progress(stack, batch_id, max(1, threshold), timeout_s):
                break
            server.stop()
            time.sleep(down_s)  # the test holds Redis down; no worker sleeps
            server.start()
            done += 1
        status = stack.wait(batch_id, timeout_s=timeout_s)
    return batch_id, done, status


def _wait_until_progress(stack: Stack, batch_id: str, past_prepare: int, timeout_s: float) -> bool:
    """Wait until `past_prepare` items are submitted or further (False if it finished first)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = stack.control.status(batch_id)
        counts = status["counts"]
        moving = sum(counts.get(s, 0) for s in ("submitting", "running", "collecting"))
        if status["state"] == "finished":
            return False
        if moving + counts.get("completed", 0) >= past_prepare and moving:
            return True
        time.sleep(0.05)
    raise AssertionError(f"the batch did not progress in {timeout_s} s")
