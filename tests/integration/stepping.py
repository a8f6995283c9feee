"""Run the pipeline's steps in the test's own thread on a clock the test moves.

The steps are the real ones, on the real parts (Redis, moto's S3, the sandbox over HTTP);
only time is the test's: a countdown moves the clock instead of waiting for it, so a test
can cross a submission window or a night in a second. The `StepLoop` is the `Dispatcher`
the batch control and the scheduler send steps to.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from datetime import UTC, datetime

from pipeline.flow import run_step
from pipeline.runtime import Runtime
from pipeline.steps import Next


class TestClock:
    """Epoch seconds that move only when told to."""

    __test__ = False

    def __init__(self, start_s: float) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def set(self, when: datetime | float) -> None:
        value = when.timestamp() if isinstance(when, datetime) else when
        assert value >= self.now_s, "the clock never goes back"
        self.now_s = value


def utc(*parts: int) -> datetime:
    """A UTC date-time."""
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


Queue = list[tuple[float, int, Next]]


def push_due(queue: Queue, step: Next, due_s: float, seq: int) -> bool:
    """Put a step on a heap of (due, sequence, step) as the due set keeps it
    (`pipeline.due`): of two copies of a waiting step, the earlier stays. False when an
    earlier copy was there already."""
    if step.countdown_s > 0:
        name = (step.step, step.batch_id, step.item_id)
        same = [e for e in queue if (e[2].step, e[2].batch_id, e[2].item_id) == name]
        if any(e[0] <= due_s for e in same):
            return False
        queue[:] = [e for e in queue if e not in same]
        heapq.heapify(queue)
    heapq.heappush(queue, (due_s, seq, step))
    return True


class StepLoop:
    """Runs sent steps in due order; moves the clock to each one's due time."""

    def __init__(self, rt: Runtime, clock: TestClock) -> None:
        self.rt = rt
        self.clock = clock
        self._queue: Queue = []
        self._sent = 0
        self.ran: list[Next] = []

    def send(self, step: Next) -> None:
        if push_due(self._queue, step, self.clock() + step.countdown_s, self._sent):
            self._sent += 1

    def run(
        self,
        *,
        stop: Callable[[], bool] = lambda: False,
        until_s: float | None = None,
        max_steps: int = 5_000,
    ) -> None:
        """Run steps until none is left, `stop()` is true, or the next is due after `until_s`."""
        for _ in range(max_steps):
            if stop() or not self._queue:
                return
            due_s, _, step = self._queue[0]
            if until_s is not None and due_s > until_s:
                return
            heapq.heappop(self._queue)
            if due_s > self.clock():
                # The sandbox works in real time: let a little pass with each countdown.
                time.sleep(min(due_s - self.clock(), 0.05))
                self.clock.set(due_s)
            following = run_step(self.rt, step.step, step.batch_id, step.item_id)
            self.ran.append(step)
            self.rt.ledger.expect(following, self.clock())
            for nxt in following:
                self.send(nxt)
        raise AssertionError(f"still running after {max_steps} steps: {self._queue[:5]}")

    def pending(self) -> list[Next]:
        """Steps sent and not run yet."""
        return [step for _, _, step in sorted(self._queue)]

    def due(self, name: str) -> bool:
        """Whether a pending step called `name` is due by the clock now."""
        return any(due_s <= self.clock() and step.step == name for due_s, _, step in self._queue)

    def take_due(self, name: str) -> list[Next]:
        """Remove the pending steps called `name` that are due now (the test runs them)."""
        taken = [e for e in self._queue if e[2].step == name and e[0] <= self.clock()]
        self._queue = [entry for entry in self._queue if entry not in taken]
        heapq.heapify(self._queue)
        return [step for _, _, step in sorted(taken)]

    def take(self, name: str) -> list[Next]:
        """Remove the pending steps called `name` (the test runs them itself, in its order)."""
        taken = [entry for entry in self._queue if entry[2].step == name]
        self._queue = [entry for entry in self._queue if entry[2].step != name]
        heapq.heapify(self._queue)
        return [step for _, _, step in sorted(taken)]
