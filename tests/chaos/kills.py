"""Kill workers at chosen points of a batch, then let a healthy worker finish it.

One crashing worker at a time (`tests.chaos.crash_app`, one pool process) runs the batch
until its point is reached and it dies; the next crashing worker takes over with the next
point; at the end a healthy worker finishes what is left, including the tasks the dead ones
held, which Redis hands out again after the visibility timeout.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.planning import Plan
from tests.integration.stack import Stack, worker_processes

WORKER_START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Kill:
    """A crash that happened: the point, what was on the wire, and which process died."""

    point: str
    scope: str
    at: str
    pid: int
    worker_gone: bool


def kill_settings() -> dict[str, dict[str, Any]]:
    """Worker settings that let a dead worker's tasks come back in seconds, not an hour."""
    return {
        "worker": {
            "task_time_limit_s": 10,
            "task_soft_time_limit_s": 8,
            "max_countdown_s": 2.0,
            "visibility_timeout_s": 13,
            "retry_delay_s": 0.2,
            "sweep_interval_s": 1.0,
        }
    }


def run_with_kills(
    stack: Stack,
    batch_plan: Plan,
    workdir: Path,
    points: list[str],
    *,
    scope: str = "worker",
    timeout_s: float = 120.0,
) -> tuple[str, list[Kill], dict[str, Any]]:
    """Start the batch, kill a worker at each point in turn, finish it; (id, kills, status)."""
    batch_id = stack.control.start(batch_plan, name="kills")
    kills = [
        kill
        for n, point in enumerate(points)
        if (kill := _crash_once(stack, batch_id, workdir, n, point, scope, timeout_s))
    ]
    with worker_processes(stack.settings, workdir, concurrency=2, name="healthy"):
        status = stack.wait(batch_id, timeout_s=timeout_s)
    return batch_id, kills, status


def _crash_once(
    stack: Stack, batch_id: str, workdir: Path, n: int, point: str, scope: str, timeout_s: float
) -> Kill | None:
    """Run a crashing worker until it has crashed at `point` (None if the batch ended first)."""
    marker = workdir / f"crash-{n}-{point}.json"
    env = {
        "CHAOS_CRASH_POINT": point,
        "CHAOS_CRASH_MARKER": str(marker),
        "CHAOS_CRASH_SCOPE": scope,
    }
    with worker_processes(
        stack.settings,
        workdir,
        concurrency=1,
        app="tests.chaos.crash_app",
        extra_env=env,
        name=f"crash-{n}-{point}",
    ) as (proc,):
        deadline = time.monotonic() + timeout_s
        while not marker.exists():
            if stack.control.status(batch_id)["state"] == "finished":
                return None
            if proc.poll() is not None or time.monotonic() > deadline:
                if marker.exists():
                    break  # it crashed at its point between our two looks
                raise AssertionError(
                    f"the crashing worker for {point} exited ({proc.returncode}) or timed out "
                    f"before its point; see {workdir}/crash-{n}-{point}-0.log"
                )
            time.sleep(0.05)
        if scope == "worker":
            proc.wait(timeout=10)  # SIGKILLed with its whole group
        record = json.loads(marker.read_text())
        gone = proc.poll() is not None
    return Kill(record["point"], record["scope"], record["at"], record["pid"], gone)
