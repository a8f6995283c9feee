"""The shared gates on a real redis-server: spacing of starts, slots, cool-down."""

from __future__ import annotations

import time

import pytest
import redis

from pipeline.gates import Gates
from pipeline.settings import ProviderSettings


@pytest.fixture
def make_gates(redis_url):
    clients = []

    def make(**provider):
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        clients.append(client)
        return Gates(client, redis_url, ProviderSettings(**provider), slot_lease_s=60)

    yield make
    for client in clients:
        client.close()


def test_starts_are_spaced_evenly_and_shared_between_gate_objects(make_gates):
    # Given 4 starts per 2 s window, seen by two workers' gate objects
    one = make_gates(starts_per_minute=4, rate_window_s=2.0, start_margin_s=0.0)
    two = make_gates(starts_per_minute=4, rate_window_s=2.0, start_margin_s=0.0)
    # Then the first start passes and the next, from either, waits about 0.5 s
    assert one.take_start().passed
    refused = two.take_start()
    assert not refused.passed and 0.3 < refused.wait_s <= 0.5
    assert not one.take_start().passed


def test_the_margin_lengthens_the_spacing(make_gates):
    gates = make_gates(starts_per_minute=2, rate_window_s=2.0, start_margin_s=2.0)
    assert gates.take_start().passed
    assert 1.8 < gates.take_start().wait_s <= 2.0  # (2 s + 2 s) / 2 starts


def test_slots_never_exceed_the_limit_and_are_idempotent(make_gates):
    gates = make_gates(max_concurrent=2)
    assert gates.acquire_slot("b:1").passed
    assert gates.acquire_slot("b:1").passed, "holding a slot twice takes one slot"
    assert gates.acquire_slot("b:2").passed
    refused = gates.acquire_slot("b:3")
    assert not refused.passed and refused.wait_s > 0
    assert gates.in_flight() == 2
    gates.release_slot("b:1")
    assert gates.acquire_slot("b:3").passed


def test_an_expired_lease_frees_its_slot(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    gates = Gates(client, redis_url, ProviderSettings(max_concurrent=1), slot_lease_s=0.2)
    assert gates.acquire_slot("crashed:1").passed
    assert not gates.acquire_slot("b:2").passed
    time.sleep(0.3)
    assert gates.acquire_slot("b:2").passed
    client.close()


def test_a_cool_down_is_shared_and_only_ever_lengthened(make_gates):
    one, two = make_gates(cooldown_default_s=3.0), make_gates()
    assert two.cooling().passed
    assert one.cool_down(None) == 3.0
    assert 2.5 < two.cooling().wait_s <= 3.0
    one.cool_down(0.5)  # a shorter Retry-After does not cut the hold-off short
    assert two.cooling().wait_s > 2.5


def test_the_poll_rate_is_shared(make_gates):
    one, two = make_gates(polls_per_second=2.0), make_gates(polls_per_second=2.0)
    assert one.take_poll().passed and two.take_poll().passed
    assert not one.take_poll().passed


def test_an_unreachable_redis_is_a_ledger_error_the_task_can_retry():
    from pipeline.ledger import LedgerError
    from pipeline.localstack import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=0.2)
    gates = Gates(client, url, ProviderSettings(), slot_lease_s=60)
    for call in (gates.take_start, gates.cooling, lambda: gates.acquire_slot("b:1")):
        with pytest.raises(LedgerError, match="Redis"):
            call()
    client.close()
