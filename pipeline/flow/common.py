"""Helpers every item step shares: reading an item, ending it, and what an error means."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from enum import StrEnum

from pipeline import backoff, keys, retention
from pipeline.records import BatchRecord, Item
from pipeline.runtime import Runtime
from pipeline.states import FINAL_STATES, ErrorKind, ItemState
from pipeline.steps import Next

# Provider task errors that a new attempt can cure (the provider's own trouble), and those
# that only a different input can (contract.md: no face, unreadable media).
_TRANSIENT = re.compile(
    r"\b5\d\d\b|retry|temporar|timed? ?out|unavailable|overload|worker lost|internal|cancel|delet",
    re.I,
)
_INPUT = re.compile(
    r"face|decode|invalid|unsupported|corrupt|not a readable|no (video|audio)", re.I
)


_FETCH_FAILED = re.compile(r"(fail\w*|unable|could ?n.t) to (download|fetch|access)", re.I)
DOWNLOAD_FAILED_CODE = 1402
"""WaveSpeed's "Media Access Failed": the provider could not fetch an input URL."""


class Failure(StrEnum):
    """What a failed prediction says about what to do next."""

    FETCH = "fetch"
    """The provider could not download our inputs: storage trouble, retried for a while."""
    TRANSIENT = "transient"
    """The provider's own trouble: submit again while attempts are left."""
    INPUT = "input"
    """The input itself is refused: only a different input helps."""


def classify_failure(code: int | None, error: str) -> Failure:
    """Classify a failed prediction by its `code` (WaveSpeed's docs/error-codes: 1402 media
    access failed, other 1xxx the input, 5xxx the service), by its text only without one.

    >>> classify_failure(1402, "Failed to download video from the provided URL.")
    <Failure.FETCH: 'fetch'>
    >>> classify_failure(5003, "Service Unavailable")
    <Failure.TRANSIENT: 'transient'>
    >>> classify_failure(1403, "Please retry with a clear face")
    <Failure.INPUT: 'input'>
    >>> classify_failure(None, "failed to download audio: ConnectError")
    <Failure.FETCH: 'fetch'>
    """
    if code == DOWNLOAD_FAILED_CODE:
        return Failure.FETCH
    if code is not None and 5000 <= code < 6000:
        return Failure.TRANSIENT
    if code is not None and 1000 <= code < 2000:
        return Failure.INPUT
    if could_not_fetch(error):
        return Failure.FETCH
    return Failure.TRANSIENT if is_transient(error) else Failure.INPUT


def could_not_fetch(error: str) -> bool:
    """True when an error says the provider could not download an input: our storage (or
    the way to it) failed, not the media.

    >>> could_not_fetch("failed to download video: ConnectError")
    True
    >>> could_not_fetch("video has no face")
    False
    """
    return bool(_FETCH_FAILED.search(error))


def is_transient(error: str) -> bool:
    """True when a failed prediction's error says the provider, not the input, was at fault.

    >>> is_transient("GPU worker lost during inference (HTTP 503). Please retry.")
    True
    >>> is_transient("No face detected in the video. Use a video with a clearly visible face.")
    False
    """
    if _INPUT.search(error):
        return False
    return bool(_TRANSIENT.search(error))


def load(rt: Runtime, batch_id: str, item_id: str) -> Item | None:
    """The item, or None when the ledger has no such item (a stale task)."""
    record = rt.ledger.item(batch_id, item_id)
    return Item.of(batch_id, record) if record else None


def batch_flag(batch: BatchRecord | None, name: str) -> bool:
    """A yes/no field of the batch record (False for a batch that is gone). A step reads its
    batch's record once and asks it what it needs."""
    return batch is not None and batch.raw.get(name) == "1"


def end(
    rt: Runtime,
    item: Item,
    allowed: Iterable[ItemState],
    to: ItemState,
    fields: Mapping[str, object] | None = None,
    *,
    cost_usd: Decimal = Decimal(0),
) -> list[Next]:
    """Move an item to a final state and clean up after it: its slot, its claim on the pair
    (unless a prediction for it was or may have been paid), its budget reservation. Then
    finalize if it was the last."""
    values: dict[str, object] = {"finished_at": rt.clock(), **(fields or {})}
    result = rt.ledger.transition(item.batch_id, item.id, allowed, to, values, when=item.fence)
    if not result.ok:
        return []
    woken = after_end(rt, item.updated(to, values), cost_usd)
    return woken + ([Next("finalize", item.batch_id)] if result.batch_complete else [])


def after_end(rt: Runtime, item: Item, cost_usd: Decimal | None = None) -> list[Next]:
    """What follows an item's move to a final state: its slot back (the waiters to wake),
    its claim on the pair released unless a prediction for it was or may have been paid, its
    budget reservation turned into its cost (`cost_usd`; by default the one it recorded).
    Each part is safe to run again. `end` runs it after the move; a step or the finalizer
    that finds a final item not settled runs it again (`unsettled`: a worker that died, or
    Redis that failed, between the move and the settle), so no cost is missing from the
    books and no slot stays held."""
    record = item.record.raw
    woken = free_slot(rt, item)
    if not paid_for(item.state.value, record.get("error_kind", "")):
        rt.ledger.release_claim(item.record.identity, item.member)
    batch = rt.ledger.batch(item.batch_id)
    scope = batch.budget_scope if batch else item.batch_id
    cost = Decimal(record.get("cost_usd") or "0") if cost_usd is None else cost_usd
    rt.ledger.settle(scope, item.batch_id, item.id, cost)
    return woken


def unsettled(record: Mapping[str, str]) -> bool:
    """Whether an item's record says it ended but what follows (`after_end`) did not finish:
    final, not settled, and its own record (a compacted item keeps no such flag: it was
    settled before its batch was compacted).

    >>> unsettled({"id": "a", "state": "completed", "video": "{}", "finished_at": "1"})
    True
    >>> unsettled({"id": "a", "state": "completed", "settled": "1", "video": "{}"})
    False
    >>> unsettled({"id": "a", "state": "completed", "cost_usd": "0.134"})
    False
    """
    state = record.get("state", "")
    return (
        state in {s.value for s in FINAL_STATES}
        and record.get("settled") != "1"
        and not retention.is_compacted(record)
    )


def free_slot(rt: Runtime, item: Item | None = None) -> list[Next]:
    """Give the item's concurrency slot back (if it holds one) and wake the items waiting
    for a slot: their submit steps, now. Without an item, only wakes waiters."""
    return wake(rt.gates.release_slot(item.member if item else "", in_flight_limit(rt)))


def wake(members: Iterable[str]) -> list[Next]:
    """The submit steps of slot waiters (`<batch>:<item>` members) woken now."""
    return [Next("submit", *keys.slot_member_ids(member)) for member in members]


def give_turn_up(rt: Runtime, member: str) -> list[Next]:
    """Give up the turn to post to the provider's queue, if `member` holds it
    (`pipeline.gates`), and wake whoever is next in line for a free slot."""
    return wake(rt.gates.release_slot("", in_flight_limit(rt), turn_of=member))


def in_flight_limit(rt: Runtime) -> int:
    """How many predictions may be sent and not final now: the account's concurrency and
    the queue ahead (`provider.in_flight_max`), or the concurrency alone while a submit's
    answer was lost and is not reconciled yet.

    Reconcile tells lost submits apart by when each was sent and how long its output lasts;
    two lost close together with outputs of one length cannot be told apart, and both need
    a person (`needs_attention`). With the queue ahead twice as many submits are on their
    way at once, so under a storm of lost answers more of them overlap: holding the queue
    ahead while any is unreconciled keeps that to what the account's concurrency alone
    gives, at the cost of the queue ahead's speed only while answers are being lost."""
    provider = rt.settings.provider
    if provider.in_flight_max <= provider.max_concurrent:
        return provider.in_flight_max
    window_s = 2 * (rt.settings.polling.reconcile_grace_s + provider.submit_timeout_s)
    if rt.ledger.unknown_submits(since=rt.clock() - window_s):
        return provider.max_concurrent
    return provider.in_flight_max


def paid_for(state: str, error_kind: str) -> bool:
    """True when an item in this final state holds a prediction that was, or may have been,
    paid for: completed, unresolved, timed out (it may still finish) or uncollected. Its claim
    on the pair stays, so no other item or batch pays for the pair again on its own.

    >>> paid_for("failed", "timeout"), paid_for("failed", "input"), paid_for("completed", "")
    (True, False, True)
    """
    if state in (ItemState.COMPLETED, ItemState.NEEDS_ATTENTION):
        return True
    return state == ItemState.FAILED and error_kind in (ErrorKind.TIMEOUT, ErrorKind.OUTPUT)


def cancel(rt: Runtime, item: Item, allowed: Iterable[ItemState]) -> list[Next]:
    """End an item that was never submitted because its batch was cancelled."""
    return fail(
        rt,
        item,
        allowed,
        ErrorKind.CANCELLED,
        "the batch was cancelled before this item was submitted",
        "Retry the batch's failed items, or run the manifest again.",
        to=ItemState.CANCELLED,
    )


def fail(
    rt: Runtime,
    item: Item,
    allowed: Iterable[ItemState],
    kind: ErrorKind,
    error: str,
    hint: str,
    *,
    to: ItemState = ItemState.FAILED,
    extra: Mapping[str, object] | None = None,
    cost_usd: Decimal = Decimal(0),
) -> list[Next]:
    """End an item with a reason a person can act on."""
    fields: dict[str, object] = {"error": error, "error_kind": kind.value, "hint": hint}
    fields.update(extra or {})
    return end(rt, item, allowed, to, fields, cost_usd=cost_usd)


_ORDER = {
    ItemState.PENDING: 0,
    ItemState.READY: 1,
    ItemState.SUBMITTING: 2,
    ItemState.RUNNING: 3,
    ItemState.COLLECTING: 4,
}
_RESUME_STEP = {
    ItemState.READY: "submit",
    ItemState.SUBMITTING: "reconcile",
    ItemState.RUNNING: "poll",
    ItemState.COLLECTING: "collect",
}


def resume(rt: Runtime, item: Item, expected: ItemState) -> list[Next]:
    """A step found its item further along than it expected: a redelivered task whose work
    was done but whose follow-up may never have been sent (the worker died in between), or
    a duplicate of a step whose follow-up was sent. Send the follow-up for where the item
    is, unless the item records it as sent; the steps after it are idempotent too."""
    state = item.state
    if state.final:
        # The step that ended it may have died before what follows the move was done.
        woken = after_end(rt, item) if unsettled(item.record.raw) else []
        done = rt.ledger.done_count(item.batch_id)
        batch = rt.ledger.batch(item.batch_id)
        total = batch.item_count if batch else 0
        return woken + ([Next("finalize", item.batch_id)] if total and done >= total else [])
    if _ORDER[state] <= _ORDER[expected]:
        return []
    step = _RESUME_STEP[state]
    if item.record.raw.get("next_step") == step:
        # The step that moved the item on recorded this follow-up as sent: this is a
        # duplicate (a scheduled look after the watch's, a redelivery), and sending it again
        # would run the follow-up twice at once (two collects writing one object). A step
        # sent again because its worker died, or because its follow-up could not be sent,
        # is first expected again as itself, so it does send it; a message lost on the way
        # is the sweeper's (`pipeline.sweep`).
        return []
    countdown = (item.record.poll_interval_s or 0.0) if state is ItemState.RUNNING else 0.0
    return [Next(step, item.batch_id, item.id, rt.countdown(countdown))]


MIN_STORAGE_TRIES = 3


def storage_retry_in(rt: Runtime, item: Item, what: str) -> float | None:
    """Count one storage failure of `what` (upload, collect, fetch) for the item. Returns the
    countdown before the next try (doubling), or None when it has failed for longer than
    `storage.retry_for_s` and at least MIN_STORAGE_TRIES times: time to give up, clearly.

    Bounded by time rather than by a count, so that an outage of a given length is survived
    whatever the countdowns are.
    """
    tries = rt.ledger.count(item.batch_id, item.id, f"{what}_errors")
    since_field = f"{what}_errors_since"
    now = rt.clock()
    since = float(rt.ledger.item(item.batch_id, item.id).get(since_field) or 0)
    if not since:
        since = now
        rt.ledger.update_item(item.batch_id, item.id, item.state, {since_field: now})
    if tries >= MIN_STORAGE_TRIES and now - since >= rt.settings.storage.retry_for_s:
        return None
    return rt.countdown(backoff.STORAGE.delay_s(max(tries, 1)))
