"""How long a compacted item stays in Redis (`pipeline.retention`): as long as its pair's
claim says the pair is paid for, and at least until the provider's history of the batch has
lapsed; on the real parts (Redis, S3, the sandbox over HTTP; one worker's steps)."""

from __future__ import annotations

import time

import pytest

from pipeline import keys
from pipeline.audit import audit_batch
from pipeline.provider.client import ProviderClient
from pipeline.retention import KEPT, compact, lapsed
from pipeline.states import ItemState
from tests.integration.stack import plan, write_manifest
from tests.integration.test_durability import Steps, stepped_stack

pytestmark = pytest.mark.slow

ROWS = [("kept", 1.0, 0.6, "cut_off"), ("overtaken", 1.0, 0.7, "cut_off")]
DAY_S = 86_400


@pytest.mark.parametrize("finished_days_ago", [0, 9])
def test_a_compacted_item_lives_as_long_as_its_pairs_claim_and_the_providers_history(
    tmp_path, redis_url, s3_server, bucket, finished_days_ago
):
    # Given a finished batch of two completed items, the second one's pair since paid for
    # again by another item (a forced re-run): its claim names that item now
    with stepped_stack(tmp_path, redis_url, s3_server.url, bucket) as s:
        settings = s.settings
        batch_id = s.control.start(plan(write_manifest(tmp_path / "m", ROWS), settings))
        s.loop.run()
    ledger, client = s.rt.ledger, s.rt.ledger.redis
    assert set(s.states(batch_id).values()) == {"completed"}
    item = {name: keys.item(batch_id, name) for name, *_ in ROWS}
    identity = {name: client.hget(item[name], "identity") for name, *_ in ROWS}
    claim = {name: keys.content(identity[name]) for name, *_ in ROWS}
    client.hset(claim["overtaken"], "owner", "b-later:overtaken")
    finished_at = time.time() - finished_days_ago * DAY_S
    ledger.update_batch(batch_id, {"finished_at": finished_at})
    # When it is compacted
    compact(ledger, batch_id, now=time.time())
    # Then the items' own records are gone: what they keep is packed with the batch, for as
    # long as the latest of their pairs' claims (30 days)
    assert not client.exists(item["kept"]) and not client.exists(item["overtaken"])
    packed = keys.batch_kept(batch_id)
    assert client.ttl(claim["kept"]) > 29 * DAY_S
    assert abs(client.ttl(packed) - client.ttl(claim["kept"])) <= 5
    kept = ledger.item(batch_id, "kept")
    assert kept["state"] == "completed" and kept["identity"] == identity["kept"]
    assert set(kept) <= set(KEPT) and kept["output_key"] and kept["prediction_id"]
    # And the other is kept while the provider's history of the batch lasts (8 days after the
    # batch finished: an audit may still compare it); compacted later than that, it is left out
    history_left_s = finished_at + keys.CLAIM_TTL_S - time.time()
    if history_left_s > 0:
        assert ledger.item(batch_id, "overtaken")["state"] == "completed"
        assert not lapsed(ledger, batch_id, "overtaken")
    else:
        assert ledger.item(batch_id, "overtaken") == {}
        assert lapsed(ledger, batch_id, "overtaken")
    assert not lapsed(ledger, batch_id, "kept") and not lapsed(ledger, batch_id, "unknown")
    # And they left the batch's done set: the batch counts them as done instead
    assert not client.exists(keys.batch_done(batch_id)) and ledger.done_count(batch_id) == 2
    # And every reader of items finds the packed ones as they were
    assert [r.get("id") for r in ledger.items(batch_id)] == [
        r.get("id") for r in ledger.iter_items(batch_id)
    ]
    assert ledger.fields_of([(batch_id, "kept")], ["state", "output_s"]) == [
        {"state": "completed", "output_s": kept["output_s"]}
    ]
    # And compacting again shrinks nothing more and keeps the same
    assert compact(ledger, batch_id, now=time.time()).items == 0
    assert ledger.item(batch_id, "kept") == kept and ledger.done_count(batch_id) == 2


def finished_days_ago(s: Steps, batch_id: str, days: int) -> float:
    """Date a finished batch of ROWS back by its records (its items' submits, its creation,
    its finish, its place in the batch index): what `days` of waiting would leave. Returns
    its finish (epoch s)."""
    ledger = s.rt.ledger
    finished_at = time.time() - days * DAY_S
    for name, *_ in ROWS:
        ledger.redis.hset(keys.item(batch_id, name), "submitted_at", finished_at - 10)
    ledger.update_batch(batch_id, {"created_at": finished_at - 60, "finished_at": finished_at})
    ledger.redis.zadd(keys.BATCH_INDEX, {batch_id: finished_at - 60})
    return finished_at


def test_compaction_forgets_the_index_of_predictions_the_provider_no_longer_lists(
    tmp_path, redis_url, s3_server, bucket
):
    # Given two finished batches run at the same time: the first's items submitted 9 days
    # ago by their records (past the provider's 7-day history), the second's just now
    with stepped_stack(tmp_path, redis_url, s3_server.url, bucket) as s:
        settings = s.settings
        old = s.control.start(plan(write_manifest(tmp_path / "old", ROWS), settings))
        s.loop.run()
        young = s.control.start(
            plan(write_manifest(tmp_path / "young", [("late", 1.2, 0.9, "cut_off")]), settings)
        )
        s.loop.run()
        ledger = s.rt.ledger
        assert set(s.states(old).values()) == {"completed"} == set(s.states(young).values())
        predictions = {r["id"]: r["prediction_id"] for r in ledger.items(old)}
        finished_days_ago(s, old, 9)
        # When both are compacted
        compact(ledger, old, now=time.time())
        compact(ledger, young, now=time.time())
        # Then the first's predictions left the prediction index (no reconcile can meet
        # them again); the second's, still in the provider's history, stay
        assert ledger.owners(list(predictions.values())) == {}
        young_prediction = ledger.item(young, "late")["prediction_id"]
        assert ledger.owners([young_prediction]) == {young_prediction: f"{young}:late"}
        # And the first's packed items still hold them
        assert {ledger.item(old, n)["prediction_id"] for n, *_ in ROWS} == set(predictions.values())
        # And an audit of the second batch over the time both ran, while the provider still
        # lists the first's predictions (here: they are not really 9 days old), finds them
        # among the first batch's packed items: none is reported as no item's
        ledger.update_batch(young, {"created_at": ledger.batch(old).created_at})
        provider = ProviderClient.from_settings(settings.provider)
        try:
            audited = audit_batch(
                ledger, provider, young, model=settings.provider.model_path, now=time.time()
            )
        finally:
            provider.close()
    assert audited.predictions == 3
    assert audited.unattributed == ()


def test_a_prediction_of_a_compacted_batch_is_not_adopted_once_the_index_forgot_it(
    tmp_path, redis_url, s3_server, bucket
):
    # Given a compacted batch whose items were submitted 9 days ago by their records, so
    # compaction forgot their predictions' index entries (the provider no longer lists them)
    with stepped_stack(tmp_path, redis_url, s3_server.url, bucket) as s:
        settings = s.settings
        old = s.control.start(plan(write_manifest(tmp_path / "old", ROWS), settings))
        s.loop.run()
        ledger = s.rt.ledger
        nine_days_ago = finished_days_ago(s, old, 9)
        compact(ledger, old, now=time.time())
        theirs = ledger.item(old, "kept")["prediction_id"]
        assert ledger.owners([theirs]) == {}
        # And an item of a new batch that needs attention (its submit's answer lost)
        new = s.control.start(
            plan(write_manifest(tmp_path / "new", [("lost", 1.2, 0.9, "cut_off")]), settings)
        )
        assert ledger.transition(new, "lost", [ItemState.PENDING], ItemState.NEEDS_ATTENTION).ok
        # When a person adopts the old prediction for it (a provider whose history is longer
        # than documented still answers for it), with its creation time or without one
        refused = []
        for created_at in (nine_days_ago - 5, None):
            with pytest.raises(ValueError) as error:
                s.control.adopt(new, "lost", theirs, created_at=created_at)
            refused.append(str(error.value))
        # Then both are refused, naming its owner and what to do instead, and nothing was
        # claimed or moved
        owner = f"prediction {theirs} is {old}:kept's (a compacted batch), not lost's: "
        assert all(r.startswith(owner) and "lost's evidence" in r for r in refused), refused
        assert len(refused) == 2
        assert ledger.owners([theirs]) == {}
        assert ledger.item(new, "lost")["state"] == "needs_attention"
        # But a prediction created at a time no compacted batch covers is looked for only there
        s.control.adopt(new, "lost", theirs, created_at=time.time())
        assert ledger.item(new, "lost")["state"] == "running"
