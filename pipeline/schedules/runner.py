"""Run the schedules: decide what is due, pick manifests up once, wake parked items.

    scheduler = Scheduler.build(settings, schedules, control, s3)
    scheduler.tick()            # beat's periodic task: due runs, missed runs, parked items
    scheduler.run("nightly")    # `lipdub schedule run-now nightly`

A run of a schedule looks in its inbox. Each manifest that has settled is claimed in Redis
(one claimant wins, whatever the number of schedulers), moved to `processing/`, planned, and
started as a batch whose id was recorded in the claim first, so a run that dies half-way is
finished by a later run without starting a second batch. An invalid manifest goes to
`failed/` with `<name>.errors.txt` listing every problem by row and field. A run also
re-concludes batches in `processing/` that finished while their conclude step was lost.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from pipeline import wiring
from pipeline.batches import BatchControl
from pipeline.errors import LipdubError, ManifestError
from pipeline.keys import slot_member_ids
from pipeline.ledger import Ledger, from_micros, to_micros
from pipeline.planning import Plan
from pipeline.provider.client import ProviderClient
from pipeline.provider.retry import RetryPolicy
from pipeline.schedules.config import ScheduleSpec
from pipeline.schedules.gate import night_scope
from pipeline.schedules.inbox import Dropped, Inbox, open_inbox, scratch_dir
from pipeline.schedules.notices import post_notice
from pipeline.schedules.store import ScheduleStore
from pipeline.schedules.timing import Verdict, decide
from pipeline.schedules.window import Window
from pipeline.settings import Settings
from pipeline.steps import Next
from pipeline.sync_modes import SyncMode

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


log = logging.getLogger("lipdub.schedule")

Planner = Callable[[Path, SyncMode | None, Path | str], Plan]
"""(manifest file, the schedule's default sync_mode, where relative inputs start) -> Plan."""


@dataclass
class RunOutcome:
    """What one run of a schedule did."""

    schedule: str
    trigger: str
    at_s: float
    started: list[dict[str, str]] = field(default_factory=list)
    refused: list[dict[str, str]] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "schedule": self.schedule,
            "trigger": self.trigger,
            "at": self.at_s,
            "started": self.started,
            "refused": self.refused,
            "waiting": self.waiting,
            "errors": self.errors,
        }


def settings_planner(settings: Settings) -> Planner:
    """Plan as `lipdub plan` does: the probe cache, s3:// and https:// inputs probed remotely,
    priced by the provider's quotes (the price model when it does not answer)."""

    def plan(manifest: Path, sync_mode: SyncMode | None, base: Path | str) -> Plan:
        provider = ProviderClient.from_settings(
            settings.provider, retry_policy=RetryPolicy(max_attempts=1)
        )
        try:
            return wiring.plan(
                settings, manifest, provider=provider, default_sync_mode=sync_mode, base_dir=base
            )
        finally:
            provider.close()

    return plan


@dataclass
class Scheduler:
    """The schedules and everything a run needs; every decision is shared through Redis."""

    settings: Settings
    schedules: dict[str, ScheduleSpec]
    store: ScheduleStore
    control: BatchControl
    s3: S3Client
    planner: Planner
    clock: Callable[[], float]

    @classmethod
    def build(
        cls,
        settings: Settings,
        schedules: dict[str, ScheduleSpec],
        control: BatchControl,
        s3: S3Client,
        *,
        planner: Planner | None = None,
    ) -> Scheduler:
        """A scheduler on the batch control's ledger and clock."""
        return cls(
            settings,
            schedules,
            ScheduleStore(control.ledger.redis),
            control,
            s3,
            planner or settings_planner(settings),
            control.clock,
        )

    @property
    def ledger(self) -> Ledger:
        return self.control.ledger

    def tick(self) -> list[RunOutcome]:
        """Handle every schedule's latest fire time once, and wake items whose wait is over."""
        outcomes = []
        for spec in self.schedules.values():
            now = self.clock()
            decision = decide(
                spec,
                last_handled_s=self.store.last_handled_s(spec.name),
                now_s=now,
                on_time_s=self.on_time_s,
            )
            if decision.verdict is not Verdict.WAIT and self.store.claim_fire(
                spec.name, decision.fire_at_s
            ):
                fired = _clock_text(decision.fire_at_s, spec)
                if decision.runs:
                    trigger = f"{decision.verdict.value} ({fired}, {decision.late_s:.0f} s late)"
                    outcomes.append(self.run(spec.name, trigger=trigger))
                elif decision.verdict is Verdict.SKIP_MISSED:
                    outcomes.append(self._missed(spec, fired, decision.late_s))
                else:
                    log.info("schedule %s: first seen; next run by its cron", spec.name)
            self._refresh_budget(spec, now)
            self.wake(spec.name)
        return outcomes

    @property
    def on_time_s(self) -> float:
        """A fire time found within this of its time is on time (a few beat ticks)."""
        return max(60.0, 3 * self.settings.schedule.tick_s)

    def run(self, name: str, *, trigger: str = "run-now") -> RunOutcome:
        """Pick up every settled manifest in the schedule's inbox; what was done."""
        spec = self.schedules[name]
        outcome = RunOutcome(name, trigger, self.clock())
        inbox = open_inbox(spec.inbox, self.s3)
        for folder, handle in (("", self._pick_up), ("processing", self._resume)):
            try:
                found = inbox.dropped(folder)
            except LipdubError as err:
                outcome.errors.append(f"{spec.inbox}: {err}")
                break
            for dropped in found:
                try:
                    handle(spec, inbox, dropped, outcome)
                except LipdubError as err:  # this manifest's trouble; the others go on
                    outcome.errors.append(f"{dropped.name}: {err} (tried again at the next run)")
        for problem in outcome.errors:
            log.warning("schedule %s: %s", name, problem)
        log.info(
            "schedule %s (%s): %d started, %d refused, %d waiting",
            name,
            trigger,
            len(outcome.started),
            len(outcome.refused),
            len(outcome.waiting),
        )
        self.store.record_outcome(name, outcome.to_dict())
        return outcome

    def wake(self, name: str) -> int:
        """Send the submit step of each parked item whose wait is over; how many."""
        due = self.store.pop_parked(name, self.clock())
        steps = [Next("submit", *slot_member_ids(member)) for member in due]
        self.ledger.expect(steps, self.clock())
        for step in steps:
            self.control.dispatcher.send(step)
        return len(steps)

    # ---------------------------------------------------------------- one manifest

    def _pick_up(
        self, spec: ScheduleSpec, inbox: Inbox, dropped: Dropped, outcome: RunOutcome
    ) -> None:
        now = self.clock()
        if dropped.settling(now, self.settings.schedule.inbox_settle_s):
            outcome.waiting.append(f"{dropped.name}: still changing; picked up once it settles")
            return
        if inbox.exists("processing", dropped.name):
            outcome.waiting.append(
                f"{dropped.name}: a manifest of that name is still processing; "
                "picked up when it is done"
            )
            return
        if not self._claim(spec, dropped, now):
            return
        inbox.move(("", dropped.name), ("processing", dropped.name))
        self._start(spec, inbox, dropped, outcome)

    def _resume(
        self, spec: ScheduleSpec, inbox: Inbox, dropped: Dropped, outcome: RunOutcome
    ) -> None:
        record = self.store.pickup(spec.name, dropped.pickup_id)
        if not record:
            outcome.waiting.append(
                f"processing/{dropped.name}: this Redis has no record of it; "
                "move it back to the inbox to run it"
            )
            return
        if record.get("state") == "started":
            batch = self.ledger.batch(record.get("batch_id", ""))
            if batch is not None and batch.finished and batch.concluded_at is None:
                self.control.dispatcher.send(Next("conclude", batch.id))
            return
        if self._claim(spec, dropped, self.clock()):
            self._start(spec, inbox, dropped, outcome)

    def _claim(self, spec: ScheduleSpec, dropped: Dropped, now: float) -> bool:
        return self.store.claim_pickup(
            spec.name,
            dropped.pickup_id,
            token=secrets.token_hex(8),
            now_s=now,
            lease_s=self.settings.schedule.pickup_lease_s,
            manifest=dropped.name,
        )

    def _start(
        self, spec: ScheduleSpec, inbox: Inbox, dropped: Dropped, outcome: RunOutcome
    ) -> None:
        """Plan and start a claimed manifest (in `processing/`); a failure leaves the claim
        to lapse, and a later run tries again."""
        record = self.store.pickup(spec.name, dropped.pickup_id)
        batch_id = record.get("batch_id") or scheduled_batch_id(
            self.clock(), spec.name, dropped.pickup_id
        )
        self.store.finish_pickup(spec.name, dropped.pickup_id, "claimed", {"batch_id": batch_id})
        try:
            with scratch_dir() as scratch:
                path = inbox.fetch(dropped.name, "processing", Path(scratch))
                plan = self.planner(path, spec.sync_mode, inbox.inputs_base())
        except ManifestError as err:
            self._refuse(spec, inbox, dropped, err, outcome)
            return
        except LipdubError as err:
            outcome.errors.append(f"{dropped.name}: {err} (tried again at the next run)")
            return
        window = spec.window.model_dump() if spec.window else None
        extra = {
            "schedule": spec.name,
            "window": json.dumps(window) if window else "",
            "timezone": spec.timezone,
            "nightly_budget_usd": str(spec.nightly_budget_usd or ""),
            "inbox": inbox.location,
            "inbox_manifest": dropped.name,
            "inbox_folder": "processing",
            "pickup_id": dropped.pickup_id,
            "output_prefix": spec.output_prefix,
        }
        self.control.start(
            plan,
            name=f"{spec.name}/{dropped.name}",
            batch_id=batch_id,
            extra=extra,
            partial_budget=True,
        )
        self.store.finish_pickup(spec.name, dropped.pickup_id, "started", {"batch_id": batch_id})
        outcome.started.append(
            {
                "manifest": dropped.name,
                "batch_id": batch_id,
                "items": str(len(plan.items)),
                "estimate_usd": str(plan.total_usd),
            }
        )
        window_text = Window(spec.window, spec.zone)
        if not window_text.is_open(self.clock()):
            outcome.waiting.append(
                f"{dropped.name}: batch {batch_id} submits when the window opens "
                f"({window_text.describe()})"
            )

    def _refuse(
        self,
        spec: ScheduleSpec,
        inbox: Inbox,
        dropped: Dropped,
        err: ManifestError,
        outcome: RunOutcome,
    ) -> None:
        """File an invalid manifest in `failed/`, every problem listed beside it."""
        name = dropped.name
        if inbox.exists("failed", name):
            path = PurePosixPath(name)
            name = f"{path.stem}.{dropped.tag[:8]}{path.suffix}"
        stem = PurePosixPath(name).stem
        inbox.write("failed", f"{stem}.errors.txt", f"{dropped.name}: {err}\n".encode())
        inbox.move(("processing", dropped.name), ("failed", name))
        first = str(err).splitlines()[0] if str(err) else "invalid"
        self.store.finish_pickup(spec.name, dropped.pickup_id, "refused", {"error": first})
        outcome.refused.append({"manifest": dropped.name, "error": first})
        text = (
            f"**{spec.name}**: `{dropped.name}` was refused, nothing was spent: {first}. "
            f"Every problem is listed in `failed/{stem}.errors.txt`; fix the manifest and drop "
            "it in the inbox again."
        )
        for step in post_notice(
            self.store, spec.name, f"{spec.name}.refused.{dropped.pickup_id}", text
        ):
            self.control.dispatcher.send(step)

    def _missed(self, spec: ScheduleSpec, fired: str, late_s: float) -> RunOutcome:
        """A fire time the scheduler missed and the policy skips: say so, loudly."""
        why = (
            f"skipped the run due at {fired}: the scheduler was down and it is {late_s / 60:.0f} min "
            f"late (missed: {spec.missed.value}"
            + (
                f", late_deadline_s: {spec.late_deadline_s:.0f}"
                if spec.missed.value == "run_late"
                else ""
            )
            + "). Run it now with: lipdub schedule run-now "
            + spec.name
        )
        outcome = RunOutcome(spec.name, "missed", self.clock(), errors=[why])
        log.warning("schedule %s: %s", spec.name, why)
        self.store.record_outcome(spec.name, outcome.to_dict())
        for step in post_notice(
            self.store, spec.name, f"{spec.name}.missed.{fired}", f"**{spec.name}**: {why}"
        ):
            self.control.dispatcher.send(step)
        return outcome

    def _refresh_budget(self, spec: ScheduleSpec, now: float) -> None:
        """Tonight's budget follows the configuration. A raised (or removed) limit applies at
        once: items parked for the budget are woken to try again while the window is open
        (those that still do not fit park again)."""
        window = Window(spec.window, spec.zone)
        scope = night_scope(spec.name, window.night(now))
        before = self.ledger.budget(scope)["limit_usd"]
        after = spec.nightly_budget_usd
        if after is not None:
            after = from_micros(to_micros(after))  # as the ledger keeps it: no change every tick
        if before == after:
            return
        self.ledger.set_budget_limit(scope, after)
        raised = before is not None and (after is None or after > before)
        if raised and window.is_open(now):
            due = self.store.pop_parked(spec.name, float("inf"))
            steps = [Next("submit", *slot_member_ids(member)) for member in due]
            self.ledger.expect(steps, now)
            for step in steps:
                self.control.dispatcher.send(step)
            log.info(
                "schedule %s: tonight's budget is now %s; %d item(s) try again",
                spec.name,
                after,
                len(steps),
            )


def scheduled_batch_id(now_s: float, schedule: str, pickup_id: str) -> str:
    """A batch id that says which schedule started it, e.g. `s20261124-010002-nightly-3fa9c1`."""
    stamp = datetime.fromtimestamp(now_s, tz=UTC).strftime("%Y%m%d-%H%M%S")
    digest = hashlib.sha256(f"{schedule}|{pickup_id}|{secrets.token_hex(4)}".encode()).hexdigest()
    return f"s{stamp}-{schedule[:24]}-{digest[:6]}"


def _clock_text(epoch_s: float, spec: ScheduleSpec) -> str:
    return datetime.fromtimestamp(epoch_s, tz=spec.zone).strftime("%Y-%m-%d %H:%M:%S %Z")
