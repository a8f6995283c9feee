"""The sweeper: a thread in each worker's main process that sends steps again.

Two checks, both safe to repeat (every step is safe to run twice):

- every `ORPHAN_CHECK_S`, the steps a dead worker was running (`pipeline.due.RunningSteps`:
  its heartbeat lapsed) are sent again at once; whoever removes an entry sends its step;
- every `worker.sweep_interval_s`, one worker compacts the batches finished more than
  `ledger.retention_days` ago (`pipeline.retention`), and, when the queue and the feed of
  uploads are empty, a step
  expected more than
  `worker.lost_step_after_s` ago that nobody runs and that is not kept for later was lost in
  flight (`pipeline.sweep` finds them): it is sent again. One worker does this at a time (a
  Redis lock as long as the interval).

Started by Celery's `worker_ready` signal, stopped by `worker_shutdown`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from pipeline import keys
from pipeline.due import DueSteps, Lease, RunningSteps, orphaned
from pipeline.errors import DispatchError, LedgerError
from pipeline.heartbeat import LIVE_S, Heartbeats
from pipeline.ledger import Ledger
from pipeline.retention import compact_due
from pipeline.settings import Settings
from pipeline.steps import Next
from pipeline.sweep import send_again, stalled_steps
from workers.background import MainProcessThread
from workers.dropped import give_back
from workers.tasks import CeleryDispatcher, queued_messages

log = logging.getLogger("lipdub.sweeper")

SWEEP_LOCK = f"{keys.PREFIX}:sweeper"
ORPHAN_CHECK_S = 5.0
"""How often a worker looks for steps a dead worker was running (a cheap read of the few
running steps and the live workers)."""


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
        client = redis.Redis.from_url(self.settings.redis.url, decode_responses=True)
        next_sweep = self.clock() + self.settings.worker.sweep_interval_s
        try:
            while not self._stop.wait(ORPHAN_CHECK_S):
                try:
                    self.orphans_once(client)
                    if self.clock() >= next_sweep:
                        next_sweep = self.clock() + self.settings.worker.sweep_interval_s
                        self.sweep_once(client)
                except (LedgerError, DispatchError, OperationalError, redis.RedisError) as err:
                    log.warning("sweep skipped: %s", err)
                except Exception:  # the thread must outlive a bug: it is the safety net
                    log.exception("sweep failed")
        finally:
            client.close()

    def orphans_once(self, client: redis.Redis) -> list[Next]:
        """Send again the steps whose worker died running them; drop entries too old to be
        running still. Returns what this worker sent."""
        now = self.clock()
        running = RunningSteps(client)
        alive = {beat.name for beat in Heartbeats(client).alive(now)}
        mine = [lease for lease in running.all() if lease.queue == self.settings.worker.queue]
        again, stale = orphaned(
            mine,
            alive,
            now=now,
            live_s=LIVE_S,
            limit_s=float(self.settings.worker.task_time_limit_s),
        )
        running.drop(stale)
        dispatcher = self._dispatcher(client)
        claimed = [lease for lease in again if running.claim(lease)]  # one sweeper each
        # The dead worker's own message goes back to its queue where the broker still holds
        # it unacknowledged (no second copy after the visibility timeout); a new one otherwise.
        # Each step is expected again before it can run (as `send_again` does), so that an
        # expectation written late cannot outlive the step's own follow-up.
        ledger = Ledger(client)
        ledger.expect([lease.step for lease in claimed if lease.delivery_tag], now)
        returned = [lease for lease in claimed if self._give_back(lease)]
        send_again(ledger, dispatcher.send_now, [x.step for x in claimed if x not in returned], now)
        sent = [lease.step for lease in claimed]
        if sent:
            log.warning(
                "sent %d step(s) again that a dead worker was running (%d by its own message): %s",
                len(sent),
                len(returned),
                ", ".join(f"{s.step} {s.batch_id}/{s.item_id or '-'}" for s in sent[:10]),
            )
        return sent

    def _give_back(self, lease: Lease) -> bool:
        """True when the lease's own message went back to its queue (`workers.dropped`)."""
        if not lease.delivery_tag:
            return False
        try:
            return give_back(self.app, lease.delivery_tag, lease.started_at)
        except Exception as err:  # the broker away: a new message is sent instead
            log.warning("a dead worker's message could not be sent back: %s", type(err).__name__)
            return False

    def sweep_once(self, client: redis.Redis) -> list[Next]:
        """One sweep for lost messages, if this worker holds the lock and the queue is empty.
        Returns what was sent again."""
        interval_s = self.settings.worker.sweep_interval_s
        if not client.set(SWEEP_LOCK, "1", nx=True, px=int(interval_s * 1000)):
            return []
        ledger = Ledger(client)
        now = self.clock()
        retention_s = self.settings.ledger.retention_days * 86_400
        for done in compact_due(ledger, now=now, older_than_s=retention_s):
            log.info("batch %s: %d completed item(s) compacted", done.batch_id, done.items)
        if self.queued() > 0 or DueSteps(client, self.settings.worker.queue).fed_waiting() > 0:
            return []  # steps still on their way to a worker would look lost
        overdue = stalled_steps(ledger, now=now, grace_s=self.settings.worker.lost_step_after_s)
        busy = {lease.step for lease in RunningSteps(client).all()}
        kept = DueSteps(client, self.settings.worker.queue).waiting(overdue)
        lost = [step for step in overdue if step not in busy and step not in kept]
        if lost:
            send_again(ledger, self._dispatcher(client).send_now, lost, now)
            log.warning(
                "sent %d step(s) again whose message was lost: %s",
                len(lost),
                ", ".join(f"{s.step} {s.batch_id}/{s.item_id or '-'}" for s in lost[:10]),
            )
        return lost

    def queued(self) -> int:
        """Messages waiting in lipdub's queue (every priority)."""
        return queued_messages(self.app, self.settings.worker.queue)

    def _dispatcher(self, client: redis.Redis) -> CeleryDispatcher:
        return CeleryDispatcher(
            self.app, self.settings.worker.queue, due=DueSteps(client, self.settings.worker.queue)
        )
