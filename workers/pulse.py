"""A worker's heartbeat: a thread in each worker's main process that says, every
`heartbeat.BEAT_S`, that this worker is alive, where it runs and with which settings
(`pipeline.heartbeat`). Started by Celery's `worker_ready` signal, stopped (and the beat
removed) by `worker_shutdown`; a killed worker's beat lapses after `heartbeat.LIVE_S`."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from celery import Celery

from pipeline import wiring
from pipeline.errors import LedgerError
from pipeline.heartbeat import BEAT_S, Beat, Heartbeats, fingerprint
from pipeline.settings import Settings

log = logging.getLogger("lipdub.pulse")


def lipdub_version() -> str:
    """The installed lipdub's version."""
    try:
        return version("lipdub")
    except PackageNotFoundError:
        return "unknown"


class Pulse:
    """Beats until stopped."""

    def __init__(
        self, app: Celery, settings: Settings, clock: Callable[[], float] = time.time
    ) -> None:
        self.app = app
        self.settings = settings
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._name = ""

    def start(self, sender: Any = None, **_: Any) -> None:
        """Start beating (a `worker_ready` receiver; workers of other apps are ignored)."""
        if getattr(sender, "app", None) is not self.app or self._thread is not None:
            return
        self._name = str(getattr(sender, "hostname", "") or f"{socket.gethostname()}:{os.getpid()}")
        self._thread = threading.Thread(target=self._run, name="lipdub-pulse", daemon=True)
        self._thread.start()

    def stop(self, sender: Any = None, **_: Any) -> None:
        """Stop beating and say so (a `worker_shutdown` receiver)."""
        if getattr(sender, "app", None) is not self.app or self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=5)
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
                except LedgerError as err:
                    log.warning("%s; trying again in %.0f s", err, BEAT_S)
                if self._stop.wait(BEAT_S):
                    return
        finally:
            client.close()
