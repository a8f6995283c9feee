"""Steps a live worker was handed and then dropped: their messages go back to the queue at
once, instead of after the broker's visibility timeout.

When the broker's connection breaks (Redis restarting), Celery drops the messages the worker
had received but not started: they cannot be acknowledged on a new connection. Redis keeps
each one unacknowledged until the visibility timeout (an hour), and nothing else sends the
step again until the lost-message sweep finds it overdue (`worker.lost_step_after_s` and the
sweep's interval: three minutes). The worker knows which steps they were: it recorded each
as running when it received it, with the message's delivery tag (`StepLeases`), or, when
Redis was away at that moment, kept the record in memory.

At each heartbeat the worker looks at its records. A record of a step it still holds (received,
running or waiting for its countdown in this process) that Redis could not take is written
now. A record of a step it no longer holds is settled: the broker's unacknowledged copy of
the message is put back at the head of its queue, once, and only if it is still the delivery
this worker received; a copy delivered again since (Redis gave it back itself, and another
worker took it) is left alone. A message already acknowledged (the step ran; only its record
stayed) has no copy, and nothing is sent. Records without a delivery tag (an older lipdub
wrote them) are dropped, and the lost-message sweep sends their steps again later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from celery.worker import state as worker_state

from pipeline.due import Lease, RunningSteps
from pipeline.errors import LedgerError
from pipeline.heartbeat import BEAT_S
from pipeline.steps import Next
from workers.tasks import StepLeases

log = logging.getLogger("lipdub.worker")


def held_task_ids() -> set[str]:
    """The task ids of the messages this worker process holds: received, running, or waiting
    for their countdown. Raises RuntimeError when Celery changed its sets meanwhile."""
    return (
        set(worker_state.requests)
        | {r.id for r in list(worker_state.reserved_requests)}
        | {r.id for r in list(worker_state.active_requests)}
        | {r.id for r in list(worker_state.scheduled_requests)}
    )


def give_back(app: Celery, delivery_tag: str, received_at: float) -> bool:
    """Put the unacknowledged message `delivery_tag` back at the head of its queue if it is
    still the delivery made by `received_at` (its unacknowledged copy's timestamp is no
    later). True when it went back. Only the Redis transport keeps such copies."""
    with app.connection_for_write() as connection:
        channel: Any = connection.default_channel
        qos = channel.qos
        if not hasattr(qos, "restore_by_tag"):
            return False
        delivered_at = channel.client.zscore(qos.unacked_index_key, delivery_tag)
        if delivered_at is None or float(delivered_at) > received_at:
            return False
        # kombu's own restore: removes the copy and pushes the message in one transaction
        # (watching the copies), so a message is never both restored and still unacknowledged.
        qos.restore_by_tag(delivery_tag, leftmost=True)
        return True


@dataclass
class DroppedSteps:
    """Settles the records of this worker's steps, one heartbeat at a time (`settle`)."""

    app: Celery
    leases: StepLeases
    held: Callable[[], set[str]] = held_task_ids
    clock: Callable[[], float] = time.time
    settle_after_s: float = BEAT_S
    """A record this old and not held is settled (a heartbeat's interval): younger ones may
    belong to a message that Celery is still handing over."""
    give_back: Callable[[Celery, str, float], bool] = field(default=give_back)

    def settle(self, running: RunningSteps, worker: str) -> list[Next]:
        """Write what Redis could not take, and send back the steps `worker` (this worker)
        was handed and no longer holds. Returns the steps sent back. Raises LedgerError when
        Redis is away (the next beat tries again)."""
        try:
            held = self.held()
        except RuntimeError:
            return []  # Celery changed its sets while they were read: next beat
        now = self.clock()
        settled: list[Lease] = []
        for lease in self.leases.unrecorded():
            if lease.member in held:
                self.leases.record(lease)
                self.leases.settle(lease)
            elif now - lease.started_at > self.settle_after_s:
                settled.append(lease)
        recorded = [
            lease
            for lease in running.all()
            if lease.worker == worker
            and lease.member not in held
            and now - lease.started_at > self.settle_after_s
        ]
        # One settler per record: the first to remove it (a record another worker wrote
        # for a later delivery of the same message is not this worker's any more). A record
        # also kept in memory (Redis took the write but its answer was lost) is settled once.
        pending = {lease.member for lease in settled}
        settled += [
            lease for lease in recorded if running.claim(lease) and lease.member not in pending
        ]
        sent: list[Next] = []
        forgotten: list[Next] = []
        for n, lease in enumerate(settled):
            try:
                back = bool(lease.delivery_tag) and self.give_back(
                    self.app, lease.delivery_tag, lease.started_at
                )
            except Exception as err:  # the broker away: keep the rest for the next beat
                for waiting in settled[n:]:
                    self.leases.keep(waiting)
                raise LedgerError(
                    f"a dropped step's message could not be sent back: {type(err).__name__}"
                ) from err
            self.leases.settle(lease)
            (sent if back else forgotten).append(lease.step)
        _say("sent %d step(s) back to the queue that this worker was handed and dropped", sent)
        _say("forgot %d step(s) this worker no longer holds", forgotten)
        return sent


def _say(what: str, steps: list[Next]) -> None:
    if steps:
        log.warning(
            f"{what}: %s",
            len(steps),
            ", ".join(f"{s.step} {s.batch_id}/{s.item_id or '-'}" for s in steps[:10]),
        )
