"""Prepare an item: decide who pays for its pair, then put its inputs in the bucket.

A pair (video, audio, sync_mode, model) already completed, in this batch or an earlier one,
is not paid for again: its output is copied inside the bucket and the item completes at no
cost. A pair another item is paying for right now makes this item wait for it. Otherwise the
item claims the pair and names where the provider fetches its inputs: the bucket's copy of a
local file (put there by whoever started the batch, `pipeline.uploads`: a worker never reads
that machine's files), or the `s3://` / `https://` input as the manifest gives it.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from pathlib import Path

from pipeline.errors import InputNotUploaded, StorageError
from pipeline.flow.common import (
    batch_flag,
    cancel,
    end,
    fail,
    load,
    paid_for,
    resume,
    storage_retry_in,
)
from pipeline.manifest import InputRef
from pipeline.records import Item
from pipeline.runtime import Runtime
from pipeline.states import ErrorKind, ItemState
from pipeline.steps import Next
from pipeline.storage import output_key
from pipeline.sync_modes import within_one_frame
from pipeline.uploads import uploader_stopped

log = logging.getLogger("lipdub.prepare")

WAIT_FOR_OWNER_S = 5.0
WAIT_FOR_UPLOAD_S = 5.0
RESEND_HINT = (
    "Run the manifest again (lipdub run puts what is missing in the bucket), or run "
    "`lipdub retry-failed` on a machine that has the file."
)


def prepare(rt: Runtime, batch_id: str, item_id: str) -> list[Next]:
    """Run the prepare step of one item. Safe to run twice: only a pending item is touched."""
    item = load(rt, batch_id, item_id)
    if item is None:
        return []
    if item.state is not ItemState.PENDING:
        return resume(rt, item, ItemState.PENDING)
    batch = rt.ledger.batch(batch_id)
    if batch_flag(batch, "cancelled"):
        return cancel(rt, item, [ItemState.PENDING])
    if item.record.prepare_started_at is None:
        # The end of the item's wait in our queue (the report's timeline starts here).
        rt.ledger.update_item(
            batch_id, item_id, ItemState.PENDING, {"prepare_started_at": rt.clock()}
        )
    try:
        waiting = _await_inputs(rt, item)
    except StorageError as err:
        return _storage_trouble(rt, item, err)
    if waiting is not None:
        return waiting
    force = batch_flag(batch, "force")
    claim = rt.ledger.claim(item.record.identity, item.member, force=force)
    if claim.kind == "reuse":
        return _reuse(rt, item, claim.owner, claim.output_key)
    if claim.kind == "wait":
        return _wait(rt, item, claim.owner)
    try:
        fields = {
            "video_ref": _put(rt, item, "video"),
            "audio_ref": _put(rt, item, "audio"),
        }
    except InputNotUploaded as err:
        return fail(rt, item, [ItemState.PENDING], ErrorKind.INPUT, str(err), RESEND_HINT)
    fields["uploaded_at"] = str(rt.clock())
    moved = rt.ledger.transition(batch_id, item_id, [ItemState.PENDING], ItemState.READY, fields)
    return [Next("submit", batch_id, item_id)] if moved.ok else []


def _storage_trouble(rt: Runtime, item: Item, err: StorageError) -> list[Next]:
    """S3 did not answer whether the item's files are there: ask again later, for
    `storage.retry_for_s`, then fail clearly."""
    countdown_s = storage_retry_in(rt, item, "upload")
    if countdown_s is None:
        return fail(
            rt,
            item,
            [ItemState.PENDING],
            ErrorKind.STORAGE,
            str(err),
            "Check the bucket settings (LIPDUB_STORAGE__*) and that S3 is reachable, then retry the failed items.",
        )
    return [Next("prepare", item.batch_id, item.id, countdown_s, "storage trouble, retried")]


def _await_inputs(rt: Runtime, item: Item) -> list[Next] | None:
    """None when the item's local files are in the bucket; else what to do meanwhile: wait
    while the start that uploads them is alive, fail (saying why) when it could not send
    one or stopped before it did. Checked before the pair is claimed, so no item waits on a
    claim whose inputs will never come."""
    raw = item.record.raw
    local = [
        (name, data)
        for name in ("video", "audio")
        if (data := item.record.media(name)) is not None and data.get("kind") == "local"
    ]
    if not local or raw.get("inputs_ready") == "1":
        return None
    if raw.get("upload_error"):
        kind = ErrorKind(raw.get("upload_error_kind") or ErrorKind.STORAGE.value)
        return fail(rt, item, [ItemState.PENDING], kind, raw["upload_error"], RESEND_HINT)
    missing = [
        (name, data)
        for name, data in local
        if not data.get("stored") or not rt.storage.exists(_key_of(str(data["stored"])))
    ]
    if not missing:
        return None  # its start sent the files, then stopped before it said so
    batch = rt.ledger.batch(item.batch_id)
    raw_batch = batch.raw if batch is not None else {}
    if raw_batch.get("uploading") == "1" and not uploader_stopped(raw_batch, rt.clock()):
        countdown = rt.countdown(WAIT_FOR_UPLOAD_S)
        return [Next("prepare", item.batch_id, item.id, countdown, "its inputs, being uploaded")]
    name, data = missing[0]
    return fail(
        rt,
        item,
        [ItemState.PENDING],
        ErrorKind.INPUT,
        f"the {name} {Path(str(data['location'])).name} is not in the bucket: the start that "
        "uploads it stopped before it was sent",
        RESEND_HINT,
    )


def _key_of(stored: str) -> str:
    """The key of an `s3://bucket/key` location."""
    return stored.split("/", 3)[3]


def _put(rt: Runtime, item: Item, name: str) -> str:
    """Where the provider will fetch this input from: `s3://bucket/key` or the https URL."""
    data = item.record.media(name)
    if data is None:
        raise StorageError(f"item {item.id} has no planned {name}")
    ref = InputRef(data["kind"], data["location"])
    if ref.kind in ("https", "http", "s3"):
        return ref.location
    stored = str(data.get("stored") or "")
    if not stored:
        raise InputNotUploaded(
            f"the {name} {ref.name} is a local file that was not put in the bucket when the "
            "batch started (workers never read the starter's files)"
        )
    return stored


def _reuse(rt: Runtime, item: Item, owner: str, source_key: str) -> list[Next]:
    """Complete the item with the output of an earlier payment for the same pair."""
    target = output_key(
        rt.storage.prefix, item.batch_id, item.record.output, item.record.output_folder
    )
    if not source_key or not rt.storage.exists(source_key):
        # The earlier output is gone: forget it and pay for the pair again.
        rt.ledger.forget_content(item.record.identity)
        return [Next("prepare", item.batch_id, item.id)]
    owner_batch, _, owner_item = owner.partition(":")
    earlier = rt.ledger.item(owner_batch, owner_item) if owner_item else {}
    earlier_s = float(earlier.get("output_s") or 0)
    expected_s = item.record.expected_output_s
    if earlier_s and not within_one_frame(earlier_s, expected_s):
        # Checked as a collected output is: an output of another length is not this item's
        # (the pair's record is wrong), so it is not passed off as one.
        log.warning(
            "%s: the output of %s lasts %.3f s, not the %.3f s this item's sync mode gives; "
            "paying for the pair again instead of reusing it",
            item.member,
            owner,
            earlier_s,
            expected_s,
        )
        rt.ledger.forget_content(item.record.identity)
        return [Next("prepare", item.batch_id, item.id)]
    rt.storage.copy(source_key, target)
    fields = {
        "output_key": target,
        "reused_from": owner,
        "output_s": earlier.get("output_s", ""),
        "billable_s_final": "0",
        "cost_usd": "0",
    }
    return end(rt, item, [ItemState.PENDING], ItemState.COMPLETED, fields, cost_usd=Decimal(0))


def _wait(rt: Runtime, item: Item, owner: str) -> list[Next]:
    """Another item pays for this pair: wait for it, or take over if it ended unpaid."""
    owner_batch, _, owner_item = owner.partition(":")
    record = rt.ledger.item(owner_batch, owner_item)
    state = record.get("state", "")
    if state != ItemState.COMPLETED and paid_for(state, record.get("error_kind", "")):
        return fail(
            rt,
            item,
            [ItemState.PENDING],
            ErrorKind.UNRESOLVED_SUBMIT,
            f"the same pair was already submitted by {owner}, which ended {state} "
            f"({record.get('error_kind')}) holding a prediction that may be paid for",
            f"Retry {owner} (it polls or collects its prediction again at no charge), "
            "or start this batch with force to pay for the pair again.",
            to=ItemState.NEEDS_ATTENTION,
        )
    if not record or state in (ItemState.FAILED, ItemState.CANCELLED, ItemState.SKIPPED):
        rt.ledger.release_claim(item.record.identity, owner)
        return [Next("prepare", item.batch_id, item.id)]
    rt.ledger.update_item(item.batch_id, item.id, ItemState.PENDING, {"waiting_on": owner})
    paying = f"{owner}, which pays for the same pair"
    return [Next("prepare", item.batch_id, item.id, rt.countdown(WAIT_FOR_OWNER_S), paying)]
