"""Which guarantee a setting gets on which Redis (pure: the facts in, the choice out)."""

from __future__ import annotations

import pytest

from pipeline.durability import DurabilityError, RedisFacts, choose
from pipeline.settings import Durability, LedgerSettings


def facts(
    version: tuple[int, int] = (7, 4),
    *,
    aof: bool = True,
    fsync: str | None = "everysec",
    replicas: int = 0,
) -> RedisFacts:
    return RedisFacts(version, aof_enabled=aof, appendfsync=fsync, replicas=replicas)


@pytest.mark.parametrize(
    ("setting", "server", "mode", "wait"),
    [
        ("auto", facts(), "aof", ("WAITAOF", "1", "0", "5000")),
        ("aof", facts((8, 1)), "aof", ("WAITAOF", "1", "0", "5000")),
        # Redis before 7.2 has no WAITAOF: only appendfsync always makes its AOF durable
        ("auto", facts((7, 0), fsync="always"), "aof", None),
        ("auto", facts((7, 0), replicas=1), "replica", ("WAIT", "1", "5000")),
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
        ("auto", facts((7, 0)), "has no WAITAOF and appendfsync is everysec"),
        ("auto", facts((6, 2), fsync=None), "appendfsync is unknown"),
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
