"""Submit an item: through the gates, intent recorded before the POST, never twice.

Order: cancelled? → 429 cool-down → (a scheduled batch: its window, its nightly budget,
`pipeline.schedules.gate`) → budget reservation → concurrency slot (for a place in the
provider's queue, with the turn: `pipeline.gates`) → start reservation
→ intent (state `submitting`) → POST → prediction id (state `running`). A gate that says
"not yet" reschedules the step: for a start, at the reserved time (keeping the slot); for a
slot, when one is freed (the step that frees it wakes this one). The budget saying "no" ends
the item `skipped`. A submit
found already in `submitting` (a redelivered task, a crash mid-POST) is never re-posted:
it goes to reconciliation.
"""

from __future__ import annotations

import contextlib
import logging
from urllib.parse import urlsplit, urlunsplit

from pipeline import keys
from pipeline.errors import (
    DurabilityError,
    LedgerError,
    ProviderAuthError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
    SubmitOutcomeUnknown,
)
from pipeline.flow.common import (
    batch_flag,
    cancel,
    could_not_fetch,
    fail,
    free_slot,
    give_turn_up,
    in_flight_limit,
    load,
    resume,
    storage_retry_in,
    wake,
)
from pipeline.flow.poll_timing import first_poll_delay_s
from pipeline.flow.watch import watch_step
from pipeline.ledger import Transition
from pipeline.processing_time import Line
from pipeline.records import Item, encode_value
from pipeline.remote import split_s3
from pipeline.runtime import Runtime
from pipeline.schedules.gate import ScheduledBatch, scheduled_gate
from pipeline.send_order import place_in_line
from pipeline.settings import PollingSettings
from pipeline.states import FINAL_STATES, ErrorKind, ItemState
from pipeline.steps import Next

log = logging.getLogger("lipdub.submit")

UNAVAILABLE_RETRY_S = 15.0
DURABILITY_RETRY_S = 60.0
FIRST_RECONCILE_S = 2.0
_SIGNATURE_MARKS = ("X-Amz-", "Signature=", "AWSAccessKeyId=")
"""A query holding one of these is a presigned URL's (SigV4 or SigV2): never stored."""


def submit(rt: Runtime, batch_id: str, item_id: str) -> list[Next]:
    """Run the submit step of one item; then, whatever it did, give up the turn to post to
    the provider's queue if the item held it (`pipeline.gates`): the next in line posts
    after this POST's answer, so the provider queues them in lipdub's order. (A step that
    raises keeps it until its lease ends, and so does one whose Redis fails just here: the
    turn only orders POSTs, so that failure does not make the step run again.)"""
    following = _submit(rt, batch_id, item_id)
    try:
        return following + give_turn_up(rt, keys.slot_member(batch_id, item_id))
    except LedgerError as err:
        log.warning("%s/%s: the turn is kept until its lease ends: %s", batch_id, item_id, err)
        return following


def _submit(rt: Runtime, batch_id: str, item_id: str) -> list[Next]:
    item = load(rt, batch_id, item_id)
    if item is None:
        return []
    if item.state is ItemState.SUBMITTING:
        return [Next("reconcile", batch_id, item_id)]
    if item.state is not ItemState.READY:
        # Woken for a slot it no longer needs: the wake-up is passed on as the step ends.
        return resume(rt, item, ItemState.SUBMITTING)
    batch = rt.ledger.batch(batch_id)
    if batch is None:
        return []  # the batch is gone (a stale task)
    if batch_flag(batch, "cancelled"):
        return cancel(rt, item, [ItemState.READY])
    cooling = rt.gates.cooling()
    if not cooling.passed:
        return [
            Next("submit", batch_id, item_id, rt.countdown(cooling.wait_s), "the 429 cool-down")
        ]
    scope = batch.budget_scope
    scheduled = ScheduledBatch.of(batch)
    if scheduled is not None:
        gate = scheduled_gate(rt, item, scope, scheduled)
        if gate.refusal:
            return fail(
                rt,
                item,
                [ItemState.READY],
                ErrorKind.BUDGET,
                gate.refusal,
                "Raise the schedule's nightly_budget_usd, then retry the skipped items.",
                to=ItemState.SKIPPED,
            )
        if not gate.passed:
            return list(gate.following)
    elif not rt.ledger.reserve(scope, batch_id, item_id, item.price_usd):
        budget = rt.ledger.budget(scope)
        committed = (budget["reserved_usd"] or 0) + (budget["spent_usd"] or 0)
        return fail(
            rt,
            item,
            [ItemState.READY],
            ErrorKind.BUDGET,
            f"over the budget: ${item.price_usd} more would pass ${budget['limit_usd']} "
            f"(${committed} already reserved or spent)",
            "Raise the budget (--budget or LIPDUB_BUDGET__BATCH_USD) and retry the skipped items.",
            to=ItemState.SKIPPED,
        )
    refusal = rt.ledger.durability_refusal()
    if refusal is not None:
        # Nothing is paid for on an intent that could be lost: wait for the operator.
        log.error("submit %s/%s waits: %s", batch_id, item_id, refusal)
        return [
            Next("submit", batch_id, item_id, rt.countdown(DURABILITY_RETRY_S), "a durable ledger")
        ]
    row = str(item.record.raw.get("row", ""))
    place = place_in_line(
        batch.created_at or rt.clock(),
        item.record.video_s,
        int(row) if row.isdigit() else 0,
        rt.settings.batch.send_order,
    )
    slot = rt.gates.acquire_slot(item.member, in_flight_limit(rt), place)
    if not slot.passed:
        ahead = wake(slot.wake)
        again = Next("submit", batch_id, item_id, rt.countdown(slot.wait_s), "a concurrency slot")
        return [*ahead, again]
    # One reservation per submit attempt: a redelivered task finds its own again.
    reservation = f"{item.member}:{item.record.submits + 1}"
    start = rt.gates.reserve_start(reservation)
    if not start.passed:
        return [
            Next("submit", batch_id, item_id, rt.countdown(start.wait_s), "the per-minute limit")
        ]
    video_url = _fetch_url(rt, item.record.video_ref)
    audio_url = _fetch_url(rt, item.record.audio_ref)
    intent_at = rt.clock()
    intent = {
        "intent_at": intent_at,
        "submits": item.record.submits + 1,
        "video_match": strip_query(video_url),
        "audio_match": strip_query(audio_url),
        # This attempt's outcome is not known yet (an earlier attempt's must not stand in).
        "outcome_unknown": "",
        "outcome_unknown_at": "",
        "created_by": "",
    }
    # Before the intent: reconcile tells lost submits apart by the time they were sent.
    rt.ledger.register_submit(item.member, intent_at)
    # Durable before the POST: a Redis host crash must not forget that this pair was sent.
    # (DurabilityError here: the intent may be written but nothing is posted; the step runs
    # again and, finding `submitting`, reconciles.)
    moved = rt.ledger.transition(
        batch_id,
        item_id,
        [ItemState.READY],
        ItemState.SUBMITTING,
        intent,
        when=item.fence,
        durable=True,
    )
    if not moved.ok:
        # Another delivery of this task won the intent and holds the slot now; leave it.
        if moved.state in {s.value for s in FINAL_STATES}:
            return free_slot(rt, item)
        return []
    item = item.updated(ItemState.SUBMITTING, intent)  # from here on, this attempt's view
    try:
        try:
            prediction = rt.provider.submit(
                video_url=video_url,
                audio_url=audio_url,
                sync_mode=item.record.sync_mode,
                webhook_url=rt.settings.provider.webhook_url,
            )
        finally:
            _anchor_start(rt, reservation)
    except ProviderRateLimited as err:
        wait_s = rt.gates.cool_down(err.retry_after_s)
        return _not_created(rt, item, "rate limited (429)", wait_s)
    except ProviderAuthError as err:
        return fail(
            rt,
            item,
            [ItemState.SUBMITTING],
            ErrorKind.AUTH,
            str(err),
            "Set WAVESPEED_API_KEY to a valid key, then retry the failed items.",
        )
    except ProviderRejected as err:
        if could_not_fetch(str(err)):
            return _fetch_failed(rt, item, str(err))
        return fail(
            rt,
            item,
            [ItemState.SUBMITTING],
            ErrorKind.INPUT,
            f"the provider refused the item: {err}",
            "Check the input media (a visible face, a readable audio track), then retry.",
        )
    except ProviderUnavailable as err:
        return _not_created(rt, item, str(err), UNAVAILABLE_RETRY_S)
    except SubmitOutcomeUnknown as err:
        unknown_at = rt.clock()
        unknown = {
            "outcome_unknown": str(err),
            # When the POST stopped being on its way: what tells it from other lost submits.
            "outcome_unknown_at": unknown_at,
            # A POST we stopped waiting for may still create its task a while later.
            "created_by": unknown_at
            + (rt.settings.polling.reconcile_grace_s if err.timed_out else 0.0),
        }
        rt.ledger.hold(
            lambda: rt.ledger.update_item(
                batch_id, item_id, ItemState.SUBMITTING, unknown, when=item.fence
            ),
            for_s=rt.settings.ledger.paid_write_hold_s,
        )
        with contextlib.suppress(LedgerError):  # only holds the queue ahead meanwhile
            rt.ledger.note_unknown_submit(item.member, unknown_at)
        return [Next("reconcile", batch_id, item_id, FIRST_RECONCILE_S)]
    answered_at = rt.clock()
    queued = slot.held > rt.settings.provider.max_concurrent
    following = accepted(rt, item, prediction.id, reconciled=False, queued=queued)
    if prediction.created_at is not None:
        # The prediction was created between our POST and its answer: a measure of the
        # provider's clock, by which reconcile later tells lost submits apart. Only a
        # measure: the id is recorded, so Redis trouble here must not fail the step.
        created_s = prediction.created_at.timestamp()
        try:
            rt.ledger.record_clock(created_s - answered_at, created_s - intent_at)
        except LedgerError as err:
            log.warning("%s/%s: the provider's clock was not recorded: %s", batch_id, item_id, err)
    return following


def _anchor_start(rt: Runtime, reservation: str) -> None:
    """Time the next window from this POST's end, whatever its outcome (the provider
    counted the start, if at all, before it answered). Only pacing: Redis trouble here is
    logged, and the start keeps its reserved time."""
    try:
        rt.gates.anchor_start(reservation)
    except LedgerError as err:
        log.warning("start %s not anchored at its answer: %s", reservation, err)


def running_fields(
    polling: PollingSettings,
    item: Item,
    prediction_id: str,
    now: float,
    *,
    reconciled: bool,
    learned: Line | None = None,
    scout: bool = False,
    queued: bool = False,
) -> dict[str, object]:
    """What an item records when its prediction is known: the id (with its earlier ones),
    its deadline and its first poll's delay (aimed at the `learned` processing time; early,
    for a `scout` while nothing is learned; later when `queued` behind the account's
    concurrency: `pipeline.flow.poll_timing`)."""
    ids = list(item.record.prediction_ids)
    if prediction_id not in ids:
        ids.append(prediction_id)
    video_s = item.record.video_s
    return {
        "prediction_id": prediction_id,
        "prediction_ids": ids,
        "attempts": len(ids),
        "submitted_at": now,
        "deadline_at": now + polling.item_deadline_s,
        "poll_interval_s": first_poll_delay_s(
            polling, video_s, learned, scout=scout, queued=queued
        ),
        "first_look": "learned" if learned else "scout" if scout else "expected",
        "queued": queued,
        "reconciled": reconciled,
    }


def accepted(
    rt: Runtime, item: Item, prediction_id: str, *, reconciled: bool, queued: bool = False
) -> list[Next]:
    """Record the prediction id (the item is now paid for) and schedule its first poll
    (`queued`: sent beyond the account's concurrency, so it waits for a start first).

    The id exists only in this process until it is written, so the writes are held through
    a Redis restart or failover (`ledger.paid_write_hold_s`) instead of failing the step:
    a step run again could only reconcile, and the provider's list cannot always say which
    of several lost submits a prediction belongs to."""
    polling = rt.settings.polling
    model, sync_mode = rt.settings.provider.model_path, item.record.sync_mode
    learned = rt.times.line(model, sync_mode) if polling.learn else None
    # Scouts only without the account's watch: with it, every end is seen within seconds.
    scout = (
        polling.learn
        and not polling.watch_every_s
        and learned is None
        and rt.times.scout(model, sync_mode)
    )
    fields = running_fields(
        polling,
        item,
        prediction_id,
        rt.clock(),
        reconciled=reconciled,
        learned=learned,
        scout=scout,
        queued=queued,
    )
    delay_s = float(str(fields["poll_interval_s"]))
    hold_s = rt.settings.ledger.paid_write_hold_s
    # Before the transition: a webhook may arrive as soon as the item is running.
    rt.ledger.hold(lambda: rt.ledger.index_prediction(prediction_id, item.member), for_s=hold_s)
    try:
        moved = rt.ledger.hold(
            lambda: rt.ledger.transition(
                item.batch_id,
                item.id,
                [ItemState.SUBMITTING],
                ItemState.RUNNING,
                fields,
                when=item.fence,
                durable=True,
            ),
            for_s=hold_s,
        )
    except DurabilityError as err:
        # Written, not yet known durable. Its first poll goes on: if a host crash loses the id,
        # the durable intent brings the item back to reconcile, which finds the prediction.
        log.warning("%s/%s: the prediction id is not yet durable: %s", item.batch_id, item.id, err)
        moved = Transition(ok=True, state=ItemState.RUNNING.value)
    if not moved.ok and not _written_by_us(rt, item, fields):
        return []
    rt.ledger.hold(lambda: rt.ledger.settle_submit(item.member), for_s=hold_s)
    return [Next("poll", item.batch_id, item.id, rt.countdown(delay_s)), *watch_step(rt)]


def _written_by_us(rt: Runtime, item: Item, fields: dict[str, object]) -> bool:
    """True when the item holds exactly these running fields: a held write that Redis applied
    but whose answer the outage lost, so the try after it found the item already moved.
    (Another step's adoption of the same prediction has its own `submitted_at`: its poll is
    already scheduled.)"""
    record = rt.ledger.item(item.batch_id, item.id)
    return (
        record.get("state") == ItemState.RUNNING.value
        and record.get("prediction_id") == fields["prediction_id"]
        and record.get("submitted_at") == encode_value(fields["submitted_at"])
    )


def _not_created(rt: Runtime, item: Item, why: str, wait_s: float) -> list[Next]:
    """This attempt certainly created nothing: back to ready, try again later."""
    moved = rt.ledger.transition(
        item.batch_id,
        item.id,
        [ItemState.SUBMITTING],
        ItemState.READY,
        {"last_submit_error": why},
        when=item.fence,
    )
    if not moved.ok:
        return []  # a newer attempt (or the item's end) owns the slot now
    rt.ledger.settle_submit(item.member)
    again = Next("submit", item.batch_id, item.id, rt.countdown(wait_s), f"not created: {why}")
    return [*free_slot(rt, item), again]


def _fetch_failed(rt: Runtime, item: Item, error: str) -> list[Next]:
    """The provider could not download the inputs: try again later, for `storage.retry_for_s`
    (S3 may be away for a while), then fail with the storage to blame."""
    countdown_s = storage_retry_in(rt, item, "fetch")
    if countdown_s is not None:
        return _not_created(
            rt, item, f"the provider could not fetch the inputs: {error}", countdown_s
        )
    return fail(
        rt,
        item,
        [ItemState.SUBMITTING],
        ErrorKind.STORAGE,
        f"the provider could not download the inputs: {error}",
        "Check that the bucket's presigned URLs are reachable from the provider "
        "(LIPDUB_STORAGE__ENDPOINT_URL), then retry the failed items.",
    )


def _fetch_url(rt: Runtime, ref: str) -> str:
    """A URL the provider can fetch: presigned for s3:// (covering the queue wait), else as is."""
    if not ref.startswith("s3://"):
        return ref
    bucket, key = split_s3(ref)
    return rt.storage.presign(key, bucket=bucket)


def strip_query(url: str) -> str:
    """A URL without its query (a presigned URL's signature changes; its object does not).

    >>> strip_query("http://s3.local/b/media/x.mp4?X-Amz-Signature=abc")
    'http://s3.local/b/media/x.mp4'
    >>> strip_query("http://s3.local/b/a.wav?AWSAccessKeyId=k&Signature=abc&Expires=1")
    'http://s3.local/b/a.wav'
    >>> strip_query("https://cdn.example/a.wav?v=2")
    'https://cdn.example/a.wav?v=2'
    """
    parts = urlsplit(url)
    if not parts.query or not any(mark in parts.query for mark in _SIGNATURE_MARKS):
        return url
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
