"""Durable intent: a submit's intent is on disk (or on a replica) before lipdub pays.

"Never pay twice" rests on the intent (`ready → submitting`) surviving whatever happens
after the POST. Redis acknowledges a write once it is in memory; with `appendfsync everysec`
a crash of its *host* (power, kernel, VM) loses up to a second of acknowledged writes, and
an intent lost that way means the pair is posted again. So a durable write is one the
server only acknowledges once it is safe:

| mode      | how                                   | what survives                           |
|-----------|---------------------------------------|-----------------------------------------|
| `aof`     | `appendfsync always` (every write is  | a crash of the Redis host               |
|           | fsynced before its reply), or         |                                         |
|           | `WAITAOF 1 0` on Redis 8.0+           |                                         |
| `replica` | `WAIT n` after the write              | the primary's host, when the failover   |
|           |                                       | promotes a replica that acknowledged    |
| `none`    | —                                     | a process crash only (the AOF is in the |
|           |                                       | OS)                                     |

Why not WAITAOF with `everysec` everywhere it exists (7.2+): in the Redis 7.x releases that
carry redis/redis#12622 and in Valkey (8.1.8 measured here), WAITAOF can answer before the fsync when the last one was
less than a second ago (redis/redis#13793, fixed for Redis 8.0): it waits for the server's
bookkeeping, not for the disk. Measured here: a write followed at once by WAITAOF inside a
MULTI (which answers without blocking) reads "fsynced" every time under `everysec`.

`auto` (the default) takes `aof` when the server offers it, else `replica` when it has
enough replicas online, else refuses: a worker does not submit paid work it cannot make safe
unless the operator set `LIPDUB_LEDGER__DURABILITY=none`.

`choose` is pure (the facts in, the guarantee or the refusal out); `read_facts` asks the
server with INFO, and CONFIG GET appendfsync where allowed (managed services often disable
CONFIG; there, `replica` is the way).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from pipeline.errors import DurabilityError
from pipeline.settings import Durability, LedgerSettings

log = logging.getLogger("lipdub.durability")

SETTING = "LIPDUB_LEDGER__DURABILITY"
WAITAOF_TRUSTED_SINCE = (8, 0)
"""Redis releases whose WAITAOF waits for the fsync under `everysec` (redis/redis#13793)."""


@dataclass(frozen=True)
class RedisFacts:
    """What the ledger's Redis says about itself (INFO server, persistence, replication)."""

    version: tuple[int, int]
    aof_enabled: bool
    appendfsync: str | None
    """`always`, `everysec`, `no`; None when CONFIG GET is not allowed."""
    replicas: int
    where: str = "the ledger's Redis"
    server: str = "redis"
    """`redis` or `valkey` (INFO server's `server_name`)."""

    @property
    def trusted_waitaof(self) -> bool:
        """Whether WAITAOF waits for the fsync itself (Redis 8.0+; not Valkey as of 8.1)."""
        return self.server == "redis" and self.version >= WAITAOF_TRUSTED_SINCE


@dataclass(frozen=True)
class Guarantee:
    """How intents are made durable on this server, and what that protects against."""

    mode: Durability
    wait: tuple[str, ...] | None
    """The command sent after a durable write on the same connection (None: no wait)."""
    needs: int
    """How many acknowledgements the wait must report (local fsyncs or replicas)."""
    summary: str

    def satisfied(self, reply: Any) -> bool:
        """True when the wait's reply reports enough acknowledgements.

        >>> aof = Guarantee(Durability.AOF, ("WAITAOF", "1", "0", "5000"), 1, "")
        >>> aof.satisfied([1, 0]), aof.satisfied([0, 0])
        (True, False)
        >>> Guarantee(Durability.REPLICA, ("WAIT", "2", "5000"), 2, "").satisfied(1)
        False
        """
        if self.wait is None:
            return True
        if self.wait[0] == "WAITAOF":
            return int(reply[0]) >= self.needs
        return int(reply) >= self.needs


def choose(settings: LedgerSettings, facts: RedisFacts) -> Guarantee:
    """The guarantee the setting asks for on a server with these facts (DurabilityError
    when it cannot be had, saying what would make it possible).

    >>> always = RedisFacts((7, 0), aof_enabled=True, appendfsync="always", replicas=0)
    >>> choose(LedgerSettings(), always).mode.value, choose(LedgerSettings(), always).wait
    ('aof', None)
    >>> redis8 = RedisFacts((8, 2), aof_enabled=True, appendfsync="everysec", replicas=0)
    >>> choose(LedgerSettings(), redis8).wait
    ('WAITAOF', '1', '0', '5000')
    >>> valkey = RedisFacts((7, 2), True, "everysec", replicas=1, server="valkey")
    >>> choose(LedgerSettings(), valkey).mode.value
    'replica'
    """
    timeout_ms = str(round(settings.durable_timeout_s * 1000))
    mode = settings.durability
    if mode is Durability.NONE:
        return Guarantee(
            mode,
            None,
            0,
            f"durability none ({SETTING}): intents are not waited for; a crash of the "
            "Redis host can lose the last second of writes and pay for those pairs again",
        )
    if mode in (Durability.AUTO, Durability.AOF) and facts.aof_enabled:
        if facts.appendfsync == "always":
            return Guarantee(
                Durability.AOF,
                None,
                0,
                f"durability aof: {facts.where} fsyncs every write (appendfsync always) "
                "before it answers; a crash of the Redis host loses no intent",
            )
        if facts.trusted_waitaof:
            return Guarantee(
                Durability.AOF,
                ("WAITAOF", "1", "0", timeout_ms),
                1,
                f"durability aof: each submit's intent is fsynced to the AOF of {facts.where} "
                "(WAITAOF) before its POST; a crash of the Redis host loses no intent",
            )
    if mode in (Durability.AUTO, Durability.REPLICA) and facts.replicas >= settings.replicas:
        return Guarantee(
            Durability.REPLICA,
            ("WAIT", str(settings.replicas), timeout_ms),
            settings.replicas,
            f"durability replica: each submit's intent is held by {settings.replicas} "
            f"replica(s) of {facts.where} (WAIT) before its POST; it survives the primary's "
            "host if the failover promotes one of them",
        )
    raise DurabilityError(_refusal(settings, facts))


def _refusal(settings: LedgerSettings, facts: RedisFacts) -> str:
    """One line: what the server lacks and the ways out, the setting named."""
    found = []
    if not facts.aof_enabled:
        found.append("AOF is off")
    else:
        found.append(f"appendfsync is {facts.appendfsync or 'unknown (CONFIG is not allowed)'}")
        if not facts.trusted_waitaof:
            found.append(
                f"{facts.server} {facts.version[0]}.{facts.version[1]}'s WAITAOF does not wait for the fsync"
            )
    found.append(f"it has {facts.replicas} replica(s) online")
    if settings.durability is Durability.REPLICA:
        fix = f"add replicas (LIPDUB_LEDGER__REPLICAS={settings.replicas} needed)"
    else:
        fix = "run it with appendonly yes and appendfsync always (or Redis 8.0+), or add a replica"
    return (
        f"{facts.where} cannot keep a submit's intent through a host crash "
        f"({'; '.join(found)}; {SETTING}={settings.durability.value}): {fix}, "
        f"or set {SETTING}=none to accept paying twice after a Redis host crash"
    )


def read_facts(client: redis.Redis, where: str = "the ledger's Redis") -> RedisFacts:
    """Ask the server (INFO; CONFIG GET appendfsync where allowed)."""
    info: Mapping[str, Any] = client.info()
    major, minor = (int(part) for part in str(info.get("redis_version", "0.0")).split(".")[:2])
    appendfsync: str | None
    try:
        found = client.config_get("appendfsync")
        appendfsync = str(found.get("appendfsync")) if found else None
    except redis.ResponseError:  # CONFIG disabled (managed services)
        appendfsync = None
    return RedisFacts(
        version=(major, minor),
        aof_enabled=str(info.get("aof_enabled", "0")) == "1",
        appendfsync=appendfsync,
        replicas=_online_replicas(info),
        where=where,
        server=str(info.get("server_name") or "redis"),
    )


def _online_replicas(info: Mapping[str, Any]) -> int:
    """Replicas past their first sync (`slaveN:...,state=online`): one still syncing would
    not acknowledge a WAIT.

    >>> _online_replicas({"connected_slaves": 2, "slave0": {"state": "online"},
    ...                   "slave1": {"state": "wait_bgsave"}})
    1
    """
    return sum(
        1
        for name, value in info.items()
        if re.fullmatch(r"slave\d+", name)
        and isinstance(value, dict)
        and value.get("state") == "online"
    )


def where_of(client: redis.Redis) -> str:
    """`redis host:port` of a client, for messages (never its password)."""
    kwargs = client.connection_pool.connection_kwargs
    return f"redis {kwargs.get('host', '?')}:{kwargs.get('port', '?')}"


class DurableWrites:
    """The guarantee of one ledger connection pool, found out when first needed and again
    every `RECHECK_S` (a server's setup can change under a running worker: AOF turned off,
    appendfsync relaxed, a replica gone), then applied to each durable write (see
    `Ledger.transition(durable=True)`)."""

    RECHECK_S = 60.0

    def __init__(
        self,
        client: redis.Redis,
        settings: LedgerSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._settings = settings
        self._clock = clock
        self._guarantee: Guarantee | None = None
        self._checked_at = 0.0

    def guarantee(self) -> Guarantee:
        """The guarantee (DurabilityError when refused; Redis trouble surfaces as
        redis.RedisError for the ledger to convert)."""
        now = self._clock()
        if self._guarantee is None or now - self._checked_at >= self.RECHECK_S:
            facts = read_facts(self._client, where_of(self._client))
            guarantee = choose(self._settings, facts)  # raises before anything is cached
            if self._guarantee is None or guarantee.summary != self._guarantee.summary:
                log.info("%s", guarantee.summary)
            self._guarantee, self._checked_at = guarantee, now
        return self._guarantee

    def forget(self) -> None:
        """Ask the server again next time (after a wait was not satisfied)."""
        self._guarantee = None


def check_at_start(url: str, settings: LedgerSettings) -> Guarantee | None:
    """What a worker about to start can guarantee (logged). DurabilityError when the Redis
    at `url` cannot make intents durable; None when it does not answer yet (the first
    submit checks again before it pays)."""
    client = redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=5)
    try:
        guarantee = DurableWrites(client, settings).guarantee()
    except redis.RedisError as err:
        log.warning("could not ask the ledger's Redis what it guarantees yet: %s", err)
        return None
    finally:
        client.close()
    return guarantee
