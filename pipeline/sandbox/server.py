"""The sandbox's HTTP face: WaveSpeed's v3 routes on a stdlib threading HTTP server.

The stdlib server is used on purpose: it lets a fault close the socket without an answer
(the ambiguous submit) or stall mid-request, which higher-level frameworks hide.

    with SandboxServer(SandboxConfig()) as sandbox:
        print(sandbox.url)   # http://127.0.0.1:<free port>
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import mimetypes
import time
import uuid
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from pipeline.provider.models import parse_timestamp
from pipeline.sandbox.config import SandboxConfig
from pipeline.sandbox.engine import DownloadFailed, InputRejected, MediaRejected, SandboxEngine
from pipeline.sandbox.faults import attempt_key
from pipeline.serving import ThreadedServer

log = logging.getLogger("lipdub.sandbox")
MAX_BODY_BYTES = 512 * 1024 * 1024
FILE_CHUNK_BYTES = 1024 * 1024


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # Many clients connect at once (a thread pool, many workers): the default backlog of 5
    # resets connections a real service would accept.
    request_queue_size = 256
    engine: SandboxEngine


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    # ------------------------------------------------------------ helpers

    @property
    def engine(self) -> SandboxEngine:
        return self.server.engine

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    _request_body: bytes | None = None

    def _body(self) -> bytes:
        """The request's body, read once."""
        if self._request_body is not None:
            return self._request_body
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the unread body must not be taken for a request
            raise InputRejected("request body too large")
        self._request_body = self.rfile.read(length) if length else b""
        return self._request_body

    def _json_body(self) -> dict[str, Any]:
        raw = self._body()
        try:
            value = json.loads(raw or b"{}")
        except json.JSONDecodeError as err:
            raise InputRejected("request body is not valid JSON") from err
        if not isinstance(value, dict):
            raise InputRejected("request body must be a JSON object")
        return value

    def _start(
        self, status: int, content_type: str, length: int, headers: dict[str, str] | None
    ) -> None:
        """Status line and headers; the body follows from the caller."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("X-Request-Id", uuid.uuid4().hex)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self._start(status, content_type, len(body), headers)
        if self.command != "HEAD":
            self.wfile.write(body)

    def _ok(self, data: Any) -> None:
        envelope = {"code": 200, "message": "success", "data": data}
        self._send(200, json.dumps(envelope).encode(), "application/json")

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        # An answer before the body was read (401, 404) must still consume it, or the next
        # request on this kept-alive connection would start in the middle of it.
        with contextlib.suppress(InputRejected):
            self._body()
        envelope = {"code": status, "message": message, "data": None}
        self._send(status, json.dumps(envelope).encode(), "application/json", headers)

    def _malformed(self) -> None:
        self._send(200, b"<html><body>502 Bad Gateway</body></html>", "text/html")

    def _drop(self) -> None:
        """Close the connection without a single byte of answer."""
        self.close_connection = True

    def _authorized(self) -> bool:
        if self.engine.key_ok(self.headers.get("Authorization")):
            return True
        self._error(401, "Unauthorized: invalid or missing API key")
        return False

    def _delay(self, key: str) -> None:
        faults = self.engine.faults
        if faults.hits("hang", key):
            time.sleep(faults.config.hang_s)
        elif faults.hits("slow", key):
            time.sleep(faults.config.slow_s)

    # ------------------------------------------------------------ routing

    def do_GET(self) -> None:
        self._route("GET")

    def do_HEAD(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def _route(self, method: str) -> None:
        self._request_body = None  # a new request on this connection
        path = urlsplit(self.path).path
        try:
            if method == "GET" and path.startswith("/files/"):
                return self._serve_file(unquote(path.removeprefix("/files/")))
            if method == "PUT" and path.startswith("/upload/"):
                return self._put_upload(path.removeprefix("/upload/"))
            if method == "GET" and path == "/_sandbox/audit":
                return self._send(
                    200, json.dumps(self.engine.audit_entries()).encode(), "application/json"
                )
            if method == "GET" and path == "/_sandbox/tasks":
                tasks = self.engine.task_states()
                return self._send(200, json.dumps(tasks).encode(), "application/json")
            if method == "GET" and path == "/_sandbox/bill":
                return self._send(200, json.dumps(self.engine.bill()).encode(), "application/json")
            if method == "GET" and path == "/_sandbox/stats":
                stats = self.engine.stats_snapshot()
                return self._send(200, json.dumps(stats).encode(), "application/json")
            if method == "GET" and path == "/_sandbox/health":
                return self._send(200, b'{"ok": true}', "application/json")
            if not path.startswith("/api/v3/"):
                return self._error(404, f"no route {path}")
            if not self._authorized():
                return None
            route = path.removeprefix("/api/v3/")
            if method == "GET" and route.startswith("predictions/") and route.endswith("/result"):
                return self._result(route.split("/")[1])
            if method == "POST" and route == "predictions":
                return self._list()
            if method == "POST" and route == "billings/search":
                return self._billings()
            if method == "GET" and route == "balance":
                return self._ok({"balance": float(self.engine.balance_usd)})
            if method == "POST" and route == "model/pricing":
                return self._pricing()
            if method == "GET" and route == "webhook/secret":
                return self._ok({"secret": self.engine.config.webhook_secret})
            if method == "POST" and route == "media/upload/binary":
                return self._upload_binary()
            if method == "POST" and route == "media/uploads":
                return self._upload_ticket()
            if method == "POST" and route == self.engine.config.model_path:
                return self._submit()
            if method == "POST":
                return self._error(404, f"model {route!r} not found")
            return self._error(404, f"no route {path}")
        except InputRejected as err:
            return self._error(400, str(err))
        except (BrokenPipeError, ConnectionResetError):
            return None

    # ------------------------------------------------------------ API

    def _submit(self) -> None:
        engine = self.engine
        try:
            body = self._json_body()
        except InputRejected as err:
            engine.audit({"outcome": "rejected", "status_code": 400, "message": str(err)})
            raise
        wait_s, start, window_ts = engine.reserve_start()
        if wait_s is not None:
            engine.audit(
                {"outcome": "rate_limited", "status_code": 429, "window_counted_ts": window_ts}
            )
            return self._error(
                429,
                "Too many requests: starts per minute exceeded",
                {"Retry-After": str(max(1, round(wait_s)))}
                if engine.config.rate_limit_retry_after
                else None,
            )
        download_error = media_error = ""
        try:
            video, audio, video_sha, audio_sha, key = engine.fetch_inputs(body)
        except InputRejected as err:
            engine.release_start(start)
            engine.audit({"outcome": "rejected", "status_code": 400, "message": str(err)})
            raise
        except (DownloadFailed, MediaRejected) as err:
            # WaveSpeed creates the task and fails it: 1402 when an input cannot be fetched,
            # 1401 when it is not acceptable (docs/error-codes).
            if isinstance(err, DownloadFailed):
                download_error = f"Failed to download {err} from the provided URL."
            else:
                media_error = str(err)
            video = audio = engine.workdir / "inputs" / "missing"
            video_sha = audio_sha = ""
            video_s = 0.0
            key = _url_key(body)
        else:
            try:
                video_s = engine.validate_media(video, audio)[0].duration_s
            except MediaRejected as err:
                media_error = str(err)
                video_s = err.video_s
        attempt = attempt_key(key, engine.count_submit(key))
        common = {
            "video_sha256": video_sha,
            "audio_sha256": audio_sha,
            "sync_mode": body.get("sync_mode", "cut_off"),
        }
        faults = engine.faults
        self._delay(attempt)
        if faults.hits("rate_limit", attempt):
            engine.release_start(start)
            engine.audit({**common, "outcome": "rate_limited", "status_code": 429})
            return self._error(429, "Too many requests", self._retry_after())
        if faults.hits("submit_error", attempt):
            engine.release_start(start)
            engine.audit({**common, "outcome": "error_not_created", "status_code": 500})
            return self._error(500, "Internal server error")
        # The docs give the webhook as a `?webhook=` query; one page as a `webhook_url` field.
        webhook = parse_qs(urlsplit(self.path).query).get("webhook", [None])[0]
        if webhook is None and isinstance(body.get("webhook_url"), str):
            webhook = body["webhook_url"]
        task = engine.create(
            body,
            video,
            audio,
            attempt,
            video_s,
            webhook,
            download_error=download_error,
            media_error=media_error,
        )
        counted_ts = engine.answered_start(start)
        accepted = {**common, "prediction_id": task.id, "start_counted_ts": counted_ts}
        if faults.hits("submit_drop", attempt):
            engine.audit({**accepted, "outcome": "accepted_dropped", "status_code": None})
            return self._drop()
        if faults.hits("submit_error_after_accept", attempt):
            engine.audit({**accepted, "outcome": "accepted_error", "status_code": 502})
            return self._error(502, "Bad gateway")
        if faults.hits("malformed", attempt):
            engine.audit({**accepted, "outcome": "accepted_malformed", "status_code": 200})
            return self._malformed()
        engine.audit({**accepted, "outcome": "accepted", "status_code": 200})
        return self._ok(engine.snapshot(task))

    def _result(self, prediction_id: str) -> None:
        engine = self.engine
        task = engine.get(prediction_id)
        if task is None:
            return self._error(404, f"prediction {prediction_id} not found")
        key = f"{task.key}@{task.polls}"
        self._delay(key)
        faults = engine.faults
        if faults.hits("rate_limit", key):
            return self._error(429, "Too many requests", self._retry_after())
        if faults.hits("result_error", key):
            status = (500, 502, 503)[int(faults.draw("result_status", key) * 3)]
            return self._error(status, "Upstream error")
        if faults.hits("malformed", key):
            return self._malformed()
        return self._ok(engine.snapshot(task))

    def _retry_after(self) -> dict[str, str] | None:
        """The Retry-After header of a fault's 429, when the fault plan names one."""
        seconds = self.engine.faults.config.retry_after_s
        return None if seconds is None else {"Retry-After": f"{seconds:g}"}

    def _pricing(self) -> None:
        body = self._json_body()
        model_id = str(body.get("model_id") or "").strip("/")
        if model_id != self.engine.config.model_path:
            return self._error(404, f"model {model_id!r} not found")
        inputs = body.get("inputs")
        if not isinstance(inputs, dict):
            raise InputRejected("inputs must be an object")
        price = self.engine.quote_usd(inputs)
        return self._ok({"model_id": model_id, "unit_price": float(price), "currency": "USD"})

    def _list(self) -> None:
        body = self._json_body()
        page = max(1, int(body.get("page") or 1))
        size = min(100, max(1, int(body.get("page_size") or 100)))
        items = self.engine.list(
            created_after=parse_timestamp(body.get("created_after")),
            created_before=parse_timestamp(body.get("created_before")),
            model=body.get("model"),
            status=body.get("status"),
        )
        start = (page - 1) * size
        self._ok(
            {
                "page": page,
                "page_size": size,
                "total": len(items),
                "items": items[start : start + size],
            }
        )

    def _billings(self) -> None:
        body = self._json_body()
        page = max(1, int(body.get("page") or 1))
        size = min(100, max(1, int(body.get("page_size") or 10)))
        wanted = body.get("prediction_uuids")
        records = self.engine.billings(set(map(str, wanted)) if isinstance(wanted, list) else None)
        kind = body.get("billing_type")
        if kind:
            records = [r for r in records if r["billing_type"] == kind]
        start = (page - 1) * size
        self._ok({"page": page, "total": len(records), "items": records[start : start + size]})

    def _upload_binary(self) -> None:
        content_type = self.headers.get("Content-Type", "")
        if "multipart/form-data" not in content_type:
            raise InputRejected("expected multipart/form-data with a 'file' field")
        message = BytesParser(policy=HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + self._body()
        )
        for part in message.iter_parts():
            if part.get_param("name", header="content-disposition") == "file":
                name = Path(part.get_filename() or "upload.bin").name
                payload = part.get_payload(decode=True)
                assert isinstance(payload, bytes)
                url = self._store_upload(name, payload)
                return self._ok(
                    {"type": "file", "download_url": url, "filename": name, "size": len(payload)}
                )
        raise InputRejected("multipart body has no 'file' field")

    def _upload_ticket(self) -> None:
        body = self._json_body()
        name = Path(str(body.get("filename") or "upload.bin")).name
        token = uuid.uuid4().hex
        folder = self.engine.workdir / "uploads" / token
        folder.mkdir(parents=True)
        (folder / ".name").write_text(name, encoding="utf-8")
        base = self.engine.base_url()
        self._ok(
            {
                "upload": {"method": "PUT", "url": f"{base}/upload/{token}", "headers": {}},
                "download_url": f"{base}/files/uploads/{token}/{name}",
            }
        )

    def _put_upload(self, token: str) -> None:
        folder = self.engine.workdir / "uploads" / Path(token).name
        marker = folder / ".name"
        if not marker.is_file():
            return self._error(404, "unknown upload ticket")
        (folder / marker.read_text(encoding="utf-8")).write_bytes(self._body())
        return self._send(200, b"", "text/plain")

    def _store_upload(self, name: str, payload: bytes) -> str:
        token = uuid.uuid4().hex
        folder = self.engine.workdir / "uploads" / token
        folder.mkdir(parents=True)
        (folder / name).write_bytes(payload)
        return f"{self.engine.base_url()}/files/uploads/{token}/{name}"

    def _serve_file(self, relative: str) -> None:
        root = self.engine.workdir.resolve()
        target = (root / relative).resolve()
        if not target.is_relative_to(root) or not target.is_file() or target.name.startswith("."):
            return self._error(404, "no such file")
        if relative.startswith("outputs/"):
            # Output URLs are temporary, as WaveSpeed's are: copy them before they expire.
            expires = parse_qs(urlsplit(self.path).query).get("expires", ["0"])[0]
            if not expires.isdigit() or int(expires) < time.time():
                return self._error(403, "this output URL has expired")
        size = target.stat().st_size
        start, end = 0, size - 1
        status = 200
        headers = {"Accept-Ranges": "bytes"}
        spec = self.headers.get("Range", "")
        if spec.startswith("bytes="):
            first, _, last = spec.removeprefix("bytes=").split(",")[0].partition("-")
            if first:
                start, end = int(first), int(last) if last else size - 1
            elif last:
                start = max(0, size - int(last))
            end = min(end, size - 1)
            if start > end:
                return self._error(416, "range not satisfiable")
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        self._start(status, kind, end - start + 1, headers)
        if self.command == "HEAD":
            return None
        with target.open("rb") as handle:
            handle.seek(start)
            remaining = end - start + 1
            while remaining > 0:
                chunk = handle.read(min(FILE_CHUNK_BYTES, remaining))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)
        return None


def _url_key(body: dict[str, Any]) -> str:
    """A fault key for a submit whose inputs could not be fetched: its URLs (without a
    presigned query, which changes per submit) and mode."""
    parts = [str(body.get(name, "")).split("?", 1)[0] for name in ("video", "audio")]
    text = "|".join([*parts, str(body.get("sync_mode", "cut_off"))])
    return "url:" + hashlib.sha256(text.encode()).hexdigest()[:32]


class SandboxServer(ThreadedServer):
    """A running sandbox on (host, port); port 0 picks a free one. Start/stop or `with`."""

    def __init__(
        self, config: SandboxConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config or SandboxConfig()
        server = _Server((host, port), _Handler)
        super().__init__(server, "sandbox-http")
        address = server.server_address
        self.host, self.port = str(address[0]), int(address[1])
        self.engine = SandboxEngine(self.config, lambda: self.url)
        server.engine = self.engine

    @property
    def url(self) -> str:
        """Base URL clients use, e.g. http://127.0.0.1:8199."""
        return self.config.public_url or f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        """Stop serving and processing, and release the port."""
        super().stop()
        self.engine.stop()
