"""What a person wants to know about a finished (or running) batch, computed from its report.

`summarize(report)` takes the dict `pipeline.reporting.data.batch_report` builds from the ledger and
returns plain numbers: items by state, billable seconds, estimated vs. final cost, wall time,
throughput, cost by sync_mode and by each metadata column, each item's timeline, and the
figures that keep a big batch's report one screen (`pipeline.reporting.overview`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pipeline.reporting.data import PHASES
from pipeline.reporting.overview import (
    FailureGroup,
    Histogram,
    Reuse,
    failure_groups,
    phase_histogram,
    reuse,
)
from pipeline.states import FINAL_STATES

PHASE_NAMES = tuple(PHASES)
MAX_GROUPS_PER_COLUMN = 50
"""A metadata column with more distinct values than this (titles, say) is not a grouping."""


@dataclass(frozen=True)
class CostGroup:
    """Items sharing one value of a column, and what they cost."""

    value: str
    items: int
    completed: int
    billable_s: float
    estimate_usd: Decimal
    cost_usd: Decimal


@dataclass(frozen=True)
class TimelineRow:
    """One item's phases as (phase, start, end) in seconds since the batch was created."""

    item_id: str
    state: str
    phases: list[tuple[str, float, float]]


@dataclass(frozen=True)
class Summary:
    """The headline figures of a batch."""

    counts: dict[str, int]
    items: int
    final: int
    completed: int
    billable_s: float
    estimate_usd: Decimal
    cost_usd: Decimal
    wall_s: float | None
    items_per_minute: float | None
    by_sync_mode: list[CostGroup]
    by_metadata: dict[str, list[CostGroup]] = field(default_factory=dict)
    timeline: list[TimelineRow] = field(default_factory=list)
    timeline_span_s: float = 0.0
    price_basis: str = ""
    """What priced the items: the provider's quotes, or the price model."""
    balance_change_usd: Decimal | None = None
    """How much the provider's balance fell while the batch ran (other use of the key counts
    too), when it was read before and after."""
    unattributed: int = 0
    """Predictions of the model in the batch's time that no lipdub item has (the audit)."""
    unattributed_usd: Decimal = Decimal(0)
    """What those cost: from the provider's billing records, else estimated."""
    unattributed_billed: bool = False
    """True when `unattributed_usd` comes from the billing records (to the cent)."""
    unbooked: int = 0
    """Predictions of the batch's own items charged beyond what the items booked (an item
    timed out while its prediction ran on; a failed prediction the provider charged)."""
    unbooked_usd: Decimal = Decimal(0)
    unbooked_pending: int = 0
    """Of those, the ones still running when the audit looked (priced at their estimate)."""
    failures: list[FailureGroup] = field(default_factory=list)
    """Items that did not complete, grouped by state, error kind and hint."""
    reuse: Reuse = field(default_factory=lambda: Reuse(items=0, saved_usd=Decimal(0)))
    histogram: Histogram | None = None
    """Items per phase over time, for every item (`pipeline.reporting.overview`)."""

    @property
    def charged_usd(self) -> Decimal:
        """Every charge of the batch: lipdub's spend, the unattributed predictions' and the
        unbooked ones'."""
        return self.cost_usd + self.unattributed_usd + self.unbooked_usd

    @property
    def unattributed_charge_text(self) -> str:
        """`$x.xx was charged for them` (billing records) or `... may have been` (estimates)."""
        verb = "was charged" if self.unattributed_billed else "may have been charged"
        return f"${self.unattributed_usd:.2f} {verb} for them"


def _usd(value: Any) -> Decimal:
    return Decimal(str(value)) if value not in (None, "") else Decimal(0)


def _groups(items: list[dict[str, Any]], value_of: Any) -> list[CostGroup]:
    buckets: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in items:
        buckets[str(value_of(item))].append(item)
    groups = [
        CostGroup(
            value=value,
            items=len(members),
            completed=sum(1 for m in members if m["state"] == "completed"),
            billable_s=round(sum(m["billable_s"] or 0.0 for m in members), 3),
            estimate_usd=sum((_usd(m["estimate_usd"]) for m in members), Decimal(0)),
            cost_usd=sum((_usd(m["cost_usd"]) for m in members), Decimal(0)),
        )
        for value, members in buckets.items()
    ]
    return sorted(groups, key=lambda g: (-g.cost_usd, -g.estimate_usd, g.value))


def _timeline(items: list[dict[str, Any]], origin_s: float) -> tuple[list[TimelineRow], float]:
    rows = []
    span = 0.0
    for item in items:
        phases = []
        for name in PHASE_NAMES:
            phase = item["phases"].get(name)
            if phase:
                start, end = phase["start"] - origin_s, phase["end"] - origin_s
                phases.append((name, round(start, 3), round(end, 3)))
                span = max(span, end)
        rows.append(TimelineRow(item_id=str(item["id"]), state=str(item["state"]), phases=phases))
    return rows, span


def summarize(report: dict[str, Any]) -> Summary:
    """The figures for a report from `batch_report`."""
    items: list[dict[str, Any]] = report["items_detail"]
    counts = {state: n for state, n in report["counts"].items() if n}
    final = sum(n for state, n in counts.items() if state in FINAL_STATES)
    completed = counts.get("completed", 0)
    created, finished = report.get("created_at"), report.get("finished_at")
    wall_s = round(finished - created, 3) if created and finished else None
    per_minute = round(completed / wall_s * 60, 2) if wall_s else None
    columns = sorted({key for item in items for key in item["metadata"]})
    by_metadata = {}
    for column in columns:
        groups = _groups(items, lambda item, c=column: item["metadata"].get(c, ""))
        if len(groups) <= MAX_GROUPS_PER_COLUMN and len(groups) < max(len(items), 2):
            by_metadata[column] = groups
    timeline, span = _timeline(items, float(created or 0.0))
    return Summary(
        counts=counts,
        items=len(items),
        final=final,
        completed=completed,
        billable_s=round(sum(i["billable_s"] or 0.0 for i in items), 3),
        estimate_usd=_usd(report.get("estimate_usd")),
        cost_usd=sum((_usd(i["cost_usd"]) for i in items), Decimal(0)),
        wall_s=wall_s,
        items_per_minute=per_minute,
        by_sync_mode=_groups(items, lambda item: item["sync_mode"]),
        by_metadata=by_metadata,
        timeline=timeline,
        timeline_span_s=round(span, 3),
        price_basis=str(report.get("price_basis") or ""),
        balance_change_usd=_balance_change(report),
        unattributed=len((report.get("audit") or {}).get("unattributed", [])),
        unattributed_usd=_usd((report.get("audit") or {}).get("unattributed_usd")),
        unattributed_billed=(report.get("audit") or {}).get("charges_from") == "billing",
        unbooked=len((report.get("audit") or {}).get("unbooked", [])),
        unbooked_usd=_usd((report.get("audit") or {}).get("unbooked_usd")),
        unbooked_pending=sum(
            1 for u in (report.get("audit") or {}).get("unbooked", []) if u.get("pending")
        ),
        failures=failure_groups(items),
        reuse=reuse(items),
        histogram=phase_histogram(items, float(created or 0.0)),
    )


def _balance_change(report: dict[str, Any]) -> Decimal | None:
    before, after = report.get("balance_before_usd"), report.get("balance_after_usd")
    if not before or not after:
        return None
    return _usd(before) - _usd(after)


def unbooked_line(s: Summary) -> str:
    """The red line for predictions of the batch's items charged beyond their books.

    >>> print(unbooked_line(Summary(counts={}, items=1, final=1, completed=0, billable_s=0.0,
    ...     estimate_usd=Decimal(1), cost_usd=Decimal(0), wall_s=None, items_per_minute=None,
    ...     by_sync_mode=[], unbooked=1, unbooked_usd=Decimal("0.67"), unbooked_pending=1)))
    NOT IN THE ITEMS' COSTS: 1 prediction(s) of this batch's items cost $0.67 that their items booked at $0 (an item timed out while its prediction ran on, or a failed prediction was charged); 1 still running, priced at its item's estimate: run `lipdub audit BATCH` once it ends; every charge of the batch: $0.67.
    """
    pending = (
        f"; {s.unbooked_pending} still running, priced at its item's estimate: run "
        "`lipdub audit BATCH` once it ends"
        if s.unbooked_pending
        else ""
    )
    return (
        f"NOT IN THE ITEMS' COSTS: {s.unbooked} prediction(s) of this batch's items cost "
        f"${s.unbooked_usd:.2f} that their items booked at $0 (an item timed out while its "
        f"prediction ran on, or a failed prediction was charged){pending}; every charge of "
        f"the batch: ${s.charged_usd:.2f}."
    )


def money_lines(s: Summary) -> list[str]:
    """The sentences every report format shows under the cost: what priced the items, and
    the provider's balance change beside lipdub's spend.

    >>> money_lines(summarize({"items_detail": [], "counts": {}, "price_basis": "provider quote",
    ...     "balance_before_usd": "10", "balance_after_usd": "9.5"}))
    ['Priced by the provider quote.', "The provider's balance fell by $0.50 while the batch ran; lipdub's spend: $0.00 (other use of the key counts too)."]
    """
    lines = [f"Priced by the {s.price_basis}."] if s.price_basis else []
    if s.unattributed:
        lines.append(
            f"UNATTRIBUTED: {s.unattributed} prediction(s) of the model made in the batch's "
            f"time belong to no lipdub item ({s.unattributed_charge_text}; every charge "
            f"of the batch: ${s.charged_usd:.2f}): see the report's audit, and "
            "`lipdub adopt` the ones that are ours."
        )
    if s.unbooked:
        lines.append(unbooked_line(s))
    if s.balance_change_usd is not None:
        lines.append(
            f"The provider's balance fell by ${s.balance_change_usd:.2f} while the batch ran; "
            f"lipdub's spend: ${s.cost_usd:.2f} (other use of the key counts too)."
        )
    return lines
