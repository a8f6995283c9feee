"""One lifecycle for everything lipdub starts and stops: the local Redis and S3 servers, the
sandbox, the webhook receiver, the metrics exporter, the demo's stack. `start()` returns the
service, `stop()` releases everything it took, and `with service:` does both (also after an
error).

What faces a network beyond this machine (the webhook receiver, the metrics endpoint) is an
ASGI app served by uvicorn (`AsgiServer`): one event loop, so idle or slow clients cost a
socket, not a thread; a connection limit past which requests get 503; a connection that has
not delivered a whole request within a deadline closed (`deadline_protocol`). The standard library's `ThreadingHTTPServer` (a thread per
connection, no timeouts) serves only test and demo parts (the sandbox).
"""

from __future__ import annotations

import asyncio
import socket
import socketserver
import threading
from types import TracebackType
from typing import Any, Self

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol


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


def deadline_protocol(request_deadline_s: float) -> type[H11Protocol]:
    """uvicorn's HTTP/1.1 protocol, plus a deadline: a connection that has not delivered a
    whole request within `request_deadline_s` of opening (or of its last response) is
    closed. uvicorn's own keep-alive timeout starts only after a first response and restarts
    with every byte, so a client that connects and sends nothing, or trickles a request,
    would otherwise hold its connection (and a place under the connection limit) forever.
    A request whose body has arrived is never cut off while the app answers it."""

    class DeadlineProtocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(request_deadline_s, self._expire)

        def _expire(self) -> None:
            cycle = self.cycle
            if cycle is not None and not cycle.more_body and not cycle.response_complete:
                self._arm()  # the app is answering a whole request: let it finish
                return
            if not self.transport.is_closing():
                self.transport.close()

    return DeadlineProtocol


class _SignallingServer(uvicorn.Server):
    """uvicorn's server, saying when it listens (`ready`), so `start()` waits on an event."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()


class AsgiServer(Service):
    """An ASGI app on uvicorn, bound at construction (OSError then if the port is taken;
    port 0 picks a free one), served in a background thread by `start()` or in the
    caller's thread by `serve_forever()` (uvicorn then stops gracefully on SIGINT/SIGTERM)."""

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_connections: int = 1000,
        idle_timeout_s: float = 5.0,
        request_deadline_s: float = 10.0,
    ) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
        except OSError:
            self._socket.close()
            raise
        config = uvicorn.Config(
            app,
            interface="asgi3",
            http=deadline_protocol(request_deadline_s),
            lifespan="off",
            log_config=None,  # lipdub's logging stays as configured
            access_log=False,
            limit_concurrency=max_connections,
            timeout_keep_alive=max(1, round(idle_timeout_s)),
            h11_max_incomplete_event_size=16 * 1024,  # request line and headers
        )
        self._server = _SignallingServer(config)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._socket.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> Self:
        self._thread = threading.Thread(target=self.serve_forever, name="asgi", daemon=True)
        self._thread.start()
        # Set once uvicorn listens, or once its thread has ended without listening.
        if not self._server.ready.wait(timeout=10) or not self._server.started:
            raise RuntimeError("the HTTP server did not start")
        return self

    def serve_forever(self) -> None:
        """Serve until `stop()` (or, in the main thread, SIGINT/SIGTERM)."""
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self._server.ready.set()  # a server that failed to start wakes `start()` too

    def stop(self) -> None:
        """Stop serving (requests in progress finish) and release the port."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._socket.close()
