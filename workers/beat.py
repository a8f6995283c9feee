"""`lipdub beat`: Celery beat with one periodic task, the schedules' tick, behind a lock.

    lipdub beat          # one per deployment; a second one started by mistake stands by

Beat sends `lipdub.schedule_tick` every `schedule.tick_s` (it expires if no worker takes it
within a tick, so ticks never pile up behind a stopped worker). The tick, on a worker, reads
`configs/schedule.yaml` and does what is due (`pipeline.schedules.runner`). Beat keeps no
state of its own (no celerybeat-schedule file): fire times handled, pickups and the lock all
live in Redis, so a restarted or replaced beat carries on where the last one stopped.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery.beat import Scheduler

from pipeline.errors import LedgerError
from pipeline.schedules.lock import SchedulerLock
from pipeline.settings import Settings

log = logging.getLogger("lipdub.beat")

TICK_TASK = "lipdub.schedule_tick"


def beat_config(settings: Settings) -> dict[str, Any]:
    """The Celery settings beat runs with."""
    tick_s = settings.schedule.tick_s
    return {
        "beat_schedule": {
            "lipdub-schedules": {
                "task": TICK_TASK,
                "schedule": tick_s,
                "options": {"expires": tick_s, "priority": 0, "queue": settings.worker.queue},
            }
        },
        "beat_scheduler": "workers.beat:LockedScheduler",
        "beat_max_loop_interval": tick_s,
        "lipdub_redis_url": settings.redis.url,
        "lipdub_beat_lock_s": settings.schedule.lock_timeout_s,
    }


class LockedScheduler(Scheduler):  # type: ignore[misc]
    """Beat's in-memory scheduler, acting only while it holds the scheduler lock."""

    def setup_schedule(self) -> None:
        super().setup_schedule()
        conf = self.app.conf
        self._redis = redis.Redis.from_url(conf.lipdub_redis_url, socket_timeout=10)
        self._lock = SchedulerLock(self._redis, conf.lipdub_beat_lock_s)
        self._active: bool | None = None

    def tick(self, *args: Any, **kwargs: Any) -> float:
        try:
            holding = self._lock.hold()
        except LedgerError as err:
            log.warning("cannot reach Redis for the scheduler lock (%s); standing by", err)
            holding = False
        if holding != self._active:
            log.info(
                "this beat is now the active scheduler"
                if holding
                else "another beat holds the scheduler lock; standing by"
            )
            self._active = holding
        if not holding:
            return float(self.max_interval)
        return float(super().tick(*args, **kwargs))

    def close(self) -> None:
        if getattr(self, "_active", False):
            self._lock.release()
        super().close()
