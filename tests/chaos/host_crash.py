"""A crash of the Redis *host*: the process dies and the AOF loses what was not fsynced.

A SIGKILL of redis-server alone loses nothing (its writes are in the OS's page cache). A
power cut, a kernel panic or a VM that vanishes also loses the page cache: the AOF ends at
the last fsync. This emulates exactly that, and no more: a crash must never take away a
write the server had confirmed durable (WAITAOF), or the emulation would be harsher than any
real host.

How the last fsync is found from outside. `FsyncWatch` writes a numbered tick key every
`TICK_S`, each on the next of `RING` connections of its own. `WAITAOF 1 0 0` inside a MULTI
does not block; it says whether every earlier write of *that connection* is fsynced. At the
crash the watch stops ticking, asks each connection, SIGKILLs the server, and cuts the AOF at
the start of the oldest tick not yet fsynced: the true last fsync lies at or before that
point (an fsync covers a prefix of the file) and after the newest fsynced tick, so the cut
loses everything unfsynced but at most one tick interval of it. The ring spans about a
second, the most `appendfsync everysec` leaves unfsynced.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from pipeline.localstack import RedisServer

TICK_S = 0.01
RING = 100


@dataclass(frozen=True)
class Crash:
    """One emulated host crash: how much of the AOF it took away."""

    cut_bytes: int
    cut_s: float
    """How old the oldest lost write was (the tick the cut starts at)."""


class FsyncWatch:
    """Ticks into the server and knows, at any moment, where its last fsync could be."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self._ticks: dict[int, tuple[int, float]] = {}
        """ring slot -> (tick number, when written) of its latest write."""
        self._next = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._clients: list[redis.Redis] = []
        self._thread: threading.Thread | None = None

    def __enter__(self) -> FsyncWatch:
        self._connect()
        self._thread = threading.Thread(target=self._run, name="fsync-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._close()

    def crash(self) -> Crash:
        """SIGKILL the server, cut its AOF back to the last fsync, start it again."""
        with self._lock:  # no tick while the crash happens
            unsynced = [
                (number, at)
                for slot, (number, at) in self._ticks.items()
                if not self._synced(self._clients[slot])
            ]
            assert self.server.process is not None
            self.server.process.kill()
            self.server.process.wait()
            self.server.process = None
            cut = Crash(0, 0.0)
            if unsynced:
                number, at = min(unsynced)
                cut = Crash(_cut_at_tick(self.server.workdir, number), time.time() - at)
            self._close()
            self._ticks.clear()
            self.server.start()
            self._connect()
        return cut

    def _run(self) -> None:
        while not self._stop.wait(TICK_S):
            with self._lock:
                slot = self._next % RING
                try:
                    self._clients[slot].set(_tick_key(self._next), "1")
                except redis.RedisError:
                    continue  # the server is restarting (a crash in progress or a test's own)
                self._ticks[slot] = (self._next, time.time())
                self._next += 1

    @staticmethod
    def _synced(client: redis.Redis) -> bool:
        pipe = client.pipeline(transaction=True)
        pipe.execute_command("WAITAOF", 1, 0, 0)  # type: ignore[no-untyped-call]
        [(local, _replicas)] = pipe.execute()
        return int(local) >= 1

    def _connect(self) -> None:
        self._clients = [
            redis.Redis(port=self.server.port, single_connection_client=True) for _ in range(RING)
        ]

    def _close(self) -> None:
        for client in self._clients:
            client.close()
        self._clients = []


def _tick_key(number: int) -> str:
    return f"chaos:fsync-tick:{number}"


def _cut_at_tick(workdir: Path, number: int) -> int:
    """Truncate the AOF's open increment file where the tick's SET begins; bytes cut."""
    incr = _open_increment(workdir)
    data = incr.read_bytes()
    key = _tick_key(number).encode()
    found = data.rfind(b"$%d\r\n%s\r\n" % (len(key), key))
    assert found > 0, f"tick {number} is not in {incr}"
    start = data.rfind(b"*", 0, found)  # the command's array header: `*3\r\n$3\r\nSET\r\n`
    with incr.open("r+b") as handle:
        handle.truncate(start)
    return len(data) - start


def _open_increment(workdir: Path) -> Path:
    """The increment file writes go to (the last `type i` of the AOF manifest)."""
    folder = workdir / "appendonlydir"
    [manifest] = folder.glob("*.manifest")
    increments = [
        line.split()[1]
        for line in manifest.read_text().splitlines()
        if line.split()[-1:] == ["i"] and line.startswith("file ")
    ]
    return folder / increments[-1]
