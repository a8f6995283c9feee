"""The item and batch records, typed, and their Redis encoding in one place.

An item lives in Redis as a hash of strings (`lipdub:item:<batch>:<item>`): numbers as their
`repr`, flags as `1`/`0`, lists and mappings as JSON, an unset value as the empty string
(`encode_value`). The pipeline's steps read it through `ItemRecord`, a frozen record whose
fields carry their types (a time is a float or None, never `""`; ids are tuples), decoded
once by `ItemRecord.decode`. The hash's other fields (the report's) stay in `raw`. `Item` is
what a step holds: the record with its batch.

    >>> record = ItemRecord.decode({"id": "a", "state": "running", "submits": "2",
    ...     "intent_at": "17.5", "prediction_ids": '["p1", "p2"]', "price_usd": "0.268"})
    >>> record.submits, record.intent_at, record.prediction_ids, record.price_usd
    (2, 17.5, ('p1', 'p2'), Decimal('0.268'))
    >>> record.deadline_at is None, record.sync_mode
    (True, '')

A batch (`lipdub:batch:<batch>`) is read the same way, through `BatchRecord`:

    >>> batch = BatchRecord.decode({"id": "b1", "state": "running", "item_count": "3",
    ...     "cancelled": "0", "estimate_usd": "1.2060", "created_at": "100.5"})
    >>> batch.item_count, batch.cancelled, batch.estimate_usd, batch.budget_scope
    (3, False, Decimal('1.2060'), 'b1')
    >>> batch.finished_at is None, batch.scheduled
    (True, False)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pipeline import keys
from pipeline.states import BatchState, ItemState


def encode_value(value: object) -> str:
    """A value as the ledger stores it in a hash field (None as empty, floats exact).

    >>> [encode_value(v) for v in (None, True, 1.5, {"b": 1, "a": 2}, ("x",), 3)]
    ['', '1', '1.5', '{"a": 2, "b": 1}', '["x"]', '3']
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, sort_keys=True)
    return str(value)


def encode(fields: Mapping[str, object]) -> dict[str, str]:
    """Fields as the hash stores them."""
    return {name: encode_value(value) for name, value in fields.items()}


def _float(raw: Mapping[str, str], name: str) -> float | None:
    value = raw.get(name, "")
    return float(value) if value else None


def _int(raw: Mapping[str, str], name: str) -> int:
    value = raw.get(name, "")
    return int(float(value)) if value else 0


def _json(raw: Mapping[str, str], name: str) -> Any:
    value = raw.get(name, "")
    return json.loads(value) if value else None


@dataclass(frozen=True)
class ItemRecord:
    """What the steps read of an item (see the module's docstring for the encoding)."""

    id: str
    state: ItemState
    identity: str = ""
    """The pair's claim key: video hash, audio hash, sync_mode, model."""
    sync_mode: str = ""
    video_ref: str = ""
    audio_ref: str = ""
    video: Mapping[str, Any] | None = None
    """The video's media facts (duration_s, sha256, ...), as planned."""
    audio: Mapping[str, Any] | None = None
    price_usd: Decimal = Decimal(0)
    billable_s: float = 0.0
    expected_output_s: float = 0.0
    output: str = ""
    output_folder: str = ""
    output_url: str = ""
    waiting_on: str = ""
    submits: int = 0
    attempts: int = 0
    intent_at: float | None = None
    video_match: str = ""
    audio_match: str = ""
    outcome_unknown: str = ""
    outcome_unknown_at: float | None = None
    prediction_id: str = ""
    prediction_ids: tuple[str, ...] = ()
    errors: tuple[Mapping[str, Any], ...] = ()
    """Every failed prediction of the item, with its code."""
    deadline_at: float | None = None
    submitted_at: float | None = None
    """When the prediction now being followed was created (its POST answered)."""
    poll_interval_s: float | None = None
    """The wait before the next (or the last) look at the prediction."""
    first_look: str = ""
    """What the first look at the prediction was aimed by: `learned` (the provider's recent
    times), `scout` (early and often: nothing learned yet) or `expected` (the settings)."""
    last_unfinished_at: float | None = None
    """When a look last found the prediction unfinished."""
    prepare_started_at: float | None = None
    upload_started_at: float | None = None
    processing_at: float | None = None
    collect_started_at: float | None = None
    raw: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    """The hash as read, with the fields only the report uses."""

    @classmethod
    def decode(cls, raw: Mapping[str, str]) -> ItemRecord:
        """The record of an item hash (KeyError without an id or a state)."""
        return cls(
            id=raw["id"],
            state=ItemState(raw["state"]),
            identity=raw.get("identity", ""),
            sync_mode=raw.get("sync_mode", ""),
            video_ref=raw.get("video_ref", ""),
            audio_ref=raw.get("audio_ref", ""),
            output=raw.get("output", ""),
            output_folder=raw.get("output_folder", ""),
            output_url=raw.get("output_url", ""),
            waiting_on=raw.get("waiting_on", ""),
            video_match=raw.get("video_match", ""),
            audio_match=raw.get("audio_match", ""),
            outcome_unknown=raw.get("outcome_unknown", ""),
            prediction_id=raw.get("prediction_id", ""),
            intent_at=_float(raw, "intent_at"),
            outcome_unknown_at=_float(raw, "outcome_unknown_at"),
            deadline_at=_float(raw, "deadline_at"),
            submitted_at=_float(raw, "submitted_at"),
            poll_interval_s=_float(raw, "poll_interval_s"),
            first_look=raw.get("first_look", ""),
            last_unfinished_at=_float(raw, "last_unfinished_at"),
            prepare_started_at=_float(raw, "prepare_started_at"),
            upload_started_at=_float(raw, "upload_started_at"),
            processing_at=_float(raw, "processing_at"),
            collect_started_at=_float(raw, "collect_started_at"),
            video=_json(raw, "video"),
            audio=_json(raw, "audio"),
            price_usd=Decimal(raw.get("price_usd") or "0"),
            billable_s=_float(raw, "billable_s") or 0.0,
            expected_output_s=_float(raw, "expected_output_s") or 0.0,
            submits=_int(raw, "submits"),
            attempts=_int(raw, "attempts"),
            prediction_ids=tuple(_json(raw, "prediction_ids") or ()),
            errors=tuple(_json(raw, "errors") or ()),
            raw=dict(raw),
        )

    @property
    def scout(self) -> bool:
        """Looks early and often while the provider's times are not yet learned."""
        return self.first_look == "scout"

    @property
    def video_s(self) -> float:
        """The input video's seconds (0 when unknown)."""
        return float((self.video or {}).get("duration_s", 0.0))

    def media(self, which: str) -> Mapping[str, Any] | None:
        """The planned facts of `video` or `audio`."""
        return self.video if which == "video" else self.audio if which == "audio" else None


@dataclass(frozen=True)
class Item:
    """An item as a step read it: its batch and its typed record (`pipeline.records`)."""

    batch_id: str
    record: ItemRecord

    @classmethod
    def of(cls, batch_id: str, raw: Mapping[str, str]) -> Item:
        """The item of a hash as the ledger returns it."""
        return cls(batch_id, ItemRecord.decode(raw))

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def state(self) -> ItemState:
        return self.record.state

    @property
    def member(self) -> str:
        """The item's name in shared sets: `<batch>:<item>`."""
        return keys.slot_member(self.batch_id, self.id)

    @property
    def price_usd(self) -> Decimal:
        return self.record.price_usd

    @property
    def fence(self) -> dict[str, str]:
        """The submit attempt this view describes, as a condition for the ledger's
        transitions: a step acts only on the attempt it read. Without it a stale step (a
        redelivered or swept duplicate) that read `submitting` of attempt 1 could move
        `submitting` of attempt 2 back to `ready`, and the pair would be posted twice."""
        return {"submits": self.record.raw.get("submits", "")}

    def updated(self, state: ItemState, fields: Mapping[str, object]) -> Item:
        """This view after a transition the step itself made (to `state`, writing `fields`)."""
        raw = {**self.record.raw, **encode(fields), "state": state.value}
        return Item.of(self.batch_id, raw)


@dataclass(frozen=True)
class BatchRecord:
    """What the steps and commands read of a batch (encoded as items are)."""

    id: str
    state: BatchState
    name: str = ""
    manifest: str = ""
    model: str = ""
    bucket: str = ""
    created_at: float | None = None
    item_count: int = 0
    force: bool = False
    cancelled: bool = False
    budget_scope: str = ""
    """Whose budget the batch's items reserve from: its own, or its schedule's night."""
    estimate_usd: Decimal | None = None
    balance_before_usd: Decimal | None = None
    balance_after_usd: Decimal | None = None
    finished_at: float | None = None
    """When its report was last written (empty again while a retry runs)."""
    report_key: str = ""
    schedule: str = ""
    """The schedule that started it, or empty."""
    inbox: str = ""
    inbox_manifest: str = ""
    inbox_folder: str = ""
    inbox_name: str = ""
    inbox_target: str = ""
    inbox_target_name: str = ""
    concluded_at: float | None = None
    counts: Mapping[str, int] | None = None
    """Items per state, as every transition keeps them (None for a batch recorded before
    they were kept: its items must be counted)."""
    items_estimate_usd: Decimal | None = None
    """The planned price of all its items."""
    raw: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    """The hash as read, with the fields only the report and the schedule's gate use."""

    @classmethod
    def decode(cls, raw: Mapping[str, str]) -> BatchRecord:
        """The record of a batch hash (KeyError without an id)."""
        return cls(
            id=raw["id"],
            state=BatchState(raw.get("state") or BatchState.RUNNING.value),
            name=raw.get("name", ""),
            manifest=raw.get("manifest", ""),
            model=raw.get("model", ""),
            bucket=raw.get("bucket", ""),
            created_at=_float(raw, "created_at"),
            item_count=_int(raw, "item_count"),
            force=raw.get("force") == "1",
            cancelled=raw.get("cancelled") == "1",
            budget_scope=raw.get("budget_scope") or raw["id"],
            estimate_usd=_decimal(raw, "estimate_usd"),
            balance_before_usd=_decimal(raw, "balance_before_usd"),
            balance_after_usd=_decimal(raw, "balance_after_usd"),
            finished_at=_float(raw, "finished_at"),
            report_key=raw.get("report_key", ""),
            schedule=raw.get("schedule", ""),
            inbox=raw.get("inbox", ""),
            inbox_manifest=raw.get("inbox_manifest", ""),
            inbox_folder=raw.get("inbox_folder", ""),
            inbox_name=raw.get("inbox_name", ""),
            inbox_target=raw.get("inbox_target", ""),
            inbox_target_name=raw.get("inbox_target_name", ""),
            concluded_at=_float(raw, "concluded_at"),
            counts=_counts(raw),
            items_estimate_usd=_decimal(raw, "items_estimate_usd"),
            raw=dict(raw),
        )

    @property
    def finished(self) -> bool:
        return self.state is BatchState.FINISHED

    @property
    def scheduled(self) -> bool:
        """Started by a schedule (its window, nightly budget and inbox apply)."""
        return bool(self.schedule)


def _counts(raw: Mapping[str, str]) -> dict[str, int] | None:
    """`n:<state>` fields as {state: count} for every state; None when none is kept.

    >>> _counts({"n:pending": "2", "n:running": "0"})["pending"], _counts({"id": "b"})
    (2, None)
    """
    if not any(name.startswith("n:") for name in raw):
        return None
    return {s.value: int(raw.get(f"n:{s.value}") or 0) for s in ItemState}


def _decimal(raw: Mapping[str, str], name: str) -> Decimal | None:
    value = raw.get(name)
    return Decimal(value) if value else None
