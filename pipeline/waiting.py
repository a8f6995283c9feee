"""Why each unfinished item of a batch waits, by what the ledger and the shared gates say.

`reasons(records, gates, now)` is pure: the item records and a snapshot of the gates in, the
items grouped by reason out, with each group's count and its earliest next step. `GateFacts.read`
takes the snapshot from Redis. `lipdub status` shows the groups.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import redis

from pipeline import keys
from pipeline.states import PARKED, ItemState


class Reason(StrEnum):
    """What an unfinished item is waiting for (in the order an item meets them)."""

    QUEUE = "our queue (a worker to take its next step)"
    SAME_PAIR = "another item paying for the same pair"
    UPLOADING = "its files being uploaded by its start"
    STORAGE = "storage trouble, being retried"
    SCHEDULE = "the schedule's window or nightly budget"
    COOL_DOWN = "the 429 cool-down"
    SLOTS = "the account's concurrency limit"
    START = "the account's per-minute limit"
    SUBMIT = "its submit's answer (sent, or being reconciled)"
    PROVIDER = "the provider's processing"
    COLLECT = "its output being collected"


@dataclass(frozen=True)
class GateFacts:
    """What the shared gates say right now."""

    cooling_s: float = 0.0
    """How long the 429 cool-down still holds every worker off."""
    slot_waiters: frozenset[str] = frozenset()
    """`<batch>:<item>` of the items waiting for a concurrency slot."""
    starts: Mapping[str, float] = field(default_factory=dict)
    """`<batch>:<item>` -> seconds until its reserved start (for reservations still ahead)."""

    @classmethod
    def read(cls, client: redis.Redis) -> GateFacts:
        """A snapshot of the gates (Redis's clock for the start log, as the gate uses)."""
        clock = client.time()
        now = float(clock[0]) + float(clock[1]) / 1_000_000
        cooling_ms = int(client.pttl(keys.COOLDOWN))
        waiters = frozenset(str(m) for m in client.zrange(keys.SLOT_WAITERS, 0, -1))
        ahead: list[Any] = list(
            client.zrangebyscore(keys.START_LOG, f"({now}", "+inf", withscores=True)
        )
        starts = {str(entry[0]).rsplit(":", 1)[0]: float(entry[1]) - now for entry in ahead}
        return cls(max(0.0, cooling_ms / 1000), waiters, starts)


@dataclass(frozen=True)
class Waiting:
    """The items that wait for one reason."""

    reason: Reason
    items: int
    next_due_at: float | None
    """The earliest time one of them has a step due (epoch s), when known."""


def reason_of(record: Mapping[str, str], member: str, gates: GateFacts) -> Reason | None:
    """Why this item waits (None when it is final).

    >>> reason_of({"state": "pending"}, "b:i", GateFacts())
    <Reason.QUEUE: 'our queue (a worker to take its next step)'>
    >>> reason_of({"state": "ready"}, "b:i", GateFacts(slot_waiters=frozenset({"b:i"})))
    <Reason.SLOTS: "the account's concurrency limit">
    """
    state = ItemState(record.get("state", "pending"))
    if state.final:
        return None
    # Storage trouble of the stage the item is in (an upload while pending, the provider's
    # fetch of the inputs while ready again, collecting): it leaves that stage once it works.
    stage = {ItemState.PENDING: "upload", ItemState.READY: "fetch"}.get(state, "collect")
    storage = bool(record.get(f"{stage}_errors_since"))
    if state is ItemState.PENDING:
        if storage:
            return Reason.STORAGE
        if record.get("waiting_on"):
            return Reason.SAME_PAIR
        return Reason.UPLOADING if _awaits_upload(record) else Reason.QUEUE
    if state is ItemState.READY:
        if record.get("waiting_on") in PARKED:
            return Reason.SCHEDULE
        if storage:
            return Reason.STORAGE
        if gates.cooling_s > 0:
            return Reason.COOL_DOWN
        if member in gates.slot_waiters:
            return Reason.SLOTS
        if member in gates.starts:
            return Reason.START
        return Reason.QUEUE
    if state is ItemState.SUBMITTING:
        return Reason.SUBMIT
    if state is ItemState.RUNNING:
        return Reason.PROVIDER
    return Reason.STORAGE if storage else Reason.COLLECT


FIELDS = (
    "state", "waiting_on", "next_due_at", "inputs_ready", "upload_error", "video", "audio",
    "upload_errors_since", "fetch_errors_since", "collect_errors_since",
)  # fmt: skip
"""What `reason_of` and `reasons` read of a record (so a caller reads only these)."""


def reasons(batch_id: str, records: Iterable[Mapping[str, str]], gates: GateFacts) -> list[Waiting]:
    """The batch's unfinished items grouped by what they wait for, in `Reason` order."""
    groups: dict[Reason, list[float | None]] = {}
    for record in records:
        member = keys.slot_member(batch_id, record.get("id", ""))
        reason = reason_of(record, member, gates)
        if reason is None:
            continue
        due = record.get("next_due_at")
        groups.setdefault(reason, []).append(float(due) if due else None)
    return [
        Waiting(reason, len(dues), min((d for d in dues if d is not None), default=None))
        for reason in Reason
        if (dues := groups.get(reason))
    ]


_MOMENTS = (
    ("created_at", "planned and queued"),
    ("prepare_started_at", "prepare began"),
    ("upload_started_at", "upload began"),
    ("uploaded_at", "inputs in the bucket: ready to submit"),
    ("intent_at", "submit intent recorded (POST sent next)"),
    ("outcome_unknown_at", "the POST's answer was lost: reconciling"),
    ("submitted_at", "prediction known: at the provider"),
    ("processing_at", "the provider began processing"),
    ("last_unfinished_at", "last poll that found it unfinished"),
    ("provider_done_at", "the provider finished"),
    ("collect_started_at", "collect began"),
    ("finished_at", "ended"),
)


def history(record: Mapping[str, str]) -> list[tuple[float, str]]:
    """An item's life as its recorded moments, in time order (the latest attempt's, where an
    attempt rewrote them), with what each means.

    >>> history({"created_at": "10", "intent_at": "12.5", "submitted_at": "13"})
    [(10.0, 'planned and queued'), (12.5, 'submit intent recorded (POST sent next)'), (13.0, 'prediction known: at the provider')]
    """
    moments = [(float(record[name]), says) for name, says in _MOMENTS if record.get(name)]
    return sorted(moments, key=lambda moment: moment[0])


def _awaits_upload(record: Mapping[str, str]) -> bool:
    """A pending item with a local file its start has not said is in the bucket yet."""
    if record.get("inputs_ready") == "1" or record.get("upload_error"):
        return False
    return any(
        json.loads(record.get(name) or "{}").get("kind") == "local" for name in ("video", "audio")
    )
