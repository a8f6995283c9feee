"""Live workers, known: each worker's heartbeat in Redis, and what the live ones disagree on.

A worker's main process writes its beat every `BEAT_S` (host, pid, version, when it started,
and a fingerprint of the settings that must agree across workers); a beat older than `LIVE_S`
is a dead worker's. The fingerprint never holds a secret: the API key is represented by the
first 12 hex digits of its SHA-256.

    >>> a = {"bucket": "b", "key": "1f2e"}
    >>> disagreements([Beat("w1", "h", 1, "0.1", 0.0, 0.0, a),
    ...                Beat("w2", "h", 2, "0.1", 0.0, 0.0, {**a, "key": "9a9a"})])
    ['key']
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from pipeline import keys
from pipeline.errors import LedgerError
from pipeline.settings import Settings

BEAT_S = 10.0
"""How often a live worker writes its beat."""
LIVE_S = 3 * BEAT_S
"""A worker whose last beat is older than this is taken for dead."""


def fingerprint(settings: Settings) -> dict[str, str]:
    """The settings every worker of a deployment must share, as comparable strings."""
    key = settings.provider.api_key
    key_hash = hashlib.sha256(key.get_secret_value().encode()).hexdigest()[:12] if key else ""
    return {
        "key": key_hash,
        "provider": settings.provider.base_url,
        "bucket": settings.storage.bucket,
        "storage": settings.storage.endpoint_url or "",
        "starts_per_minute": str(settings.provider.starts_per_minute),
        "max_concurrent": str(settings.provider.max_concurrent),
        # Slots in all (processing and queued ahead): the workers' slot scripts must agree.
        "in_flight_max": str(settings.provider.in_flight_max),
        "queue": settings.worker.queue,
        "durability": settings.ledger.durability.value,
    }


@dataclass(frozen=True)
class Beat:
    """One worker's last heartbeat."""

    name: str
    host: str
    pid: int
    version: str
    started_at: float
    at: float
    settings: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Beat:
        data: dict[str, Any] = json.loads(text)
        return cls(**data)


def disagreements(beats: Sequence[Beat]) -> list[str]:
    """The fingerprint fields on which live workers do not all agree (sorted)."""
    fields = {name for beat in beats for name in beat.settings}
    return sorted(
        name for name in fields if len({beat.settings.get(name, "") for beat in beats}) > 1
    )


class Heartbeats:
    """Writes and reads the workers' beats (`lipdub:workers`, `lipdub:worker:<name>`)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def beat(self, beat: Beat) -> None:
        """Record a worker as alive now."""
        try:
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(keys.worker(beat.name), beat.to_json(), ex=int(LIVE_S))
                pipe.zadd(keys.WORKERS, {beat.name: beat.at})
                pipe.execute()
        except redis.RedisError as err:
            raise LedgerError(f"the worker's heartbeat failed: {type(err).__name__}") from err

    def gone(self, name: str) -> None:
        """A worker that stops says so (its beat would lapse anyway)."""
        try:
            self.redis.delete(keys.worker(name))
            self.redis.zrem(keys.WORKERS, name)
        except redis.RedisError as err:
            raise LedgerError(f"the worker's heartbeat failed: {type(err).__name__}") from err

    def alive(self, now: float) -> list[Beat]:
        """The workers that beat within `LIVE_S`, by name (older entries are dropped)."""
        try:
            self.redis.zremrangebyscore(keys.WORKERS, "-inf", now - LIVE_S)
            names = list(self.redis.zrangebyscore(keys.WORKERS, now - LIVE_S, "+inf"))
            found = self.redis.mget([keys.worker(str(n)) for n in names]) if names else []
        except redis.RedisError as err:
            raise LedgerError(f"could not read the workers' heartbeats: {err}") from err
        return sorted((Beat.from_json(str(text)) for text in found if text), key=lambda b: b.name)
