"""A thread in a worker's main process: started by Celery's `worker_ready` signal (only a
worker's main process gets it, so one per worker), stopped by `worker_shutdown`. The sweeper
and the heartbeat are such threads."""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery


class MainProcessThread:
    """Subclasses give `_run` (loop until `self._stop` is set) and may use the hooks."""

    thread_name = "lipdub-background"

    def __init__(self, app: Celery) -> None:
        self.app = app
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, sender: Any = None, **_: Any) -> None:
        """A `worker_ready` receiver (workers of other apps are ignored)."""
        if getattr(sender, "app", None) is not self.app or self._thread is not None:
            return
        self._started(sender)
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, sender: Any = None, **_: Any) -> None:
        """A `worker_shutdown` receiver."""
        if getattr(sender, "app", None) is not self.app or self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=5)
        self._stopped()

    def _started(self, sender: Any) -> None:
        """Called before the thread starts, with the worker that is ready."""

    def _stopped(self) -> None:
        """Called once the thread has ended."""

    def _run(self) -> None:
        raise NotImplementedError
