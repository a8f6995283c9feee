"""The sweeper: a thread in each worker's main process that sends again the steps whose
message was lost (`pipeline.sweep` says how they are found).

One worker sweeps at a time (a Redis lock as long as the interval); a sweep happens only when
the queue is empty. Started by Celery's `worker_ready` signal, stopped by `worker_shutdown`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from pipeline import keys
from pipeline.errors import DispatchError, LedgerError
from pipeline.ledger import Ledger
from pipeline.settings import Settings
from pipeline.steps import Next
from pipeline.sweep import stalled_steps
from workers.background import MainProcessThread
from workers.tasks import CeleryDispatcher, queued_messages

log = logging.getLogger("lipdub.sweeper")

SWEEP_LOCK = f"{keys.PREFIX}:sweeper"


class Sweeper(MainProcessThread):
    """Sweeps every `worker.sweep_interval_s` until stopped."""

    thread_name = "lipdub-sweeper"

    def __init__(
        self, app: Celery, settings: Settings, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(app)
        self.settings = settings
        self.clock = clock

    def _run(self) -> None:
        interval_s = self.settings.worker.sweep_interval_s
        client = redis.Redis.from_url(self.settings.redis.url, decode_responses=True)
        try:
            while not self._stop.wait(interval_s):
                try:
                    self.sweep_once(client)
                except (LedgerError, DispatchError, OperationalError, redis.RedisError) as err:
                    log.warning("sweep skipped: %s", err)
                except Exception:  # the thread must outlive a bug: it is the safety net
                    log.exception("sweep failed")
        finally:
            client.close()

    def sweep_once(self, client: redis.Redis) -> list[Next]:
        """One sweep, if this worker holds the lock and the queue is empty. Returns what was
        sent again."""
        interval_s = self.settings.worker.sweep_interval_s
        if not client.set(SWEEP_LOCK, "1", nx=True, px=int(interval_s * 1000)):
            return []
        if self.queued() > 0:
            return []
        ledger = Ledger(client)
        now = self.clock()
        lost = stalled_steps(ledger, now=now, grace_s=float(self.settings.worker.task_time_limit_s))
        if lost:
            ledger.expect(lost, now)
            dispatcher = CeleryDispatcher(self.app, self.settings.worker.queue)
            for step in lost:
                dispatcher.send(step)
            log.warning(
                "sent %d step(s) again whose message was lost: %s",
                len(lost),
                ", ".join(f"{s.step} {s.batch_id}/{s.item_id or '-'}" for s in lost[:10]),
            )
        return lost

    def queued(self) -> int:
        """Messages waiting in lipdub's queue (every priority)."""
        return queued_messages(self.app, self.settings.worker.queue)
