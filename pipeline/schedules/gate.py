"""The gate a scheduled batch's submits pass first: its window, then its nightly budget.

Outside the window an item is *parked*: it stays `ready`, holds no slot and no reservation,
and waits in the schedule's parked set until the window next opens, when beat's tick wakes
it (the sweeper wakes it too, `task_time_limit_s` later, should no beat be running). The
first item parked after its window closed posts the "window closed" notice of its batch for
that night. Inside the window its estimated cost is reserved in the batch's budget and the
night's budget together; when the night's budget cannot take it, it is parked until the next
night's window (and the "nightly budget reached" notice is posted). An item that costs more
than a whole night's budget could never run: it ends `skipped`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from pipeline.records import BatchRecord, Item
from pipeline.runtime import Runtime
from pipeline.schedules.config import WindowSpec
from pipeline.schedules.notices import post_notice
from pipeline.schedules.store import ScheduleStore
from pipeline.schedules.window import Window
from pipeline.states import PARKED, ItemState
from pipeline.steps import Next


@dataclass(frozen=True)
class ScheduledBatch:
    """What a batch record says about the schedule that started it."""

    schedule: str
    window: Window
    nightly_budget_usd: Decimal | None
    created_at_s: float

    @classmethod
    def of(cls, batch: BatchRecord) -> ScheduledBatch | None:
        """None for a batch no schedule started."""
        if not batch.scheduled:
            return None
        raw = batch.raw
        spec = json.loads(raw["window"]) if raw.get("window") else None
        zone = ZoneInfo(raw.get("timezone") or "UTC")
        limit = raw.get("nightly_budget_usd")
        return cls(
            batch.schedule,
            Window(WindowSpec(**spec) if spec else None, zone),
            Decimal(limit) if limit else None,
            batch.created_at or 0.0,
        )

    def night_scope(self, now_s: float) -> str:
        """The budget every batch of this schedule shares tonight."""
        return night_scope(self.schedule, self.window.night(now_s))

    def next_night_s(self, now_s: float) -> float:
        """When the next night's window opens (the next local midnight without a window)."""
        closes = self.window.closes_at_s(now_s)
        if closes is not None:
            return self.window.next_open_s(closes)
        if self.window.spec is not None:
            return self.window.next_open_s(now_s)
        local = datetime.fromtimestamp(now_s, tz=self.window.zone)
        midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time())
        return midnight.replace(tzinfo=self.window.zone).timestamp()


def night_scope(schedule: str, night: str) -> str:
    """The budget scope of one schedule's night."""
    return f"schedule:{schedule}:{night}"


@dataclass(frozen=True)
class GateOutcome:
    """`passed`: reserved, go on to the shared gates. Else run `following` (the item is
    parked), or, with a `refusal`, end the item `skipped` for that reason."""

    passed: bool
    following: tuple[Next, ...] = ()
    refusal: str = ""


def scheduled_gate(
    rt: Runtime, item: Item, batch_scope: str, scheduled: ScheduledBatch
) -> GateOutcome:
    """Check the window, then reserve the item's cost in the batch's and the night's budgets."""
    now = rt.clock()
    store = ScheduleStore(rt.ledger.redis)
    window = scheduled.window
    if not window.is_open(now):
        opens = window.next_open_s(now)
        notice: list[Next] = []
        closed = window.last_closed_s(now)
        if closed is not None and scheduled.created_at_s < closed:
            # The window closed on this batch (not: it was started outside its window).
            text = (
                f"**{scheduled.schedule}**: the submission window ({window.describe()}) closed "
                f"with items of batch `{item.batch_id}` still to submit; they wait for the "
                "next window."
            )
            event = f"{item.batch_id}.window.{closed:.0f}"
            notice = post_notice(store, scheduled.schedule, event, text)
        return _park(rt, store, item, scheduled, opens, PARKED[0], notice)
    tonight = scheduled.night_scope(now)
    if scheduled.nightly_budget_usd is not None:
        rt.ledger.ensure_budget_limit(tonight, scheduled.nightly_budget_usd)
    if rt.ledger.reserve([batch_scope, tonight], item.batch_id, item.id, item.price_usd):
        if item.record.waiting_on in PARKED:
            rt.ledger.update_item(item.batch_id, item.id, ItemState.READY, {"waiting_on": ""})
        return GateOutcome(passed=True)
    budget = rt.ledger.budget(tonight)
    limit = budget["limit_usd"]
    if limit is not None and limit < item.price_usd:
        return GateOutcome(
            passed=False,
            refusal=f"the item's ${item.price_usd} is more than a whole night's budget "
            f"(${limit}) of schedule {scheduled.schedule}",
        )
    if limit is None:
        # Refused by the batch's own budget, not the night's: the usual skip.
        return GateOutcome(passed=False, refusal=f"over the batch budget of {item.batch_id}")
    next_night = scheduled.next_night_s(now)
    night = window.night(now)
    text = (
        f"**{scheduled.schedule}**: tonight's budget (${budget['limit_usd']}, night {night}) "
        f"is spent or reserved; batch `{item.batch_id}` has items waiting for the next night."
    )
    notice = post_notice(store, scheduled.schedule, f"{item.batch_id}.budget.{night}", text)
    return _park(rt, store, item, scheduled, next_night, PARKED[1], notice)


def _park(
    rt: Runtime,
    store: ScheduleStore,
    item: Item,
    scheduled: ScheduledBatch,
    until_s: float,
    reason: str,
    notice: list[Next],
) -> GateOutcome:
    """Wait, holding nothing, until `until_s`: beat's tick wakes the item then."""
    moved = rt.ledger.update_item(
        item.batch_id,
        item.id,
        ItemState.READY,
        {"waiting_on": reason, "next_step": "submit", "next_due_at": repr(until_s)},
        when=item.fence,
    )
    if not moved:
        return GateOutcome(passed=False)
    # A reservation made before it waited for a slot goes back: tonight's budget is for
    # items that can still run tonight.
    rt.ledger.unreserve(item.batch_id, item.id)
    store.park(scheduled.schedule, item.member, until_s)
    return GateOutcome(passed=False, following=tuple(notice))
