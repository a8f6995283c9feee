"""A worker's heartbeat: a thread in each worker's main process that says, every
`heartbeat.BEAT_S`, that this worker is alive, where it runs and with which settings
(`pipeline.heartbeat`). Started by Celery's `worker_ready` signal, stopped (and the beat
removed) by `worker_shutdown`; a killed worker's beat lapses after `heartbeat.LIVE_S`."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from celery import Celery

from pipeline import wiring
from pipeline.due import RunningSteps
from pipeline.errors import LedgerError
from pipeline.heartbeat import BEAT_S, Beat, Heartbeats, fingerprint
from pipeline.settings import Settings
from workers.background import MainProcessThread
from workers.dropped import DroppedSteps

log = logging.getLogger("lipdub.pulse")


def lipdub_version() -> str:
    """The installed lipdub's version."""
    try:
        return version("lipdub")
    except PackageNotFoundError:
        return "unknown"


class Pulse(MainProcessThread):
    """Beats until stopped."""

    thread_name = "lipdub-pulse"

    def __init__(
        self,
        app: Celery,
        settings: Settings,
        dropped: DroppedSteps,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(app)
        self.settings = settings
        self.dropped = dropped
        """Each beat also settles this worker's records of the steps it was handed."""
        self.clock = clock
        self._name = ""

    def _started(self, sender: Any) -> None:
        self._name = str(getattr(sender, "hostname", "") or f"{socket.gethostname()}:{os.getpid()}")

    def _stopped(self) -> None:
        """Say this worker is gone (its beat would lapse anyway)."""
        client = wiring.redis_client(self.settings)
        try:
            Heartbeats(client).gone(self._name)
        except LedgerError as err:
            log.warning("%s", err)
        finally:
            client.close()

    def _run(self) -> None:
        client = wiring.redis_client(self.settings)
        beats = Heartbeats(client)
        started = self.clock()
        settings = fingerprint(self.settings)
        try:
            while True:
                beat = Beat(
                    name=self._name,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    version=lipdub_version(),
                    started_at=started,
                    at=self.clock(),
                    settings=settings,
                )
                try:
                    beats.beat(beat)
                    self.dropped.settle(RunningSteps(client), self._name)
                except LedgerError as err:
                    log.warning("%s; trying again in %.0f s", err, BEAT_S)
                except Exception:  # the heartbeat must outlive a bug: the worker would look dead
                    log.exception("settling the steps this worker was handed failed")
                if self._stop.wait(BEAT_S):
                    return
        finally:
            client.close()
