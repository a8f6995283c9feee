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
    FailureTally,
    Histogram,
    HistogramTally,
    Reuse,
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
    problems: list[dict[str, Any]] = field(default_factory=list)
    """The first items that did not complete, with their errors (for the Markdown summary)."""
    problems_total: int = 0

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


class _Sums:
    """One cost group's running sums."""

    __slots__ = ("billable_s", "completed", "cost_usd", "estimate_usd", "items")

    def __init__(self) -> None:
        self.items = self.completed = 0
        self.billable_s = 0.0
        self.estimate_usd = self.cost_usd = Decimal(0)

    def add(self, item: dict[str, Any]) -> None:
        self.items += 1
        self.completed += item["state"] == "completed"
        self.billable_s += item["billable_s"] or 0.0
        self.estimate_usd += _usd(item["estimate_usd"])
        self.cost_usd += _usd(item["cost_usd"])

    def group(self, value: str) -> CostGroup:
        return CostGroup(
            value=value,
            items=self.items,
            completed=self.completed,
            billable_s=round(self.billable_s, 3),
            estimate_usd=self.estimate_usd,
            cost_usd=self.cost_usd,
        )


def _sorted_groups(sums: dict[str, _Sums]) -> list[CostGroup]:
    groups = [s.group(value) for value, s in sums.items()]
    return sorted(groups, key=lambda g: (-g.cost_usd, -g.estimate_usd, g.value))


class SummaryBuilder:
    """The summary's figures added up one item at a time, so a batch's report can be written
    by streaming over its items: memory does not grow with the batch. A metadata column stops
    being tracked once it has more values than `MAX_GROUPS_PER_COLUMN`; each item's own
    timeline is kept only for a batch of up to `timeline_items`; the failures listed in full
    are the first `problems_listed`.

        builder = SummaryBuilder(head, item_count=n, end_s=head["finished_at"])
        for item in items: builder.add(item)
        summary = builder.build()
    """

    def __init__(
        self,
        head: dict[str, Any],
        *,
        item_count: int,
        end_s: float | None,
        timeline_items: int = 400,
        problems_listed: int = 20,
    ) -> None:
        self.head = head
        self.origin_s = float(head.get("created_at") or 0.0)
        self.keep_timeline = item_count <= timeline_items
        self.problems_listed = problems_listed
        self.items = 0
        self.billable_s = 0.0
        self.cost_usd = Decimal(0)
        self.by_sync_mode: dict[str, _Sums] = defaultdict(_Sums)
        self.by_metadata: dict[str, dict[str, _Sums] | None] = {}
        self.timeline: list[TimelineRow] = []
        self.span_s = 0.0
        self.failures = FailureTally()
        self.reused = 0
        self.saved_usd = Decimal(0)
        self.problems: list[dict[str, Any]] = []
        self.problems_total = 0
        end = end_s if end_s is not None else head.get("finished_at")
        self.histogram = HistogramTally(self.origin_s, float(end or self.origin_s))

    def add(self, item: dict[str, Any]) -> None:
        """Count one item of the report (`pipeline.reporting.data.item_report`)."""
        self.items += 1
        self.billable_s += item["billable_s"] or 0.0
        self.cost_usd += _usd(item["cost_usd"])
        self.by_sync_mode[str(item["sync_mode"])].add(item)
        for column, value in item["metadata"].items():
            groups = self.by_metadata.setdefault(column, {})
            if groups is None:
                continue
            groups.setdefault(str(value), _Sums()).add(item)
            if len(groups) > MAX_GROUPS_PER_COLUMN:
                self.by_metadata[column] = None  # titles, say: not a grouping
        self._timeline(item)
        self.failures.add(item)
        self.histogram.add(item)
        if item.get("reused_from"):
            self.reused += 1
            self.saved_usd += _usd(item.get("estimate_usd"))
        if item["state"] != "completed" and item.get("error"):
            self.problems_total += 1
            if len(self.problems) < self.problems_listed:
                self.problems.append(
                    {k: item.get(k) for k in ("id", "row", "state", "error", "hint")}
                )

    def _timeline(self, item: dict[str, Any]) -> None:
        phases = []
        for name in PHASE_NAMES:
            phase = item["phases"].get(name)
            if phase:
                start, end = phase["start"] - self.origin_s, phase["end"] - self.origin_s
                phases.append((name, round(start, 3), round(end, 3)))
                self.span_s = max(self.span_s, end)
        if self.keep_timeline:
            self.timeline.append(
                TimelineRow(item_id=str(item["id"]), state=str(item["state"]), phases=phases)
            )

    def build(self) -> Summary:
        """The summary of the items added so far."""
        report = self.head
        counts = {state: n for state, n in report["counts"].items() if n}
        final = sum(n for state, n in counts.items() if state in FINAL_STATES)
        completed = counts.get("completed", 0)
        created, finished = report.get("created_at"), report.get("finished_at")
        wall_s = round(finished - created, 3) if created and finished else None
        per_minute = round(completed / wall_s * 60, 2) if wall_s else None
        by_metadata = {}
        for column in sorted(self.by_metadata):
            sums = self.by_metadata[column]
            if sums is not None and len(sums) < max(self.items, 2):
                by_metadata[column] = _sorted_groups(sums)
        audit = report.get("audit") or {}
        return Summary(
            counts=counts,
            items=self.items,
            final=final,
            completed=completed,
            billable_s=round(self.billable_s, 3),
            estimate_usd=_usd(report.get("estimate_usd")),
            cost_usd=self.cost_usd,
            wall_s=wall_s,
            items_per_minute=per_minute,
            by_sync_mode=_sorted_groups(self.by_sync_mode),
            by_metadata=by_metadata,
            timeline=self.timeline,
            timeline_span_s=round(self.span_s, 3),
            price_basis=str(report.get("price_basis") or ""),
            balance_change_usd=_balance_change(report),
            unattributed=len(audit.get("unattributed", [])),
            unattributed_usd=_usd(audit.get("unattributed_usd")),
            unattributed_billed=audit.get("charges_from") == "billing",
            unbooked=len(audit.get("unbooked", [])),
            unbooked_usd=_usd(audit.get("unbooked_usd")),
            unbooked_pending=sum(1 for u in audit.get("unbooked", []) if u.get("pending")),
            failures=self.failures.groups(),
            reuse=Reuse(items=self.reused, saved_usd=self.saved_usd),
            histogram=self.histogram.build(),
            problems=self.problems,
            problems_total=self.problems_total,
        )


def summarize(report: dict[str, Any]) -> Summary:
    """The figures for a report from `batch_report` (its items in memory)."""
    items: list[dict[str, Any]] = report["items_detail"]
    end_s = report.get("finished_at") or max(
        (p["end"] for i in items for p in i["phases"].values() if p), default=None
    )
    builder = SummaryBuilder(report, item_count=len(items), end_s=end_s)
    for item in items:
        builder.add(item)
    return builder.build()


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
