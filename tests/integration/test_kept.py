"""A compacted batch's items, packed per batch (`pipeline.ledger.kept`), on a real Redis:
each one reads back as it was kept, whichever reader asks, in a fraction of the bytes a hash
per item took; and they leave the batch's done set, still counted as done."""

from __future__ import annotations

import hashlib
import json
import time
import uuid

import redis

from pipeline import keys
from pipeline.ledger import Ledger
from pipeline.ledger.kept import CHUNK_ITEMS, COMPACTED_AT, LAPSED, lapsed_record
from pipeline.states import ItemState

BATCH = "b20261206-000000-abcdef"


def kept_item(n: int) -> dict[str, str]:
    """A completed item as compaction keeps it, with values shaped like real ones."""
    prediction_id = uuid.uuid4().hex
    return {
        "id": f"clip{n:05d}.es",
        "row": str(n + 1),
        "state": "completed",
        "identity": hashlib.sha256(f"pair {n}".encode()).hexdigest(),
        "prediction_id": prediction_id,
        "prediction_ids": json.dumps([prediction_id]),
        "output_key": f"lipdub/outputs/{BATCH}/clip{n:05d}.es.mp4",
        "output_s": f"{10 + n % 50}.040",
        "cost_usd": f"{(10 + n % 50) * 0.134:.4f}",
        "billable_s": str(10 + n % 50),
    }


def test_packed_items_read_back_as_kept_by_every_reader(redis_url):
    # Given a batch of 250 items (3 parts), one of them failed and kept whole
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    ledger = Ledger(client)
    records = {r["id"]: r for r in map(kept_item, range(250))}
    ids = list(records)
    client.rpush(keys.batch_items(BATCH), *ids)
    failed = {"id": ids[7], "state": "failed", "video": "s3://b/v.mp4"}
    client.hset(keys.item(BATCH, ids[7]), mapping=failed)
    # When the others are packed, to lapse in 30 days
    until = time.time() + 30 * 86_400
    ledger.keep_compacted(BATCH, {i: r for i, r in records.items() if i != ids[7]}, until)
    # Then each reads back as it was kept, the failed one as its own record
    assert client.hget(keys.batch_kept(BATCH), "chunks") == str(-(-249 // CHUNK_ITEMS))
    assert ledger.item(BATCH, ids[0]) == records[ids[0]]
    assert ledger.item(BATCH, ids[7]) == failed
    whole = ledger.items(BATCH)
    assert whole == [failed if i == ids[7] else records[i] for i in ids]
    assert list(ledger.iter_items(BATCH, chunk=100)) == whole
    assert list(ledger.iter_items(BATCH, fields=["state", "output_s"], chunk=64)) == [
        {"state": r["state"], **({"output_s": r["output_s"]} if "output_s" in r else {})}
        for r in whole
    ]
    assert ledger.fields_of([(BATCH, ids[249]), (BATCH, "nobody")], ["output_key"]) == [
        {"output_key": records[ids[249]]["output_key"]},
        {},
    ]
    assert ledger.item(BATCH, "nobody") == {}
    # And they lapse together, when the latest of them does
    assert abs(client.ttl(keys.batch_kept(BATCH)) - 30 * 86_400) <= 5
    # And packing again replaces what was packed (nothing left of the earlier parts)
    ledger.keep_compacted(BATCH, {ids[0]: records[ids[0]]}, None)
    assert ledger.item(BATCH, ids[0]) == records[ids[0]] and ledger.item(BATCH, ids[1]) == {}
    assert client.ttl(keys.batch_kept(BATCH)) == -1


def test_a_packed_item_takes_a_fraction_of_a_hash_of_its_own(redis_url):
    # Given 1,000 completed items as compaction keeps them
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    records = {r["id"]: r for r in map(kept_item, range(1000))}
    # When they are kept one hash each (as before), and packed
    for item_id, record in records.items():
        client.hset(keys.item("own", item_id), mapping=record)
        client.expire(keys.item("own", item_id), 86_400)
    own = sum(client.memory_usage(keys.item("own", i), samples=0) for i in records)
    Ledger(client).keep_compacted(BATCH, records, time.time() + 86_400)
    packed = client.memory_usage(keys.batch_kept(BATCH), samples=0)
    # Then packed they take less than a third of the bytes
    print(f"\nbytes per item: a hash each {own / 1000:.0f}, packed {packed / 1000:.0f}")
    assert packed * 3 < own


def test_compacted_items_leave_the_done_set_and_still_count_as_done(redis_url):
    # Given a batch of three items: two completed, one failed
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    ledger = Ledger(client)
    batch = "b20261206-000001-abcdef"
    ids = ["a", "b", "c"]
    ledger.create_batch(batch, {"created_at": 1.0}, [{"id": i} for i in ids], budget_usd=None)
    for item_id, to in (("a", ItemState.COMPLETED), ("b", ItemState.COMPLETED)):
        assert ledger.transition(batch, item_id, [ItemState.PENDING], to).ok
    assert ledger.transition(batch, "c", [ItemState.PENDING], ItemState.FAILED).batch_complete
    # When the completed ones are compacted: packed, then forgotten
    ledger.keep_compacted(batch, {i: {"id": i, "state": "completed"} for i in ids[:2]}, None)
    assert ledger.forget_compacted(batch, ids[:2]) == 2
    # Then their records and their ids in the done set are gone; the batch counts them done
    assert not client.exists(keys.item(batch, "a"), keys.item(batch, "b"))
    assert client.smembers(keys.batch_done(batch)) == {"c"}
    assert ledger.done_count(batch) == 3 and ledger.unfinished_items(batch, ["state"]) == []
    # And forgetting them again counts nothing twice
    assert ledger.forget_compacted(batch, ids[:2]) == 0 and ledger.done_count(batch) == 3
    # When the failed one is retried
    retried = ledger.transition(batch, "c", [ItemState.FAILED], ItemState.PENDING)
    # Then it alone is unfinished (the compacted ones, with no record of their own, are done)
    assert (retried.done, retried.total) == (2, 3)
    assert ledger.unfinished_items(batch, ["state"]) == [{"state": "pending", "id": "c"}]
    assert ledger.unfinished_items(batch, ["state"], limit=1, chunk=1) == [
        {"state": "pending", "id": "c"}
    ]
    # And its end completes the batch again
    assert ledger.transition(batch, "c", [ItemState.PENDING], ItemState.COMPLETED).batch_complete
    assert ledger.unfinished_items(batch, ["state"]) == []


def test_a_compacted_item_whose_kept_fields_lapsed_reads_as_completed(redis_url):
    # Given a batch of three items, one failed and kept whole, two with no record at all
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    ledger = Ledger(client)
    batch = "b20261206-000002-abcdef"
    ids = ["a", "b", "c"]
    client.rpush(keys.batch_items(batch), *ids)
    failed = {"id": "b", "state": "failed"}
    client.hset(keys.item(batch, "b"), mapping=failed)
    client.hset(keys.batch(batch), mapping={"item_count": "3"})
    # While the batch was never compacted, they are items with no record yet: left as they are
    assert ledger.items(batch) == [{}, failed, {}]
    assert list(ledger.iter_items(batch, chunk=2)) == [{}, failed, {}]
    # When the batch is one that was compacted (its packed items lapsed since, or never held
    # these two)
    ledger.update_batch(batch, {COMPACTED_AT: time.time()})
    # Then every reader of items finds them completed and marked lapsed, the failed one whole
    lapsed = [lapsed_record("a"), failed, lapsed_record("c")]
    assert lapsed[0] == {"id": "a", "state": "completed", LAPSED: "1"}
    assert ledger.items(batch) == lapsed
    assert list(ledger.iter_items(batch, chunk=2)) == lapsed
    assert list(ledger.iter_items(batch, fields=["state"], chunk=2)) == [
        {"state": "completed"}, {"state": "failed"}, {"state": "completed"},
    ]  # fmt: skip
    # And one still packed reads as kept, not as lapsed
    ledger.keep_compacted(batch, {"c": {"id": "c", "state": "completed", "row": "3"}}, None)
    assert ledger.items(batch)[2] == {"id": "c", "state": "completed", "row": "3"}


def test_the_compacted_batches_of_a_time_are_those_that_overlap_it(redis_url):
    # Given batches created and finished at various times (epoch s), some compacted
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    ledger = Ledger(client)
    batches = {
        "b-before": (100.0, 200.0, True),  # finished before the time begins
        "b-across": (100.0, 1_100.0, True),  # began before it, finished inside
        "b-inside": (1_200.0, 1_300.0, True),
        "b-running": (1_400.0, None, True),  # a retry of a compacted batch, unfinished
        "b-whole": (1_200.0, 1_300.0, False),  # not compacted: the index still has its own
        "b-after": (2_100.0, 2_200.0, True),  # created after the time ends
    }
    for batch_id, (created, finished, compacted) in batches.items():
        client.zadd(keys.BATCH_INDEX, {batch_id: created})
        client.hset(
            keys.batch(batch_id),
            mapping={
                "id": batch_id,
                "created_at": created,
                "finished_at": finished or "",
                COMPACTED_AT: 1.0 if compacted else "",
            },
        )
    # Then those of 1,000 to 2,000 are the compacted ones that overlap it, in one read
    assert sorted(ledger.compacted_batches_between(1_000.0, 2_000.0)) == [
        "b-across",
        "b-inside",
        "b-running",
    ]
