"""A batch's status and report, from the ledger alone.

`batch_status` is cheap (counts per state, money so far) and serves a progress display;
`batch_report` is complete: every item with its phases, durations, cost, output and error.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from typing import Any

from pipeline.ledger import Ledger
from pipeline.ledger.kept import LAPSED
from pipeline.retention import is_compacted
from pipeline.states import ItemState

EarlierRow = Callable[[str, int, int], dict[str, Any] | None]
"""An earlier report's row of an item, by its id, manifest row and position in the batch
(`EarlierRows.row`)."""

PHASES = {
    "queued": "waiting in our queue",
    "upload": "uploading",
    "limits": "waiting for the account's limits",
    "retried": "earlier attempts, and the wait before the last",
    "provider": "at the provider (queued or processing)",
    "poll": "done at the provider by then, or not: seen at our next poll",
    "collect": "collecting the output",
}
"""Each item's timeline, in order, and what each phase is. Only what the timestamps prove is
charted under a name: the provider is known to be working from our POST until the last
poll that found it unfinished (or until its reported inference time had passed); from then
to the poll that found it done, it may have been done already."""


def _float(record: Mapping[str, str], name: str) -> float | None:
    value = record.get(name, "")
    return float(value) if value else None


def _json(record: Mapping[str, str], name: str) -> Any:
    value = record.get(name, "")
    return json.loads(value) if value else None


def batch_status(ledger: Ledger, batch_id: str) -> dict[str, Any]:
    """Counts per state, how many are final, and the money reserved and spent so far."""
    batch = ledger.batch(batch_id)
    if batch is None:
        raise KeyError(batch_id)
    if batch.counts is not None and batch.items_estimate_usd is not None:
        # Kept by every transition: reading them costs the same for 10 or 100,000 items.
        counts = dict(batch.counts)
        estimate, total = batch.items_estimate_usd, batch.item_count
    else:  # a batch recorded before the counts were kept
        items = ledger.items(batch_id)
        counted = Counter(record.get("state", "") for record in items)
        counts = {state.value: counted.get(state.value, 0) for state in ItemState}
        estimate = sum((Decimal(r.get("price_usd") or "0") for r in items), Decimal(0))
        total = len(items)
    budget = ledger.budget(batch.budget_scope)
    return {
        "batch_id": batch_id,
        "name": batch.name,
        "state": batch.state.value,
        "cancelled": batch.cancelled,
        "items": total,
        "done": ledger.done_count(batch_id),
        "counts": counts,
        "estimate_usd": str(estimate),
        "spent_usd": str(budget["spent_usd"]),
        "reserved_usd": str(budget["reserved_usd"]),
        "budget_usd": str(budget["limit_usd"]) if budget["limit_usd"] is not None else None,
        "created_at": batch.created_at,
        "finished_at": batch.finished_at,
    }


def _phase_bounds(record: dict[str, str]) -> dict[str, tuple[float | None, float | None]]:
    """Each phase's (start, end) from the item's timestamps (`PHASES` says what each is)."""

    def at(name: str) -> float | None:
        return _float(record, name)

    prepared, uploaded, intent = at("prepare_started_at"), at("uploaded_at"), at("intent_at")
    submitted, done = at("submitted_at"), at("provider_done_at")
    busy_until = None
    # Sent into the provider's queue: when it started is not known, so its wait there cannot
    # be told from the time lipdub took to see its end; the provider's phase holds both.
    queued = record.get("queued") == "1"
    if submitted is not None and done is not None and queued:
        busy_until = done
    elif submitted is not None and done is not None:
        inference_ms = at("inference_ms")
        known = [submitted, at("last_unfinished_at") or submitted]
        if inference_ms:
            known.append(submitted + inference_ms / 1000)
        busy_until = min(done, max(known))
    before_submit = "retried" if int(record.get("submits") or 1) > 1 else "limits"
    return {
        "queued": (at("created_at"), prepared),
        "upload": (prepared, uploaded),
        before_submit: (uploaded, intent),
        "provider": (intent, busy_until),
        "poll": (None, None) if queued else (busy_until, done),
        "collect": (done, at("finished_at")),
    }


def item_report(record: dict[str, str]) -> dict[str, Any]:
    """One item as the report shows it."""
    phases = {}
    for phase, (begin, finish) in _phase_bounds(record).items():
        if begin is not None and finish is not None and finish >= begin:
            phases[phase] = {"start": begin, "end": finish, "seconds": round(finish - begin, 3)}
    video = _json(record, "video") or {}
    audio = _json(record, "audio") or {}
    return {
        "id": record.get("id"),
        "row": int(record.get("row") or 0),
        "state": record.get("state"),
        "sync_mode": record.get("sync_mode"),
        "video": video.get("location"),
        "audio": audio.get("location"),
        "video_s": video.get("duration_s"),
        "audio_s": audio.get("duration_s"),
        "metadata": _json(record, "metadata") or {},
        "output": record.get("output"),
        "output_key": record.get("output_key") or None,
        "output_s": _float(record, "output_s"),
        "expected_output_s": _float(record, "expected_output_s"),
        "prediction_id": record.get("prediction_id") or None,
        "prediction_ids": _json(record, "prediction_ids") or [],
        "attempts": int(record.get("attempts") or 0),
        "polls": int(record.get("polls") or 0),
        "inference_ms": int(record["inference_ms"]) if record.get("inference_ms") else None,
        "billable_s": _float(record, "billable_s_final"),
        "estimate_usd": record.get("price_usd"),
        "cost_usd": record.get("cost_usd") or None,
        "reused_from": record.get("reused_from") or None,
        "reconciled": record.get("reconciled") == "1",
        "error": record.get("error") or None,
        "error_kind": record.get("error_kind") or None,
        "hint": record.get("hint") or None,
        "evidence": _json(record, "evidence"),
        "failed_predictions": _json(record, "errors") or [],
        "phases": phases,
    }


def batch_report(ledger: Ledger, batch_id: str) -> dict[str, Any]:
    """The whole batch: its status, settings that priced it, and every item (in memory; the
    finalizer streams instead: `report_head` and `report_items`)."""
    head = report_head(ledger, batch_id)
    items = list(report_items(ledger, batch_id, head["bucket"]))
    billable = sum(i["billable_s"] or 0.0 for i in items)
    return {**head, "total_billable_s": round(billable, 3), "items_detail": items}


def report_head(ledger: Ledger, batch_id: str) -> dict[str, Any]:
    """Everything in the report but its items (KeyError for an unknown batch)."""
    status = batch_status(ledger, batch_id)
    batch = ledger.batch(batch_id)
    if batch is None:
        raise KeyError(batch_id)
    raw = batch.raw
    return {
        **status,
        "manifest": batch.manifest,
        "model": batch.model,
        "bucket": batch.bucket,
        "price_model": _json(raw, "price_model"),
        "price_basis": raw.get("price_basis") or None,
        "balance_before_usd": raw.get("balance_before_usd") or None,
        "balance_after_usd": raw.get("balance_after_usd") or None,
        "audit": _json(raw, "audit"),
        "audit_error": raw.get("audit_error") or None,
    }


LAPSED_HINT = (
    "completed; compacted, and what was kept of it has lapsed since (with its pair's claim): "
    "its whole row is in the reports its batch wrote before"
)
"""The hint of a row whose item's record has lapsed, where no earlier report gave its row."""


def report_items(
    ledger: Ledger, batch_id: str, bucket: str, *, earlier: EarlierRow | None = None
) -> Iterator[dict[str, Any]]:
    """Each item as the report shows it, read from Redis a chunk at a time. A compacted
    item's row is `earlier`'s (its batch's earlier report: `pipeline.reporting.earlier`)
    where that has it: compaction kept only a few of its fields, and none once they lapsed."""
    for position, record in enumerate(ledger.iter_items(batch_id)):
        if earlier is not None and is_compacted(record):
            found = earlier(record.get("id", ""), int(record.get("row") or 0), position)
            if found is not None:
                yield found
                continue
        item = item_report(record)
        item["output_uri"] = f"s3://{bucket}/{item['output_key']}" if item["output_key"] else None
        if record.get(LAPSED):
            item["hint"] = LAPSED_HINT
        yield item


def metadata_keys(ledger: Ledger, batch_id: str) -> set[str]:
    """Every metadata key the batch's items have (the CSV's columns), reading only that
    field of each."""
    found: set[str] = set()
    for record in ledger.iter_items(batch_id, fields=("metadata",)):
        found.update(_json(record, "metadata") or {})
    return found
