"""Every charge in our books: the provider's predictions of the model around a batch, and
those that no lipdub item has.

WaveSpeed has no idempotency key and its list hides inputs, so a submit whose answer was
lost may have made a prediction no item could adopt. The audit reads the provider's list for
the batch's time (±`WINDOW_MARGIN_S`), takes away every prediction a lipdub item has (in any
batch: the ledger's prediction index), and reports the rest with their ids and statuses. A
prediction that is among the candidates of one of this batch's items that need attention is
priced at that item's estimate (it is, or may be, that item's); any other was made by some
other client of the key, or by a lost submit of another batch. What each cost is then read
from the provider's billing records (`POST /api/v3/billings/search` by prediction id), to
the cent; the estimate stands in only when those cannot be read. With a key used only by
lipdub, a clean batch leaves none.

It also reads what the provider charged for the predictions this batch's own items hold but
did not book: an item that timed out while its prediction ran on (the prediction completes
and is charged later; the item booked $0), and a failed prediction, should the provider
charge those. lipdub's spend, the unattributed charges and these *unbooked* ones together
are every charge the batch made. One still running when the audit looks is listed as
pending at its item's estimate; `lipdub audit BATCH` later reads what it came to.

    found = audit_batch(ledger, provider, batch_id, model="sync/lipsync-3", now=time.time())
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pipeline import keys
from pipeline.errors import ProviderError
from pipeline.ledger import Ledger
from pipeline.provider.client import LIST_PAGE_SIZE_MAX, ProviderClient
from pipeline.states import FINAL_STATES, ItemState

ENDED_WITHOUT_OUTPUT = frozenset({"failed", "cancelled", "timeout", "deleted"})
"""Statuses of a prediction that ended with no output: lipdub books these at $0, as the
provider's documentation charges only for outputs (the billing records say otherwise where
it does)."""
UNFINISHED = frozenset({"created", "processing"})
WINDOW_MARGIN_S = 300.0
"""The provider's clock may differ from ours; its list is read this much wider."""
MAX_PAGES = 50


@dataclass(frozen=True)
class Unattributed:
    """A prediction of the model in the batch's time that no lipdub item has."""

    id: str
    status: str
    created_at: str | None
    may_be: tuple[str, ...] = ()
    """Ids of this batch's items that need attention with it among their candidates."""
    estimate_usd: Decimal | None = None
    """What it may have cost: the estimate of the item it may be; None when it is no
    candidate of ours (its inputs are hidden, so its price is unknown)."""
    charged_usd: Decimal | None = None
    """What the provider's billing records say it cost (None when they could not be read)."""

    @property
    def cost_usd(self) -> Decimal:
        """The charge where the billing records tell it, else the estimate, else $0."""
        if self.charged_usd is not None:
            return self.charged_usd
        return self.estimate_usd or Decimal(0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "created_at": self.created_at,
            "may_be": list(self.may_be),
            "estimate_usd": str(self.estimate_usd) if self.estimate_usd is not None else None,
            "charged_usd": str(self.charged_usd) if self.charged_usd is not None else None,
        }


@dataclass(frozen=True)
class Unbooked:
    """A prediction one of this batch's items holds whose charge its item did not book: the
    item timed out while it ran on, or it failed and the provider charged it anyway."""

    id: str
    item_id: str
    status: str
    """The prediction's status in the provider's list (`unknown` when the list missed it)."""
    estimate_usd: Decimal
    """What it may cost: its item's price, unless it ended without an output ($0)."""
    charged_usd: Decimal | None = None
    """What the provider's billing records say it cost (None when they could not be read)."""

    @property
    def pending(self) -> bool:
        """Still running: not charged yet, but it may be."""
        return self.status in UNFINISHED

    @property
    def cost_usd(self) -> Decimal:
        """The charge where the billing records tell it and the prediction has ended, else
        the estimate."""
        if self.charged_usd is not None and not self.pending:
            return self.charged_usd
        return self.estimate_usd

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "item_id": self.item_id,
            "status": self.status,
            "pending": self.pending,
            "estimate_usd": str(self.estimate_usd),
            "charged_usd": str(self.charged_usd) if self.charged_usd is not None else None,
            "cost_usd": str(self.cost_usd),
        }


@dataclass(frozen=True)
class Audit:
    """What the provider's list shows around a batch that lipdub's books do not."""

    at: float
    predictions: int
    """Predictions of the model the list showed in the batch's time."""
    unattributed: tuple[Unattributed, ...] = field(default_factory=tuple)
    complete: bool = True
    """False when the window held more predictions than the audit reads."""
    billing_error: str | None = None
    """Why the billing records could not be read (the costs are then estimates)."""
    unbooked: tuple[Unbooked, ...] = field(default_factory=tuple)
    """Predictions of this batch's items charged (or pending) beyond what the items booked."""

    @property
    def unattributed_usd(self) -> Decimal:
        """What the unattributed predictions cost: charged per the provider's billing
        records, else estimated where it can be told."""
        return sum((u.cost_usd for u in self.unattributed), Decimal(0))

    @property
    def unbooked_usd(self) -> Decimal:
        """What this batch's items' predictions cost beyond the items' own books."""
        return sum((u.cost_usd for u in self.unbooked), Decimal(0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "predictions": self.predictions,
            "unattributed": [u.to_dict() for u in self.unattributed],
            "unattributed_usd": str(self.unattributed_usd),
            "unbooked": [u.to_dict() for u in self.unbooked],
            "unbooked_usd": str(self.unbooked_usd),
            "charges_from": "billing" if self.billing_error is None else "estimates",
            "billing_error": self.billing_error,
            "complete": self.complete,
        }


def audit_batch(
    ledger: Ledger, provider: ProviderClient, batch_id: str, *, model: str, now: float
) -> Audit:
    """Read the provider's list around the batch and report what no lipdub item has.
    Raises ProviderError when the list cannot be read."""
    batch = ledger.batch(batch_id)
    if batch is None:
        raise KeyError(batch_id)
    began = batch.created_at or now
    ended = batch.finished_at or now
    listed = list(
        provider.iter_predictions(
            created_after=_utc(began - WINDOW_MARGIN_S),
            created_before=_utc(ended + WINDOW_MARGIN_S),
            model=model,
            max_pages=MAX_PAGES,
        )
    )
    records = ledger.items(batch_id)
    ours = {p for r in records for p in json.loads(r.get("prediction_ids") or "[]")}
    taken = ours | _held_by_their_items(
        ledger, batch_id, [p.id for p in listed if p.id not in ours]
    )
    taken |= _held_by_compacted_batches(
        ledger,
        batch_id,
        {p.id for p in listed if p.id not in taken},
        since=began - WINDOW_MARGIN_S,
        until=ended + WINDOW_MARGIN_S,
    )
    suspects: dict[str, list[dict[str, str]]] = {}
    for record in records:
        if record.get("state") != ItemState.NEEDS_ATTENTION:
            continue
        evidence = json.loads(record.get("evidence") or "{}")
        for candidate in evidence.get("candidates", []):
            suspects.setdefault(str(candidate.get("id")), []).append(record)
    unattributed = []
    for prediction in listed:
        if prediction.id in taken:
            continue
        items = suspects.get(prediction.id, [])
        # Ended without an output: booked at $0, as lipdub books its own failed tasks.
        free = prediction.status in ENDED_WITHOUT_OUTPUT
        prices = [Decimal(0) if free else Decimal(r.get("price_usd") or "0") for r in items]
        unattributed.append(
            Unattributed(
                id=prediction.id,
                status=prediction.status,
                created_at=prediction.created_at.isoformat() if prediction.created_at else None,
                may_be=tuple(r["id"] for r in items),
                estimate_usd=max(prices) if prices else None,
            )
        )
    statuses = {p.id: p.status for p in listed}
    unbooked = [
        Unbooked(
            id=prediction_id,
            item_id=record["id"],
            status=statuses.get(prediction_id, "unknown"),
            estimate_usd=Decimal(0)
            if statuses.get(prediction_id) in ENDED_WITHOUT_OUTPUT
            else Decimal(record.get("price_usd") or "0"),
        )
        for record, prediction_id in _held_but_not_booked(records)
    ]
    billing_error = None
    if unattributed or unbooked:
        try:
            charged = provider.charges_usd([u.id for u in unattributed] + [u.id for u in unbooked])
            unattributed = [replace(u, charged_usd=charged.get(u.id)) for u in unattributed]
            unbooked = [replace(u, charged_usd=charged.get(u.id)) for u in unbooked]
        except ProviderError as err:
            billing_error = str(err)
    return Audit(
        at=now,
        predictions=len(listed),
        unattributed=tuple(unattributed),
        complete=len(listed) < MAX_PAGES * LIST_PAGE_SIZE_MAX,
        billing_error=billing_error,
        # A failed prediction the provider did not charge is in its item's errors, not here.
        unbooked=tuple(u for u in unbooked if u.pending or u.cost_usd > 0),
    )


def _held_but_not_booked(records: list[dict[str, str]]) -> list[tuple[dict[str, str], str]]:
    """(item, prediction) for each prediction a finished item of the batch holds other than
    the one its cost was booked for. An item still under way is left out: its prediction
    may yet be collected and booked."""
    held = []
    for record in records:
        if ItemState(record["state"]) not in FINAL_STATES:
            continue
        booked = record.get("prediction_id") if Decimal(record.get("cost_usd") or "0") else None
        for prediction_id in json.loads(record.get("prediction_ids") or "[]"):
            if prediction_id != booked:
                held.append((record, prediction_id))
    return held


def _held_by_their_items(ledger: Ledger, batch_id: str, prediction_ids: list[str]) -> set[str]:
    """Those of these predictions that an item (of another batch: this one's are known) has
    among its own. The prediction index alone is not enough: it is written right after the
    POST is answered, and an item whose record of the answer was lost (a Redis host crash)
    submitted again, leaving an index entry to a prediction no item's books hold."""
    held = set()
    for prediction_id, member in ledger.owners(prediction_ids).items():
        owner_batch, owner_item = keys.slot_member_ids(member)
        if owner_batch == batch_id:
            continue  # this batch's items were read above: not among their predictions
        record = ledger.item(owner_batch, owner_item)
        if prediction_id in json.loads(record.get("prediction_ids") or "[]"):
            held.add(prediction_id)
    return held


def _held_by_compacted_batches(
    ledger: Ledger, batch_id: str, prediction_ids: set[str], *, since: float, until: float
) -> set[str]:
    """Those of these predictions that an item of another batch, compacted since, holds.
    Compaction deletes the index entries of predictions the provider's list no longer shows
    (`pipeline.retention`); an audit of a batch whose time overlapped that batch's, run when
    the provider still shows them (a history longer than documented), finds them among the
    compacted batch's packed items. Only batches created before the window ends and finished
    after it begins are read, and only when some prediction is not attributed otherwise."""
    return {
        prediction_id
        for prediction_id, _ in compacted_holders(
            ledger, prediction_ids, since=since, until=until, besides=batch_id
        )
    }


def compacted_holders(
    ledger: Ledger,
    prediction_ids: set[str],
    *,
    since: float,
    until: float,
    besides: str | None = None,
) -> Iterator[tuple[str, str]]:
    """(prediction, `batch:item` holding it) for each of these predictions that an item of a
    compacted batch whose time overlaps `since`..`until` (epoch s) holds, `besides` left out:
    the owner of a prediction whose index entry compaction deleted (its batch's packed items
    are then the only record of it). Reads nothing when `prediction_ids` is empty."""
    if not prediction_ids:
        return
    for other in ledger.compacted_batches_between(since, until):
        if other == besides:
            continue
        for record in ledger.iter_items(other):
            for prediction_id in prediction_ids & set(
                json.loads(record.get("prediction_ids") or "[]")
            ):
                yield prediction_id, keys.slot_member(other, record["id"])


def _utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, tz=UTC)
