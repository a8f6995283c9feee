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

    found = audit_batch(ledger, provider, batch_id, model="sync/lipsync-3", now=time.time())
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pipeline import keys
from pipeline.errors import ProviderError
from pipeline.ledger import Ledger
from pipeline.provider.client import LIST_PAGE_SIZE_MAX, ProviderClient
from pipeline.states import ItemState

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

    @property
    def unattributed_usd(self) -> Decimal:
        """What the unattributed predictions cost: charged per the provider's billing
        records, else estimated where it can be told."""
        return sum((u.cost_usd for u in self.unattributed), Decimal(0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "predictions": self.predictions,
            "unattributed": [u.to_dict() for u in self.unattributed],
            "unattributed_usd": str(self.unattributed_usd),
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
        free = prediction.status in ("failed", "cancelled", "timeout", "deleted")
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
    billing_error = None
    if unattributed:
        try:
            charged = provider.charges_usd([u.id for u in unattributed])
            unattributed = [replace(u, charged_usd=charged.get(u.id)) for u in unattributed]
        except ProviderError as err:
            billing_error = str(err)
    return Audit(
        at=now,
        predictions=len(listed),
        unattributed=tuple(unattributed),
        complete=len(listed) < MAX_PAGES * LIST_PAGE_SIZE_MAX,
        billing_error=billing_error,
    )


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


def _utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, tz=UTC)
