"""A crash of the Redis *host*: the process dies and the AOF loses what was not fsynced.

A SIGKILL of redis-server alone loses nothing (its writes are in the OS's page cache). A
power cut, a kernel panic or a VM that vanishes also loses the page cache: the AOF ends at
the last fsync. This emulates that:

- `appendfsync everysec` fsyncs about once a second: the crash cuts the AOF back by a random
  0.5-1.0 s of writes (`FsyncWatch` ticks a numbered key every 10 ms to know which bytes
  were written when);
- `appendfsync always` fsyncs every write before answering it: nothing answered can be
  lost, and nothing is cut.

Why not find the last fsync by asking the server (WAITAOF inside a MULTI answers at once
whether a connection's writes are fsynced)? Under `everysec` Valkey 8.1 (and the Redis 7.x
releases with redis/redis#12622) answers "fsynced" before the fsync (redis/redis#13793): measured here, it said so right
after every write.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from pipeline.local_servers import RedisServer

TICK_S = 0.01
LOSE_S = (0.5, 1.0)
"""How much of the last writes a crash of an everysec server takes away."""


@dataclass(frozen=True)
class Crash:
    """One emulated host crash: how much of the AOF it took away."""

    cut_bytes: int
    cut_s: float
    """How far back the cut reaches: the writes of the last `cut_s` seconds are gone."""


class FsyncWatch:
    """Ticks into the server so a crash knows where the writes of a moment ago begin."""

    def __init__(self, server: RedisServer, seed: int | None = None) -> None:
        self.server = server
        self._random = random.Random(seed)
        self._ticks: list[tuple[int, float]] = []
        """(tick number, when written), oldest first."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._client: redis.Redis | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> FsyncWatch:
        self._client = redis.Redis(port=self.server.port, single_connection_client=True)
        self._thread = threading.Thread(target=self._run, name="fsync-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._client is not None:
            self._client.close()

    def crash(self) -> Crash:
        """SIGKILL the server, cut its AOF back as its fsync policy allows, start it again."""
        with self._lock:  # no tick while the crash happens
            assert self.server.process is not None
            self.server.process.kill()
            self.server.process.wait()
            self.server.process = None
            crash = Crash(0, 0.0)
            if self.server.appendfsync != "always":
                lose_s = self._random.uniform(*LOSE_S)
                since = time.time() - lose_s
                first = next((number for number, at in self._ticks if at >= since), None)
                if first is not None:
                    crash = Crash(_cut_at_tick(self.server.workdir, first), lose_s)
            self._ticks.clear()
            self.server.start()
        return crash

    def _run(self) -> None:
        number = 0
        while not self._stop.wait(TICK_S):
            with self._lock:
                assert self._client is not None
                try:
                    self._client.set(_tick_key(number), "1")
                except redis.RedisError:
                    continue  # the server is restarting
                self._ticks.append((number, time.time()))
                number += 1


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
