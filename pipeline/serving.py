"""One lifecycle for everything lipdub starts and stops: the local Redis and S3 servers, the
sandbox, the webhook receiver, the demo's stack. `start()` returns the service, `stop()`
releases everything it took, and `with service:` does both (also after an error)."""

from __future__ import annotations

import socketserver
import threading
from types import TracebackType
from typing import Self


class Service:
    """Start it, stop it, or use it as a context manager."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class ThreadedServer(Service):
    """A `socketserver` server (e.g. an `http.server`) served in a background thread by
    `start()`, or in the caller's thread by `serve_forever()`, until `stop()`."""

    def __init__(self, server: socketserver.BaseServer, name: str) -> None:
        self._server = server
        self._name = name
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=self._name, daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until `stop()` (from a signal handler or another thread)."""
        self._server.serve_forever()

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
