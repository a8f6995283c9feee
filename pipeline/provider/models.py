"""The provider's data: prediction statuses and the prediction object, parsed leniently.

The envelope is `{code, message, data}`. Unknown fields are kept in `raw`; an unknown status
is kept as text and treated as not terminal (contract.md), so a new status on the provider's
side makes lipdub poll again rather than crash or give up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    """Prediction statuses: the documented four, and three that clients treat as terminal."""

    CREATED = "created"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    DELETED = "deleted"


TERMINAL_STATUSES = frozenset(
    {Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.TIMEOUT, Status.DELETED}
)


def is_terminal(status: str) -> bool:
    """True for a status after which the prediction never changes. Unknown text is not."""
    return status in {s.value for s in TERMINAL_STATUSES}


@dataclass(frozen=True)
class Prediction:
    """One prediction as the provider reports it."""

    id: str
    status: str
    model: str = ""
    outputs: tuple[str, ...] = ()
    error: str = ""
    code: int | None = None
    """WaveSpeed's error code of a failed task (docs/error-codes): 1xxx the input's fault
    (1402: an input URL could not be fetched), 5xxx the service's. None when absent or 0."""
    created_at: datetime | None = None
    inference_ms: int | None = None
    has_nsfw_contents: tuple[bool, ...] = ()
    inputs: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def terminal(self) -> bool:
        """True when the status will not change any more."""
        return is_terminal(self.status)

    @property
    def known_status(self) -> Status | None:
        """The status as an enum, or None when the provider sent one we do not know."""
        try:
            return Status(self.status)
        except ValueError:
            return None

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Prediction:
        """Parse the envelope's `data` object. Raises ValueError when it has no id."""
        pred_id = data.get("id")
        if not isinstance(pred_id, str) or not pred_id:
            raise ValueError("prediction without an id")
        outputs = data.get("outputs") or []
        timings = data.get("timings") or {}
        inference = timings.get("inference") if isinstance(timings, dict) else None
        nsfw = data.get("has_nsfw_contents") or []
        code = data.get("code")
        if isinstance(code, str) and code.isdigit():
            code = int(code)
        # Undocumented whether (and under which name) list items carry their inputs.
        raw_inputs = data.get("input", data.get("inputs"))
        inputs = raw_inputs if isinstance(raw_inputs, dict) else None
        return cls(
            id=pred_id,
            status=str(data.get("status") or "created"),
            model=str(data.get("model") or ""),
            outputs=tuple(str(o) for o in outputs if isinstance(o, str)),
            error=str(data.get("error") or ""),
            code=code if isinstance(code, int) and not isinstance(code, bool) and code else None,
            created_at=parse_timestamp(data.get("created_at")),
            inference_ms=int(inference) if isinstance(inference, int | float) else None,
            has_nsfw_contents=tuple(bool(x) for x in nsfw if isinstance(x, bool)),
            inputs=inputs,
            raw=data,
        )


@dataclass(frozen=True)
class PredictionPage:
    """One page of the list call (most recent first)."""

    page: int
    items: tuple[Prediction, ...]
    total: int | None = None


_LONG_FRACTION = re.compile(r"(\.\d{7,})")


def parse_timestamp(value: object) -> datetime | None:
    """Parse the provider's RFC 3339 timestamps (with nanoseconds and a Z); None if absent."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    # Python parses at most microseconds: trim longer fractions (RFC 3339 allows nanoseconds).
    text = _LONG_FRACTION.sub(lambda m: m.group(1)[:7], text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


MICRO_USD_ABOVE = Decimal(1000)
"""A billing price above this is read as micro-USD. WaveSpeed's billing docs disagree on the
unit: the field table says "Amount in USD" (an example shows 0.02), another example shows
24300 for a $0.027 model (micro-USD after a discount). No single prediction of the model
costs $1,000 (that is over two hours of video), so the two readings cannot be confused."""


@dataclass(frozen=True)
class BillingRecord:
    """One record of `POST /api/v3/billings/search`: money taken (or given back) for a
    prediction. A record exists from the prediction's creation (its order `pre`, the price
    held) and its order is `done` once charged."""

    prediction_id: str
    billing_type: str
    price_usd: Decimal
    order_state: str

    @property
    def charged_usd(self) -> Decimal:
        """What it charged: a `deduct` whose order is `done`; a refund gives back
        (undocumented; read by its type's name); a price only held (order `pre`, the
        prediction unfinished) or released is no charge yet.

        >>> BillingRecord("p", "deduct", Decimal("0.4"), "done").charged_usd
        Decimal('0.4')
        >>> BillingRecord("p", "deduct", Decimal("0.4"), "pre").charged_usd
        Decimal('0')
        >>> BillingRecord("p", "refund", Decimal("0.4"), "done").charged_usd
        Decimal('-0.4')
        """
        if "refund" in self.billing_type.lower():
            return -self.price_usd
        return self.price_usd if self.order_state == "done" else Decimal(0)

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> BillingRecord:
        """Parse one record (ValueError when it names no prediction or no price).

        >>> BillingRecord.from_data({"billing_type": "deduct", "price": 24300,
        ...     "order": {"state": "done"}, "prediction": {"uuid": "p1"}}).price_usd
        Decimal('0.0243')
        """
        prediction = data.get("prediction") or {}
        order = data.get("order") or {}
        prediction_id = prediction.get("uuid") if isinstance(prediction, dict) else None
        price = data.get("price")
        if not isinstance(prediction_id, str) or not prediction_id:
            raise ValueError("a billing record without its prediction")
        if isinstance(price, bool) or not isinstance(price, int | float | str):
            raise ValueError("a billing record without a price")
        try:
            value = Decimal(str(price))
        except InvalidOperation as err:
            raise ValueError(f"a billing price {price!r}") from err
        if not value.is_finite():
            raise ValueError(f"a billing price {price!r}")
        if value > MICRO_USD_ABOVE:
            value = value / 1_000_000
        return cls(
            prediction_id=prediction_id,
            billing_type=str(data.get("billing_type") or ""),
            price_usd=value,
            order_state=str(order.get("state") or "") if isinstance(order, dict) else "",
        )
