"""A local HTTP listener that records what is POSTed to it: the receiver of notices, reached
through apprise as a generic JSON webhook (`json_url`) or as a Mattermost server
(`mattermost_url`)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Listener:
    """Records JSON bodies POSTed to any path; answers `status` (200 unless told otherwise)."""

    def __init__(self, status: int = 200) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.status = status
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if listener.status < 300:
                    listener.bodies.append(body)
                    listener.paths.append(self.path)
                self.send_response(listener.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        port = self.server.server_address[1]
        self.json_url = f"json://127.0.0.1:{port}/hooks/T000/B000/secret-token"
        self.mattermost_url = f"mmost://127.0.0.1:{port}/secret-token"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Listener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def texts(self) -> list[str]:
        """What each notice said (a JSON webhook's `message`, Mattermost's `text`)."""
        return [str(b.get("message", b.get("text", ""))) for b in self.bodies]
