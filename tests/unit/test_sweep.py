"""Finding steps whose message was lost, on the suite's real Redis with an injected clock."""

from __future__ import annotations

import pytest
import redis

from pipeline import keys
from pipeline.ledger import Ledger
from pipeline.states import ItemState
from pipeline.steps import Next
from pipeline.sweep import stalled_steps

NOW_S = 1_800_000_000.0
GRACE_S = 60.0


@pytest.fixture
def ledger(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    ledger = Ledger(client)
    items = [{"id": i, "next_step": "prepare", "next_due_at": NOW_S} for i in ("a", "b", "c")]
    ledger.create_batch("b1", {"created_at": NOW_S}, items, budget_usd=None)
    client.zadd("lipdub:batches", {"b1": NOW_S})
    yield ledger
    client.close()


def test_nothing_is_stalled_within_the_grace(ledger):
    assert stalled_steps(ledger, now=NOW_S + GRACE_S - 1, grace_s=GRACE_S) == []


def test_a_step_expected_past_its_grace_is_sent_again(ledger):
    later = NOW_S + GRACE_S + 1
    ledger.expect([Next("poll", "b1", "b", countdown_s=30.0)], NOW_S)  # b's poll is due later
    found = stalled_steps(ledger, now=later, grace_s=GRACE_S)
    assert found == [Next("prepare", "b1", "a"), Next("prepare", "b1", "c")]


def test_final_items_are_left_alone_and_a_complete_batch_is_finalized(ledger):
    later = NOW_S + GRACE_S + 1
    ledger.transition("b1", "a", [ItemState.PENDING], ItemState.FAILED)
    assert [n.item_id for n in stalled_steps(ledger, now=later, grace_s=GRACE_S)] == ["b", "c"]
    ledger.transition("b1", "b", [ItemState.PENDING], ItemState.CANCELLED)
    ledger.transition("b1", "c", [ItemState.PENDING], ItemState.READY)
    ledger.transition("b1", "c", [ItemState.READY], ItemState.SKIPPED)
    assert stalled_steps(ledger, now=later, grace_s=GRACE_S) == [Next("finalize", "b1")]
    # ... unless a finalizer is at work
    assert ledger.acquire_finalizer("b1", 30)
    assert stalled_steps(ledger, now=later, grace_s=GRACE_S) == []


def test_an_item_never_sent_is_sent_once_the_start_uploading_its_files_stopped(ledger):
    # Given an item the start had not sent yet (its files were still uploading)
    ledger.redis.hset(keys.item("b1", "d"), mapping={"id": "d", "state": "pending"})
    ledger.redis.rpush(keys.batch_items("b1"), "d")
    ledger.update_batch("b1", {"item_count": 4, "uploading": True, "uploads_beat_at": NOW_S})
    # Then it is left alone while the start says it is uploading, however long that takes
    assert Next("prepare", "b1", "d") not in stalled_steps(ledger, now=NOW_S + 29, grace_s=1e9)
    # and sent (its prepare step fails it, saying why) once the start has been silent 30 s
    assert stalled_steps(ledger, now=NOW_S + 30, grace_s=1e9) == [Next("prepare", "b1", "d")]
