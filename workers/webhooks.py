"""The webhook receiver: an HTTP endpoint the provider POSTs finished predictions to.

    lipdub webhooks --port 8280     # set LIPDUB_PROVIDER__WEBHOOK_URL=https://<public>/webhooks

Each delivery is judged by `pipeline.webhook_inbox.WebhookInbox`; one it takes sends the
item's poll task at once. It runs beside the workers (any number of receivers may run: the
replay check is in Redis). Put it behind your TLS proxy; it speaks plain HTTP.
"""

from __future__ import annotations

import contextlib
import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pipeline.errors import LipdubError
from pipeline.serving import ThreadedServer
from pipeline.webhook_inbox import Verdict, WebhookInbox
from workers.tasks import CeleryDispatcher

log = logging.getLogger("lipdub.webhooks")

PATH = "/webhooks"
MAX_BODY_BYTES = 1024 * 1024
"""A prediction is a few kB; anything far larger is not one."""


class WebhookServer(ThreadedServer):
    """Serves `POST /webhooks` on host:port (port 0 picks a free one) until `stop()`."""

    def __init__(
        self,
        inbox: WebhookInbox,
        dispatcher: CeleryDispatcher,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.inbox = inbox
        self.dispatcher = dispatcher
        self.verdicts: list[Verdict] = []
        """Every answer given, newest last (for the operator's log and for tests)."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                pass  # each verdict is logged once, below

            def do_POST(self) -> None:
                receiver._handle(self)

        self._http = ThreadingHTTPServer((host, port), Handler)
        self._http.daemon_threads = True
        super().__init__(self._http, "webhooks-http")

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else host
        return f"http://{name}:{port}{PATH}"

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        if handler.path.split("?", 1)[0] != PATH:
            handler.close_connection = True  # its body, if any, is left unread
            verdict = Verdict(404, f"no route {handler.path}; deliveries go to {PATH}")
        else:
            try:
                body = read_body(handler, MAX_BODY_BYTES)
            except ValueError as error:
                handler.close_connection = True
                body = None
                verdict = Verdict(413 if "large" in str(error) else 400, f"refused: {error}")
            if body is not None:
                verdict = self._judge(dict(handler.headers.items()), body)
        self.verdicts.append(verdict)
        log.info("webhook %s: %s", verdict.status, verdict.message)
        payload = verdict.message.encode()
        handler.send_response(verdict.status)
        handler.send_header("Content-Type", "text/plain; charset=utf-8")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def _judge(self, headers: dict[str, str], body: bytes) -> Verdict:
        try:
            verdict = self.inbox.receive(headers, body)
        except LipdubError as err:
            # Redis away: the provider retries, and polling covers it anyway.
            return Verdict(503, f"not taken now: {err}")
        if verdict.wake is None:
            return verdict
        try:
            self.dispatcher.send(verdict.wake)
        except LipdubError as err:
            # The broker away: forget the delivery so that the provider's retry is taken.
            with contextlib.suppress(LipdubError):
                self.inbox.forget(headers)
            return Verdict(503, f"not taken now: {err}")
        return verdict


def read_body(handler: BaseHTTPRequestHandler, limit_bytes: int) -> bytes:
    """The request's body, by Content-Length or chunked transfer coding, at most
    `limit_bytes`. Raises ValueError (saying "large" when over the limit) for a body that
    cannot be read."""
    coding = handler.headers.get("Transfer-Encoding", "").lower()
    if "chunked" not in coding:
        length = int(handler.headers.get("Content-Length") or 0)
        if length > limit_bytes:
            raise ValueError("the body is too large to be a prediction")
        return handler.rfile.read(length) if length else b""
    body = bytearray()
    while True:
        size_line = handler.rfile.readline(1024)
        try:
            size = int(size_line.split(b";", 1)[0].strip() or b"x", 16)
        except ValueError as err:
            raise ValueError("a chunk's size line is not hexadecimal") from err
        if size == 0:
            while handler.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                pass  # trailer fields, unused
            return bytes(body)
        if len(body) + size > limit_bytes:
            raise ValueError("the body is too large to be a prediction")
        body += handler.rfile.read(size)
        handler.rfile.readline(1024)  # the CRLF after the chunk
