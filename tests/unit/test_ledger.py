"""The ledger's atomic transitions, budget and content claims, on a real redis-server."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
import redis

from pipeline import keys
from pipeline.ledger import Ledger
from pipeline.states import BatchState, ItemState


@pytest.fixture
def ledger(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield Ledger(client)
    client.close()


def _batch(ledger: Ledger, count: int = 2, budget: Decimal | None = None) -> str:
    items = [{"id": f"i{n}", "price_usd": "0.5"} for n in range(count)]
    ledger.create_batch("b1", {"name": "t", "created_at": 1.0}, items, budget_usd=budget)
    return "b1"


def test_only_one_of_many_racing_transitions_wins(ledger):
    # Given a ready item and 16 threads trying to record the submit intent at once
    batch = _batch(ledger)
    ledger.transition(batch, "i0", [ItemState.PENDING], ItemState.READY)
    wins = []
    barrier = threading.Barrier(16)

    def race(n: int) -> None:
        barrier.wait()
        if ledger.transition(batch, "i0", [ItemState.READY], ItemState.SUBMITTING, {"by": n}).ok:
            wins.append(n)

    threads = [threading.Thread(target=race, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then exactly one recorded its intent
    assert len(wins) == 1
    assert ledger.item(batch, "i0")["by"] == str(wins[0])


def test_a_refused_transition_reports_the_state_it_met(ledger):
    batch = _batch(ledger)
    result = ledger.transition(batch, "i0", [ItemState.RUNNING], ItemState.COLLECTING)
    assert not result.ok and result.state == "pending"
    assert ledger.item(batch, "i0")["state"] == "pending"


def test_a_fenced_transition_acts_only_on_the_attempt_it_read(ledger):
    # Given an item submitting its second attempt
    batch = _batch(ledger)
    ledger.transition(batch, "i0", [ItemState.PENDING], ItemState.READY)
    ledger.transition(batch, "i0", [ItemState.READY], ItemState.SUBMITTING, {"submits": 2})
    # When a step that read the first attempt tries to send it back to ready
    stale = ledger.transition(
        batch, "i0", [ItemState.SUBMITTING], ItemState.READY, {"x": 1}, when={"submits": "1"}
    )
    # Then nothing changes; the step that read the second attempt may
    assert not stale.ok and stale.state == "submitting"
    assert ledger.item(batch, "i0")["state"] == "submitting" and "x" not in ledger.item(batch, "i0")
    assert ledger.transition(
        batch, "i0", [ItemState.SUBMITTING], ItemState.READY, when={"submits": 2}
    ).ok
    # And an absent field matches the empty value (an item never submitted)
    assert ledger.update_item(batch, "i1", ItemState.PENDING, {"y": 1}, when={"submits": ""})
    assert not ledger.update_item(batch, "i1", ItemState.PENDING, {"y": 2}, when={"submits": "1"})


def test_the_last_final_transition_completes_the_batch_and_a_reopen_undoes_it(ledger):
    batch = _batch(ledger, count=2)
    first = ledger.transition(batch, "i0", [ItemState.PENDING], ItemState.FAILED)
    assert first.ok and not first.batch_complete and first.done == 1
    second = ledger.transition(batch, "i1", [ItemState.PENDING], ItemState.COMPLETED)
    assert second.batch_complete
    ledger.update_batch(batch, {"state": "finished"})
    reopened = ledger.transition(batch, "i0", [ItemState.FAILED], ItemState.PENDING)
    assert reopened.done == 1 and not reopened.batch_complete
    record = ledger.batch(batch)
    assert record is not None and record.state is BatchState.RUNNING


def test_budget_reservations_are_atomic_idempotent_and_settled_once(ledger):
    # Given a $1.00 budget and items estimated at $0.50
    batch = _batch(ledger, count=3, budget=Decimal("1.00"))
    assert ledger.reserve(batch, batch, "i0", Decimal("0.5"))
    assert ledger.reserve(batch, batch, "i0", Decimal("0.5")), "a second reserve is a no-op"
    assert ledger.reserve(batch, batch, "i1", Decimal("0.5"))
    # Then a third is refused
    assert not ledger.reserve(batch, batch, "i2", Decimal("0.5"))
    assert ledger.budget(batch)["reserved_usd"] == Decimal("1")
    # When one settles at its final cost, twice
    assert ledger.settle(batch, batch, "i0", Decimal("0.3"))
    assert not ledger.settle(batch, batch, "i0", Decimal("0.3"))
    money = ledger.budget(batch)
    assert money["reserved_usd"] == Decimal("0.5") and money["spent_usd"] == Decimal("0.3")
    # and the freed money fits the third
    assert ledger.reserve(batch, batch, "i2", Decimal("0.2"))


def test_a_reservation_in_two_budgets_is_all_or_none_settles_in_both_and_can_be_returned(ledger):
    # Given a batch without a limit and a night's budget of $1.00
    batch = _batch(ledger, count=3)
    ledger.set_budget_limit("night", Decimal("1.00"))
    both = [batch, "night"]
    assert ledger.reserve(both, batch, "i0", Decimal("0.6"))
    # Then an item the night cannot take is refused in both (the batch keeps nothing)
    assert not ledger.reserve(both, batch, "i1", Decimal("0.6"))
    assert ledger.budget(batch)["reserved_usd"] == Decimal("0.6")
    # When the first item waits instead of running, its reservation goes back to both
    assert ledger.unreserve(batch, "i0") and not ledger.unreserve(batch, "i0")
    assert ledger.budget(batch)["reserved_usd"] == ledger.budget("night")["reserved_usd"] == 0
    # And a settled reservation lands in every budget it was made in, whatever scope is named
    assert ledger.reserve(both, batch, "i1", Decimal("0.6"))
    assert ledger.settle(batch, batch, "i1", Decimal("0.5"))
    for scope in both:
        money = ledger.budget(scope)
        assert money["spent_usd"] == Decimal("0.5") and money["reserved_usd"] == 0
    assert not ledger.unreserve(batch, "i1"), "a settled item has nothing to give back"


def test_a_batch_id_is_written_once(ledger):
    items = [{"id": "i0", "price_usd": "0.5"}]
    assert ledger.create_batch("bx", {"created_at": 1.0}, items, budget_usd=None)
    assert not ledger.create_batch("bx", {"created_at": 2.0, "name": "again"}, [], budget_usd=None)
    first = ledger.batch("bx")
    assert first is not None and first.name == "" and first.created_at == 1.0
    assert ledger.item_ids("bx") == ["i0"]
    assert ledger.batch("never-made") is None


def test_a_pair_is_claimed_once_then_reused(ledger):
    first = ledger.claim("pair", "b1:a")
    assert first.kind == "own"
    assert ledger.claim("pair", "b1:a").kind == "own", "the owner may ask again"
    assert ledger.claim("pair", "b2:x") == type(first)("wait", "b1:a", "")
    ledger.complete_content("pair", "b1:a", "outputs/b1/a.mp4", ttl_s=60)
    reuse = ledger.claim("pair", "b2:x")
    assert (reuse.kind, reuse.output_key) == ("reuse", "outputs/b1/a.mp4")
    assert 0 < ledger.redis.ttl(keys.content("pair")) <= 60
    assert ledger.claim("pair", "b3:y", force=True).kind == "own"


def test_a_released_claim_lets_another_item_pay(ledger):
    ledger.claim("pair", "b1:a")
    ledger.release_claim("pair", "b2:not-the-owner")
    assert ledger.claim("pair", "b2:x").kind == "wait"
    ledger.release_claim("pair", "b1:a")
    assert ledger.claim("pair", "b2:x").kind == "own"


def test_a_move_off_the_state_diagram_is_refused_before_redis_is_asked(ledger):
    batch = _batch(ledger)
    with pytest.raises(ValueError, match="never moves from pending to running"):
        ledger.transition(batch, "i0", [ItemState.PENDING], ItemState.RUNNING)
    assert ledger.item(batch, "i0")["state"] == "pending"


def test_the_batch_keeps_its_counts_per_state_through_every_move(ledger):
    import random

    from pipeline.reporting.data import batch_status
    from pipeline.states import MOVES

    # Given a batch of 30 items, moved at random along the allowed moves (failed ones too)
    batch = _batch(ledger, count=30)
    pick = random.Random(7)
    for _ in range(400):
        item = f"i{pick.randrange(30)}"
        now = ItemState(ledger.item(batch, item)["state"])
        targets = sorted(MOVES[now], key=lambda s: s.value)
        if targets:
            to = pick.choice(targets)
            # The step's view of the item is sometimes stale: such a move must not count
            views = [s for s in ItemState if to in MOVES[s]]
            ledger.transition(batch, item, [pick.choice(views)], to)
    # Then the counts the batch kept are what its items say, and status reads only those
    scanned = {s.value: 0 for s in ItemState}
    for record in ledger.items(batch):
        scanned[record["state"]] += 1
    kept = ledger.batch(batch)
    assert kept is not None and kept.counts == scanned
    status = batch_status(ledger, batch)
    assert status["counts"] == scanned and status["items"] == 30
    assert status["estimate_usd"] == "15.0"
    # And a batch recorded before counts were kept is counted from its items
    ledger.redis.hdel(f"lipdub:batch:{batch}", *[f"n:{s.value}" for s in ItemState])
    assert batch_status(ledger, batch)["counts"] == scanned


def test_unfinished_items_are_those_not_final_and_none_once_all_are(ledger):
    batch = _batch(ledger, count=3)
    ledger.transition(batch, "i1", [ItemState.PENDING], ItemState.COMPLETED)
    unfinished = ledger.unfinished_items(batch, ["state", "price_usd"])
    assert unfinished == [
        {"id": "i0", "state": "pending", "price_usd": "0.5"},
        {"id": "i2", "state": "pending", "price_usd": "0.5"},
    ]
    first = ledger.unfinished_items(batch, ["state"], limit=1, chunk=1)
    assert first == [{"id": "i0", "state": "pending"}]
    assert ledger.unfinished_items(batch, ["state"], chunk=1) == [
        {"id": "i0", "state": "pending"},
        {"id": "i2", "state": "pending"},
    ], "read a chunk at a time, none is missed"
    for item in ("i0", "i2"):
        ledger.transition(batch, item, [ItemState.PENDING], ItemState.FAILED)
    assert ledger.unfinished_items(batch, ["state"]) == []
