"""Keep a Celery worker running: `lipdub worker` runs it as a child and starts it again when it
dies of anything but a stop it was asked for.

Why: a worker can die in ways no task code can prevent: the kernel's OOM killer, or Celery's
consumer giving up ("Unrecoverable error") when Redis restarts while it holds unacknowledged
messages (seen with kombu 5.7.0: closing the lost channel raises AttributeError). Its tasks are
safe in Redis and come back after the visibility timeout, but only a running worker takes
them. Under docker-compose `restart: unless-stopped` would do this too; on a plain machine
this is the supervisor.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

log = logging.getLogger("lipdub.worker")

SETTINGS_EXIT = 3
"""`lipdub worker`'s exit code for a setting it refuses (workers.cli.common.EXIT_SETTINGS)."""


@dataclass
class RestartPolicy:
    """Back-off between restarts: doubling from `first_s` to `max_s`, reset after a child
    that ran `healthy_after_s`."""

    first_s: float = 1.0
    max_s: float = 30.0
    healthy_after_s: float = 60.0
    give_up_after: int = 5
    """Fast failures in a row (each child dead within `healthy_after_s`) before giving up:
    an error no restart will fix (a wrong setting, a broken install) must reach the process
    manager as an exit, not hide behind restarts."""
    _next_s: float = field(default=0.0, init=False)
    _fast_failures: int = field(default=0, init=False)

    def gives_up(self, ran_s: float) -> bool:
        """Count a child that ran `ran_s`; True when this makes too many fast failures.

        >>> policy = RestartPolicy(give_up_after=3)
        >>> [policy.gives_up(2) for _ in range(3)], policy.gives_up(120)
        ([False, False, True], False)
        """
        self._fast_failures = self._fast_failures + 1 if ran_s < self.healthy_after_s else 0
        return self._fast_failures >= self.give_up_after

    def delay_after(self, ran_s: float) -> float:
        """Seconds to wait before the next start, given how long the last child ran.

        >>> policy = RestartPolicy()
        >>> [policy.delay_after(1) for _ in range(7)]
        [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
        >>> policy.delay_after(120)
        1.0
        """
        if ran_s >= self.healthy_after_s or not self._next_s:
            self._next_s = self.first_s
        else:
            self._next_s = min(self.max_s, self._next_s * 2)
        return self._next_s


def supervise(
    argv: Sequence[str],
    *,
    policy: RestartPolicy | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Run `argv` until it exits 0 or 3 (a refused setting) or this process is told to stop;
    restart it otherwise, unless it keeps dying at once (`RestartPolicy.give_up_after`).

    SIGTERM and SIGINT end the loop, with a SIGTERM (warm shutdown) to the child.
    Returns the child's last exit code.
    """
    policy = policy or RestartPolicy()
    stopping = False
    stopped = threading.Event()
    child: subprocess.Popen[bytes] | None = None

    def stop(_signum: int, _frame: FrameType | None) -> None:
        # SIGTERM either way: a warm shutdown. (A Ctrl-C in a terminal reaches the child
        # directly too; Celery takes a second SIGINT for a cold shutdown, a SIGTERM not.)
        nonlocal stopping
        stopping = True
        stopped.set()
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            started = clock()
            child = subprocess.Popen(list(argv))  # noqa: S603 - our own interpreter and args
            code = _wait(child)
            if stopping or code in (0, SETTINGS_EXIT):
                return code  # asked to stop, or a setting that a restart will not fix
            ran_s = clock() - started
            if policy.gives_up(ran_s):
                log.error(
                    "the Celery worker exited with %s %d times in a row, each within %.0f s of "
                    "its start; giving up (see the errors above)",
                    code,
                    policy.give_up_after,
                    policy.healthy_after_s,
                )
                return code or 1
            delay_s = policy.delay_after(ran_s)
            log.error(
                "the Celery worker exited with %s; starting it again in %.0f s", code, delay_s
            )
            if stopped.wait(delay_s):  # a stop during the back-off ends it at once
                return code
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _wait(child: subprocess.Popen[bytes]) -> int:
    while True:
        try:
            return child.wait()
        except KeyboardInterrupt:  # already passed on by the handler; keep waiting
            continue
