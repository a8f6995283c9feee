"""Kill workers at chosen points of a batch, then let a healthy worker finish it.

One crashing worker at a time (`tests.chaos.crash_app`, one pool process) runs the batch
until its point is reached and it dies; the next crashing worker takes over with the next
point; at the end a healthy worker finishes what is left. The steps a dead worker held are
sent again once its heartbeat lapses (`pipeline.due`); `ResumeWatch` times how long after
each kill the last of them was taken up again.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.due import RunningSteps
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
    held: tuple[str, ...] = ()
    """The running-step entries the dying worker had (`lipdub:running` members)."""
    killed_at: float = 0.0
    resume_s: list[float] = field(default_factory=list, compare=False)
    """Filled by `ResumeWatch`: seconds until the last held step was taken up again."""


class ResumeWatch:
    """Watches `lipdub:running` and notes, per kill, when none of its held entries is left
    (each one was sent again and ran, or ran again at once after a pool process died)."""

    def __init__(self, stack: Stack) -> None:
        self.running = RunningSteps(stack.redis)
        self.kills: list[Kill] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ResumeWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            current = {lease.member for lease in self.running.all()}
            for kill in self.kills:
                if kill.held and not kill.resume_s and not set(kill.held) & current:
                    kill.resume_s.append(time.time() - kill.killed_at)


def kill_settings() -> dict[str, dict[str, Any]]:
    """Short worker settings for tests that must not wait even the defaults' minute: a dead
    worker's unacknowledged messages back in 13 s, a lost message re-sent after 2 s. (With
    the defaults a dead worker costs 30-40 s: `test_fast_recovery.py`, `make chaos`.)"""
    return {
        "worker": {
            "task_time_limit_s": 10,
            "task_soft_time_limit_s": 8,
            "max_countdown_s": 2.0,
            "visibility_timeout_s": 13,
            "retry_delay_s": 0.2,
            "sweep_interval_s": 1.0,
            "lost_step_after_s": 2.0,
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
    on_kill: Callable[[Kill], None] = lambda _kill: None,
) -> tuple[str, list[Kill], dict[str, Any]]:
    """Start the batch, kill a worker at each point in turn, finish it; (id, kills, status).
    `on_kill` is told of each kill as soon as the worker is gone, before any other runs."""
    batch_id = stack.control.start(batch_plan, name="kills")
    with ResumeWatch(stack) as watch:
        for n, point in enumerate(points):
            kill = _crash_once(stack, batch_id, workdir, n, point, scope, timeout_s)
            if kill is not None:
                on_kill(kill)
                watch.kills.append(kill)
        with worker_processes(stack.settings, workdir, concurrency=2, name="healthy"):
            status = stack.wait(batch_id, timeout_s=timeout_s)
            deadline = time.monotonic() + 10
            while any(k.held and not k.resume_s for k in watch.kills):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
    return batch_id, watch.kills, status


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
        killed_at = time.time()
        prefix = f"crash-{n}-{point}0-"
        held = tuple(
            lease.member
            for lease in RunningSteps(stack.redis).all()
            if lease.worker.startswith(prefix)
        )
        record = json.loads(marker.read_text())
        gone = proc.poll() is not None
    return Kill(
        record["point"], record["scope"], record["at"], record["pid"], gone, held, killed_at
    )
