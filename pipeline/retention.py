"""Retention: a finished batch's completed items shrink to what must outlive the batch.

A batch's items are its working record while it runs (about 4-5 KB each: media facts, refs,
timestamps, the reasons of every wait). Once the batch has been finished for
`ledger.retention_days`, its full report is in the bucket, and each completed item keeps only
what "never pay twice", the audit and a later look need: its id and row, state, the pair's
identity, its prediction ids, its output key, length and cost (`KEPT`), packed with the batch's
others (`pipeline.ledger.kept`: about 120 bytes of Redis per item). Items that did not complete
are kept whole: `retry-failed` needs their inputs. The batch record, its counts and its budget
stay; `lipdub report` of a compacted batch reads the report the bucket holds. Compacting twice
changes nothing.

A compacted item then lives only as long as something can ask for it: while its pair's claim
says the pair is paid for (`worker.content_ttl_days` after its output was collected: a later
item reusing the output checks its length against the item), and at least until the provider's
history of its predictions has lapsed (`keys.CLAIM_TTL_S` after the batch finished: until then
an audit compares that history with the items' prediction ids); the batch's packed items lapse
with the latest of them. After that only its id in the batch's item list holds it (about 10
bytes; the batch counts its compacted items rather than keep their ids in its done set), so a
ledger's history grows by little with every item ever run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from pipeline import keys
from pipeline.ledger import Ledger
from pipeline.ledger.kept import COMPACTED_AT, LAPSED
from pipeline.records import BatchRecord
from pipeline.states import ItemState

KEPT = (
    "id",
    "row",
    "state",
    "identity",
    "prediction_id",
    "prediction_ids",
    "output_key",
    "output_s",
    "cost_usd",
    "billable_s",
    "billable_s_final",
)
"""What a completed item keeps once its batch is compacted (`output_s`: a later item that
reuses the output checks its length against this; its cost and billed seconds: the books)."""
DELETE_CHUNK = 500
"""Items forgotten per command (their records deleted, their ids out of the done set) once
their batch's compacted items are written."""
COMPACTED = COMPACTED_AT
"""The batch field saying when its items were compacted (epoch s)."""
HISTORY_MARGIN_S = 300.0
"""How long past the provider's 7-day history a compacted item's prediction stays in the
prediction index: far more than the clock skew lipdub allows between the provider and us
(`provider.clock_skew_s`, 5 s). (A provider whose list shows more than 7 days is covered by
the audit reading compacted batches' packed items, not by this.)"""


def is_compacted(record: Mapping[str, str]) -> bool:
    """Whether an item record is what compaction kept of it (`KEPT`), or what is known of it
    once that has lapsed (`kept.lapsed_record`), not the whole record.

    >>> is_compacted({"id": "a", "state": "completed"}), is_compacted({"id": "a", "video": "{}"})
    (True, False)
    >>> is_compacted({"id": "a", "state": "completed", "lapsed": "1"})
    True
    """
    return bool(record) and set(record) <= {*KEPT, LAPSED}


@dataclass(frozen=True)
class Compacted:
    batch_id: str
    items: int


def due(batch: BatchRecord, *, now: float, older_than_s: float) -> bool:
    """Whether a batch may be compacted: finished, its report written, long enough ago, not
    compacted since it last finished (a retry of its failed items finishes it again: those
    are compacted then too).

    >>> record = BatchRecord.decode({"id": "b", "state": "finished", "finished_at": "100",
    ...     "report_key": "reports/b/report.json"})
    >>> due(record, now=1000.0, older_than_s=600), due(record, now=500.0, older_than_s=600)
    (True, False)
    >>> compacted = BatchRecord.decode({**record.raw, COMPACTED: "900"})
    >>> again = BatchRecord.decode({**compacted.raw, "finished_at": "950"})
    >>> due(compacted, now=2000.0, older_than_s=600), due(again, now=2000.0, older_than_s=600)
    (False, True)
    """
    compacted_at = float(batch.raw.get(COMPACTED) or 0)
    return (
        batch.finished
        and bool(batch.report_key)
        and batch.finished_at is not None
        and now - batch.finished_at >= older_than_s
        and compacted_at < batch.finished_at
    )


def compact(ledger: Ledger, batch_id: str, *, now: float) -> Compacted:
    """Shrink the completed items of one batch to `KEPT`, packed together
    (`pipeline.ledger.kept`) to lapse with the latest of their pairs' claims (at the earliest
    `keys.CLAIM_TTL_S` after the batch finished), then mark the batch compacted.

    The packed items are written (in one transaction) before the item records are deleted,
    so a compaction stopped part way leaves every item readable, and running it again packs
    the same items (reading the ones packed already). An item whose time is over already
    (its claim held by another item, the provider's history lapsed) is left out. The items
    leave the batch's done set as their records go (`Ledger.forget_compacted`: the batch
    counts them instead), so what outlives them is their id in the item list.

    The prediction index entries of the items' predictions go too once the provider's list no
    longer shows them (`keys.PROVIDER_HISTORY_S` and `HISTORY_MARGIN_S` after the item's last
    submit: on the day compaction is due by default, all of them), so no reconcile can meet
    them again; the audit of another batch whose time overlaps this one's finds them among
    this batch's packed items instead (`pipeline.audit`). Younger ones (a batch compacted
    early, `lipdub prune --older-than`) keep theirs until it lapses (`keys.CLAIM_TTL_S`)."""
    batch = ledger.batch(batch_id)
    history_until = (batch.finished_at if batch and batch.finished_at else now) + keys.CLAIM_TTL_S
    kept: dict[str, dict[str, str]] = {}
    completed: list[str] = []
    shrunk = 0
    latest: float | None = now  # None once an item's claim has no expiry
    out_of_history: dict[str, str] = {}  # prediction id -> its item, for the index
    for record in ledger.iter_items(batch_id):
        if record.get("state") != ItemState.COMPLETED.value:
            continue
        item_id = record.get("id", "")
        completed.append(item_id)
        if record.get(LAPSED):
            continue  # compacted before, and its kept fields lapsed since: nothing to keep
        shrunk += not is_compacted(record)  # its own record still there (else packed already)
        if _out_of_history(record, now):
            member = keys.slot_member(batch_id, item_id)
            for prediction_id in json.loads(record.get("prediction_ids") or "[]"):
                out_of_history[str(prediction_id)] = member
        claim_left_s = ledger.claim_left_s(record.get("identity", ""), f"{batch_id}:{item_id}")
        until = None if claim_left_s is None else max(history_until, now + claim_left_s)
        if until is not None and until <= now:
            continue
        kept[item_id] = {name: record[name] for name in KEPT if record.get(name)}
        latest = None if until is None or latest is None else max(latest, until)
    ledger.keep_compacted(batch_id, kept, latest)
    for start in range(0, len(completed), DELETE_CHUNK):
        ledger.forget_compacted(batch_id, completed[start : start + DELETE_CHUNK])
    ledger.update_batch(batch_id, {COMPACTED: now})
    # Last: from here an audit reads the packed items for them (a compaction stopped before
    # leaves the entries to lapse by themselves).
    ledger.forget_predictions(out_of_history)
    return Compacted(batch_id, shrunk)


def _out_of_history(record: Mapping[str, str], now: float) -> bool:
    """Whether the provider's list no longer shows any of this item's predictions: its last
    submit was answered longer ago than the provider's history and a margin. Read from the
    item's own record (a packed one keeps no submit time: its entries lapse by themselves)."""
    if is_compacted(record):
        return False
    try:
        submitted_at = float(record.get("submitted_at") or "")
    except ValueError:
        return False
    return submitted_at + keys.PROVIDER_HISTORY_S + HISTORY_MARGIN_S < now


def lapsed(ledger: Ledger, batch_id: str, item_id: str) -> bool:
    """Whether an item's record is gone because its batch was compacted and it lapsed since
    (its report in the bucket still has it)."""
    batch = ledger.batch(batch_id)
    return (
        batch is not None
        and bool(batch.raw.get(COMPACTED))
        and not ledger.item(batch_id, item_id)
        and item_id in ledger.item_ids(batch_id)
    )


def finished(ledger: Ledger, batch_id: str, finished_at: float) -> None:
    """A batch finished (again): compact it `retention_days` after this."""
    ledger.redis.zadd(keys.TO_COMPACT, {batch_id: finished_at})


def compact_due(
    ledger: Ledger, *, now: float, older_than_s: float, limit: int = 20
) -> Iterator[Compacted]:
    """Compact up to `limit` batches that finished at least `older_than_s` ago (those
    `finished` names; `every_batch` for batches recorded before that was kept)."""
    client = ledger.redis
    found = client.zrangebyscore(keys.TO_COMPACT, "-inf", now - older_than_s, 0, limit)
    for batch_id in [str(b) for b in found]:
        batch = ledger.batch(batch_id)
        if batch is not None and due(batch, now=now, older_than_s=older_than_s):
            yield compact(ledger, batch_id, now=now)
        client.zrem(keys.TO_COMPACT, batch_id)


def every_batch(ledger: Ledger, *, now: float, older_than_s: float) -> Iterator[Compacted]:
    """Compact every batch that is `due` (`lipdub prune`: all of the ledger's batches)."""
    for batch_id in ledger.batch_ids(limit=None):
        batch = ledger.batch(batch_id)
        if batch is not None and due(batch, now=now, older_than_s=older_than_s):
            yield compact(ledger, batch_id, now=now)
            ledger.redis.zrem(keys.TO_COMPACT, batch_id)
