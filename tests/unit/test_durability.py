"""Which guarantee a setting gets on which Redis (pure: the facts in, the choice out)."""

from __future__ import annotations

import pytest

from pipeline.durability import RedisFacts, choose
from pipeline.errors import DurabilityError
from pipeline.settings import Durability, LedgerSettings


def facts(
    version: tuple[int, int] = (7, 4),
    *,
    aof: bool = True,
    fsync: str | None = "always",
    replicas: int = 0,
    server: str = "redis",
) -> RedisFacts:
    return RedisFacts(version, aof_enabled=aof, appendfsync=fsync, replicas=replicas, server=server)


@pytest.mark.parametrize(
    ("setting", "server", "mode", "wait"),
    [
        # appendfsync always: every answered write is on disk, nothing to wait for
        ("auto", facts(), "aof", None),
        ("aof", facts((6, 2)), "aof", None),
        ("auto", facts((7, 2), server="valkey"), "aof", None),
        # WAITAOF with everysec waits for the fsync itself only from Redis 8.0
        ("auto", facts((8, 0), fsync="everysec"), "aof", ("WAITAOF", "1", "0", "5000")),
        ("auto", facts((7, 4), fsync="everysec", replicas=1), "replica", ("WAIT", "1", "5000")),
        ("auto", facts(aof=False, replicas=2), "replica", ("WAIT", "1", "5000")),
        ("replica", facts(replicas=1), "replica", ("WAIT", "1", "5000")),
        ("none", facts(aof=False), "none", None),
    ],
)
def test_the_strongest_guarantee_the_server_offers_is_taken(setting, server, mode, wait):
    guarantee = choose(LedgerSettings(durability=Durability(setting)), server)
    assert (guarantee.mode.value, guarantee.wait) == (mode, wait)


@pytest.mark.parametrize(
    ("setting", "server", "says"),
    [
        ("auto", facts(aof=False), "AOF is off"),
        (
            "auto",
            facts((7, 4), fsync="everysec"),
            "redis 7.4's WAITAOF does not wait for the fsync",
        ),
        ("auto", facts((8, 1), fsync="everysec", server="valkey"), "valkey 8.1's WAITAOF"),
        ("auto", facts((6, 2), fsync=None), "appendfsync is unknown (CONFIG is not allowed)"),
        ("aof", facts(aof=False, replicas=3), "AOF is off"),
        ("replica", facts(), "LIPDUB_LEDGER__REPLICAS=1 needed"),
    ],
)
def test_a_server_that_cannot_keep_an_intent_is_refused_in_one_line(setting, server, says):
    with pytest.raises(DurabilityError) as refused:
        choose(LedgerSettings(durability=Durability(setting)), server)
    message = str(refused.value)
    assert says in message
    assert "LIPDUB_LEDGER__DURABILITY=none" in message and "\n" not in message


def test_replica_mode_waits_for_as_many_replicas_as_set():
    settings = LedgerSettings(durability=Durability.REPLICA, replicas=2, durable_timeout_s=1.5)
    guarantee = choose(settings, facts(aof=False, replicas=2))
    assert guarantee.wait == ("WAIT", "2", "1500")
    assert not guarantee.satisfied(1) and guarantee.satisfied(2)
    with pytest.raises(DurabilityError):
        choose(settings, facts(aof=False, replicas=1))
