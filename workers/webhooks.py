"""The webhook receiver: an HTTP endpoint the provider POSTs finished predictions to.

    lipdub webhooks --port 8280     # set LIPDUB_PROVIDER__WEBHOOK_URL=https://<public>/webhooks

Each delivery is judged by `pipeline.webhook_inbox.WebhookInbox`; one it takes sends the
item's poll task at once. It runs beside the workers (any number of receivers may run: the
replay check is in Redis). Put it behind your TLS proxy; it speaks plain HTTP. It runs on
uvicorn: open connections cost no thread, at most `MAX_CONNECTIONS` are served at once (then
503), idle ones are closed after `IDLE_TIMEOUT_S`, and bodies over 1 MiB are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from pipeline.errors import LipdubError
from pipeline.serving import AsgiServer
from pipeline.webhook_inbox import Verdict, WebhookInbox
from workers.tasks import CeleryDispatcher

log = logging.getLogger("lipdub.webhooks")

PATH = "/webhooks"
MAX_BODY_BYTES = 1024 * 1024
"""A prediction is a few kB; anything far larger is not one."""
MAX_CONNECTIONS = 1000
"""Past this many open connections and requests, new requests are answered 503."""
IDLE_TIMEOUT_S = 5.0
"""A connection with no request for this long is closed."""

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class WebhookServer(AsgiServer):
    """Serves `POST /webhooks` on host:port (port 0 picks a free one) until `stop()`: an
    ASGI app on uvicorn (`pipeline.serving.AsgiServer`). The inbox's Redis calls and the
    dispatch run in the event loop's thread pool, so a slow Redis never stalls the loop."""

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
        super().__init__(
            self.app, host, port, max_connections=MAX_CONNECTIONS, idle_timeout_s=IDLE_TIMEOUT_S
        )

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}{PATH}"

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI app: one delivery per request."""
        if scope["type"] != "http":
            return
        verdict = await self._answer(scope, receive)
        if verdict is None:
            return  # the client went away
        self.verdicts.append(verdict)
        log.info("webhook %s: %s", verdict.status, verdict.message)
        payload = verdict.message.encode()
        await send(
            {
                "type": "http.response.start",
                "status": verdict.status,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _answer(self, scope: Scope, receive: Receive) -> Verdict | None:
        if scope["path"] != PATH:
            return Verdict(404, f"no route {scope['path']}; deliveries go to {PATH}")
        if scope["method"] != "POST":
            return Verdict(405, f"deliveries are POSTed to {PATH}")
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return Verdict(413, "refused: the body is too large to be a prediction")
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if len(body) > MAX_BODY_BYTES:
                return Verdict(413, "refused: the body is too large to be a prediction")
            if not message.get("more_body", False):
                break
        return await asyncio.to_thread(self._judge, headers, bytes(body))

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
