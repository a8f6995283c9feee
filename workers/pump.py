"""The pump: a thread in each worker's main process that sends the steps kept in Redis for
later (`pipeline.due`) as soon as they are due, and feeds a batch's uploads to the broker as
it has room (at most `worker.queue_window` waiting). Every live worker pumps; a Lua script
hands each due step to one of them. A pump that dies between taking and sending leaves its
due steps to the next pump after `due.SENDING_LEASE_S`.

Between looks a pump waits on the queue's nudge (`DueSteps.wait_for_nudge`), not on a
timer alone: a batch's first uploads and a countdown shorter than the look go at once.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from pipeline import wiring
from pipeline.due import LOOK_EVERY_S, DueSteps
from pipeline.errors import DispatchError, LedgerError
from pipeline.settings import Settings
from workers.background import MainProcessThread
from workers.tasks import CeleryDispatcher, queued_messages

log = logging.getLogger("lipdub.pump")

SOONEST_LOOK_S = 0.002
"""The shortest wait between looks (a step due as the pump finished looking)."""
STOP_SEEN_S = 1.0
"""The longest a pump waits for a nudge in one call, so that it sees a stop."""
TROUBLE_WAIT_S = 2.0
"""How long the pump waits after Redis or the broker failed, before it looks again."""


class Pump(MainProcessThread):
    """Sends due steps until stopped."""

    thread_name = "lipdub-pump"

    def __init__(
        self, app: Celery, settings: Settings, *, look_every_s: float = LOOK_EVERY_S
    ) -> None:
        """`look_every_s`: how often it looks when nothing nudges it (`due.LOOK_EVERY_S`)."""
        super().__init__(app)
        self.settings = settings
        self.look_every_s = look_every_s
        self._broker: Any = None
        """The connection the feed counts the broker's queue on, kept between looks (a new
        one each look, five a second while a batch's uploads wait, cost more than the look)
        and made again after broker trouble."""

    def _run(self) -> None:
        client = wiring.redis_client(self.settings)
        due = DueSteps(client, self.settings.worker.queue)
        dispatcher = CeleryDispatcher(self.app, self.settings.worker.queue, due=due)
        wait_s = self.look_every_s
        try:
            while not self._stop.is_set():
                try:
                    self._wait(due, wait_s)
                    if self._stop.is_set():
                        break
                    self.pump_once(due, dispatcher)
                    wait_s = next_look_s(due.next_due_in_s(), self.look_every_s)
                    continue
                except (LedgerError, DispatchError, OperationalError, redis.RedisError) as err:
                    log.warning("due steps not sent yet: %s", err)
                except Exception:  # the thread must outlive a bug: every countdown needs it
                    log.exception("pump failed")
                self._drop_broker()
                if self._stop.wait(TROUBLE_WAIT_S):
                    break
                wait_s = SOONEST_LOOK_S
        finally:
            self._drop_broker()
            client.close()

    def _wait(self, due: DueSteps, wait_s: float) -> None:
        """Wait `wait_s` or until nudged; a stop is seen within `STOP_SEEN_S` however long
        the look (one blocking call per look at the shipped interval)."""
        end = time.monotonic() + wait_s
        while not self._stop.is_set():
            left_s = end - time.monotonic()
            if left_s <= 0 or due.wait_for_nudge(min(left_s, STOP_SEEN_S)):
                return

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
        messages, one at a time: each is leased to this pump until the broker has it, so a
        pump that dies between taking one and sending it leaves it to the next pump."""
        if not due.fed_waiting():
            return 0
        if self._broker is None:
            self._broker = self.app.connection_for_write()
        room = self.settings.worker.queue_window - queued_messages(
            self.app, self.settings.worker.queue, self._broker
        )
        sent = 0
        while sent < room and not self._stop.is_set():
            taken = due.take_fed(1)
            if not taken:
                break
            [(member, step)] = taken
            dispatcher.send_now(step)
            due.sent([member])
            sent += 1
        return sent


def next_look_s(next_due_in_s: float | None, look_every_s: float = LOOK_EVERY_S) -> float:
    """How long the pump waits (for a nudge) before it looks again: its interval, or less
    when a waiting step falls due sooner (a countdown is then kept to the millisecond, not
    overrun by up to the interval: under even start pacing each start's lateness would carry
    to the next).

    >>> next_look_s(None), next_look_s(30.0), next_look_s(0.05), next_look_s(-1.0)
    (0.2, 0.2, 0.05, 0.002)
    """
    if next_due_in_s is None:
        return look_every_s
    return min(look_every_s, max(SOONEST_LOOK_S, next_due_in_s))
