"""A faulty S3 endpoint: an HTTP proxy in front of moto's server that can go down and come
back on the same port, and answer chosen requests with S3 errors.

Lipdub's clients are pointed at the proxy, so the faults arrive through the real S3 protocol
(botocore's own retries included), not through a patched client.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from pipeline.local_servers import free_port

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "host",
    "proxy-connection",
    "upgrade",
}

ERROR_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
    "<Message>injected by the test proxy</Message></Error>"
)


@dataclass
class FaultRule:
    """Answer requests whose method matches and whose path matches `path` (a regex) with
    `status`/`code`, `times` times (None: always)."""

    method: str
    path: str
    status: int = 503
    code: str = "SlowDown"
    times: int | None = None
    hits: int = 0

    def take(self, method: str, path: str) -> bool:
        if self.method not in (method, "*") or not re.search(self.path, path):
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        self.hits += 1
        return True


class FaultyS3Proxy:
    """`with FaultyS3Proxy(upstream) as proxy:` point clients at `proxy.url`."""

    def __init__(self, upstream_url: str, port: int | None = None) -> None:
        self.upstream_url = upstream_url
        self.port = port or free_port()
        self.rules: list[FaultRule] = []
        self.refused_while_down = 0
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._http = httpx.Client(base_url=upstream_url, timeout=30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail(self, method: str, path: str, **kwargs: Any) -> FaultRule:
        """Add a fault rule; returns it (its `hits` counts the requests it answered)."""
        rule = FaultRule(method, path, **kwargs)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def injected(self) -> int:
        """Requests answered with an injected error so far."""
        with self._lock:
            return sum(rule.hits for rule in self.rules)

    def _fault_for(self, method: str, path: str) -> FaultRule | None:
        with self._lock:
            return next((rule for rule in self.rules if rule.take(method, path)), None)

    # ------------------------------------------------------------ up and down

    def start(self) -> FaultyS3Proxy:
        """Listen (again) on the same port."""
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:  # presigned URLs carry signatures
                pass

            def setup(self) -> None:
                super().setup()
                with proxy._lock:
                    proxy._connections.add(self.connection)

            def finish(self) -> None:
                with proxy._lock:
                    proxy._connections.discard(self.connection)
                super().finish()

            def _handle(self) -> None:
                proxy._forward(self)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: new connections are refused, as when S3 is unreachable."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        # Kept-alive connections go too: an outage cuts them.
        with self._lock:
            connections = list(self._connections)
            self._connections.clear()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.stop()
        self._http.close()

    def __enter__(self) -> FaultyS3Proxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------ forwarding

    def _forward(self, handler: BaseHTTPRequestHandler) -> None:
        method = handler.command
        body = _read_body(handler)
        path = handler.path.split("?", 1)[0]
        rule = self._fault_for(method, path)
        if rule is not None:
            payload = ERROR_BODY.format(code=rule.code).encode()
            handler.send_response(rule.status)
            handler.send_header("Content-Type", "application/xml")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            if method != "HEAD":
                handler.wfile.write(payload)
            return
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in HOP_BY_HOP}
        upstream = self._http.request(method, handler.path, headers=headers, content=body)
        handler.send_response(upstream.status_code)
        for name, value in upstream.headers.multi_items():
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-encoding":
                handler.send_header(name, value)
        content = upstream.content
        # A HEAD answer tells the object's size, not that of its (empty) body.
        size = upstream.headers.get("Content-Length", "0") if method == "HEAD" else len(content)
        handler.send_header("Content-Length", str(size))
        handler.end_headers()
        if method != "HEAD":
            handler.wfile.write(content)


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The request body, whether sized or chunked."""
    length = handler.headers.get("Content-Length")
    if length is not None:
        return handler.rfile.read(int(length))
    if "chunked" not in handler.headers.get("Transfer-Encoding", "").lower():
        return b""
    chunks = []
    while True:
        size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            handler.rfile.readline()
            return b"".join(chunks)
        chunks.append(handler.rfile.read(size))
        handler.rfile.readline()
