"""The pump: a thread in each worker's main process that sends the steps kept in Redis for
later (`pipeline.due`) as soon as they are due, and feeds a batch's uploads to the broker as
it has room (at most `worker.queue_window` waiting). Every live worker pumps; a Lua script
hands each due step to one of them. A pump that dies between taking and sending leaves its
due steps to the next pump after `due.SENDING_LEASE_S`.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from pipeline import wiring
from pipeline.due import DueSteps
from pipeline.errors import DispatchError, LedgerError
from pipeline.settings import Settings
from workers.background import MainProcessThread
from workers.tasks import CeleryDispatcher, hand_over_fed

log = logging.getLogger("lipdub.pump")

PUMP_INTERVAL_S = 0.2
"""How often a worker looks for new due steps and for room in the broker. A step already
waiting when it looks is sent at its time (the pump wakes for it); one scheduled since, for
sooner than the next look, is sent up to this late."""
SOONEST_LOOK_S = 0.002
"""The shortest wait between looks (a step due as the pump finished looking)."""
TROUBLE_WAIT_S = 2.0
"""How long the pump waits after Redis or the broker failed, before it looks again."""


class Pump(MainProcessThread):
    """Sends due steps until stopped."""

    thread_name = "lipdub-pump"

    def __init__(self, app: Celery, settings: Settings) -> None:
        super().__init__(app)
        self.settings = settings
        self._broker: Any = None
        """The connection the feed counts the broker's queue on, kept between looks (a new
        one each look, five a second while a batch's uploads wait, cost more than the look)
        and made again after broker trouble."""

    def _run(self) -> None:
        client = wiring.redis_client(self.settings)
        due = DueSteps(client, self.settings.worker.queue)
        dispatcher = CeleryDispatcher(self.app, self.settings.worker.queue, due=due)
        wait_s = PUMP_INTERVAL_S
        try:
            while not self._stop.wait(wait_s):
                try:
                    self.pump_once(due, dispatcher)
                    wait_s = next_look_s(due.next_due_in_s())
                except (LedgerError, DispatchError, OperationalError, redis.RedisError) as err:
                    log.warning("due steps not sent yet: %s", err)
                    self._drop_broker()
                    wait_s = TROUBLE_WAIT_S
                except Exception:  # the thread must outlive a bug: every countdown needs it
                    log.exception("pump failed")
                    self._drop_broker()
                    wait_s = TROUBLE_WAIT_S
        finally:
            self._drop_broker()
            client.close()

    def pump_once(self, due: DueSteps, dispatcher: CeleryDispatcher) -> int:
        """Send what is due now, and feed uploads while the broker has room; how many were
        sent."""
        sent = self._feed(due, dispatcher)
        while True:
            taken = due.take()
            if not taken:
                return sent
            for member, step in taken:
                dispatcher.send_now(step)
                due.sent([member])
                sent += 1

    def _drop_broker(self) -> None:
        """Close the kept broker connection (after trouble: the next look makes a new one)."""
        if self._broker is not None:
            with contextlib.suppress(Exception):  # a broken connection may fail to close
                self._broker.release()
            self._broker = None

    def _feed(self, due: DueSteps, dispatcher: CeleryDispatcher) -> int:
        """Move uploads from the feed to the broker up to `worker.queue_window` waiting
        messages (`workers.tasks.hand_over_fed`)."""
        if not due.fed_waiting():
            return 0
        if self._broker is None:
            self._broker = self.app.connection_for_write()
        return hand_over_fed(
            dispatcher, self._broker, self.settings.worker.queue_window, stopping=self._stop.is_set
        )


def next_look_s(next_due_in_s: float | None) -> float:
    """How long the pump waits before it looks again: its interval, or less when a waiting
    step falls due sooner (a countdown is then kept to the millisecond, not overrun by up to
    the interval: under even start pacing each start's lateness would carry to the next).

    >>> next_look_s(None), next_look_s(30.0), next_look_s(0.05), next_look_s(-1.0)
    (0.2, 0.2, 0.05, 0.002)
    """
    if next_due_in_s is None:
        return PUMP_INTERVAL_S
    return min(PUMP_INTERVAL_S, max(SOONEST_LOOK_S, next_due_in_s))
