"""Batch control, the Python API: start a batch from a plan, follow it, cancel it, retry it.

    control = BatchControl(ledger, dispatcher, settings, storage=storage)
    batch_id = control.start(plan, name="catalog-de")   # local inputs go to the bucket first
    control.status(batch_id)["counts"]      # {"pending": 0, "running": 3, "completed": 17, ...}
    control.cancel(batch_id)                # no new submits; running items are still collected
    control.retry_failed(batch_id)          # failed, skipped and cancelled items go again

Starting never spends by itself: it puts the plan's local inputs in the bucket from this
machine (`pipeline.uploads`; workers never read its files), writes the batch to the ledger
and hands each item's first step to the `dispatcher` (Celery in production). Running the same manifest again starts a new
batch in which every pair already paid for completes from its earlier output.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from pydantic import SecretStr

from pipeline import keys
from pipeline.audit import WINDOW_MARGIN_S, compacted_holders
from pipeline.errors import BudgetExceeded, InputChanged, SettingsError, StorageError
from pipeline.flow.submit import running_fields
from pipeline.ledger import Ledger
from pipeline.ledger.budgets import unbooked_fields
from pipeline.planning import Plan, PlannedItem
from pipeline.records import Item, ItemRecord
from pipeline.reporting.data import batch_report, batch_status
from pipeline.retention import COMPACTED
from pipeline.schedules.notices import check_targets
from pipeline.send_order import in_send_order
from pipeline.settings import Settings
from pipeline.states import PARKED, ErrorKind, ItemState
from pipeline.steps import Next
from pipeline.storage import Storage, media_key, media_sha256
from pipeline.uploads import (
    BEAT_EVERY_S,
    LocalFile,
    Progress,
    Uploaded,
    local_files,
    upload_files,
    with_stored,
)

RETRYABLE = (ItemState.FAILED, ItemState.SKIPPED, ItemState.CANCELLED)

# Fields of an attempt that a fresh retry clears.
_ATTEMPT_FIELDS = (
    "error",
    "error_kind",
    "hint",
    "evidence",
    "finished_at",
    "outcome_unknown",
    "outcome_unknown_at",
    "created_by",
    "waiting_on",
    "output_url",
    "output_key",
    "cost_usd",
    "billable_s_final",
    "collect_errors",
    "collect_errors_since",
    "upload_errors",
    "upload_errors_since",
    "fetch_errors",
    "fetch_errors_since",
    "reconcile_failures",
)


class Dispatcher(Protocol):
    """Runs a step later: Celery in production, anything that honours countdowns in tests."""

    def send(self, step: Next) -> None: ...


def content_identity(item: PlannedItem, model: str) -> str:
    """What makes two items the same paid work: both inputs' content, the mode, the model."""
    text = f"{item.video.sha256}|{item.audio.sha256}|{item.sync_mode.value}|{model}"
    return hashlib.sha256(text.encode()).hexdigest()


def new_batch_id(now_s: float) -> str:
    """A sortable, unique batch id, e.g. `b20261124-011502-3fa9c1`."""
    stamp = datetime.fromtimestamp(now_s, tz=UTC).strftime("%Y%m%d-%H%M%S")
    return f"b{stamp}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Payable:
    """What a plan will pay for: an item whose pair was paid for already (by an earlier batch,
    or by an earlier row of the same manifest) costs nothing."""

    total_usd: Decimal
    free: dict[str, str]
    """Item id -> why it costs nothing: `paid earlier` or `repeats <item id>`."""


def plan_payable(ledger: Ledger, plan: Plan, model: str, *, force: bool = False) -> Payable:
    """What the plan will pay: its items less those whose pair is paid for already (in the
    ledger, unless `force`) or repeats an earlier row's."""
    identities = [content_identity(item, model) for item in plan.items]
    paid = set() if force else ledger.completed_pairs(identities)
    first: dict[str, str] = {}
    free: dict[str, str] = {}
    total = Decimal(0)
    for item, identity in zip(plan.items, identities, strict=True):
        if identity in paid:
            free[item.id] = "paid earlier"
        elif identity in first:
            free[item.id] = f"repeats {first[identity]}"
        else:
            total += item.price_usd
        first.setdefault(identity, item.id)
    return Payable(total, free)


def _local_keys(item: PlannedItem, prefix: str) -> set[str]:
    """The bucket keys of the item's local files (none for s3:// and https:// inputs)."""
    return {
        media_key(prefix, planned.sha256, planned.ref.location)
        for planned in (item.video, item.audio)
        if planned.ref.kind == "local"
    }


def _not_its_own(prediction_id: str, owner: str, item_id: str) -> str:
    """Why `adopt` refuses another item's prediction, and what to give it instead."""
    return (
        f"prediction {prediction_id} is {owner}, not {item_id}'s: adopt one of the candidates "
        f"in {item_id}'s evidence (the batch's report), or retry it with "
        "retry-failed --include-needs-attention if none is its own"
    )


class BatchControl:
    """Start, follow, cancel and retry batches."""

    def __init__(
        self,
        ledger: Ledger,
        dispatcher: Dispatcher,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        stored_report: Callable[[str], bytes] | None = None,
        storage: Storage | None = None,
    ) -> None:
        """`stored_report` reads a report the bucket holds, by its key: the report of a
        batch whose items were compacted (`pipeline.retention`). `storage`: the bucket a
        plan's local inputs are put in before its items are sent (needed for those)."""
        self.storage = storage
        self.ledger = ledger
        self.dispatcher = dispatcher
        self.stored_report = stored_report
        self.settings = settings
        self.clock = clock

    def payable(self, plan: Plan, *, force: bool = False) -> Payable:
        """What the plan will pay (`force` pays again for pairs paid earlier)."""
        return plan_payable(self.ledger, plan, self.settings.provider.model_path, force=force)

    def start(
        self,
        plan: Plan,
        *,
        name: str | None = None,
        budget_usd: Decimal | None = None,
        partial_budget: bool = False,
        force: bool = False,
        batch_id: str | None = None,
        extra: Mapping[str, object] | None = None,
        notify: Sequence[SecretStr] = (),
        on_upload: Progress | None = None,
    ) -> str:
        """Put the plan's local inputs in the bucket, record the batch and fan out its
        items. Returns the batch id.

        With a budget below the estimate the batch is refused (BudgetExceeded) unless
        `partial_budget`: then items run until the budget is reserved and the rest end
        `skipped`. `force` pays again for pairs that were already paid for. A given
        `batch_id` that exists already starts nothing (a start retried after a crash; the
        sweeper sends whatever the first start did not). `extra`: more batch fields (a
        schedule's name, window, inbox). `notify`: apprise URLs told when the batch finishes
        (besides `notify.urls`; SettingsError, before anything is written, for one apprise
        cannot use). Local inputs are put in the bucket from here once the batch is
        recorded (`pipeline.uploads`), each item sent as soon as its own files are there;
        `on_upload` is told (bytes done, bytes in all) meanwhile. A file that cannot be put
        there fails its items, saying why; the others go on. Returns when every file is up.
        """
        problems = check_targets([url.get_secret_value() for url in notify])
        if problems:
            raise SettingsError("; ".join(problems))
        budget = budget_usd if budget_usd is not None else self.settings.budget.batch_usd
        to_pay = self.payable(plan, force=force).total_usd
        if budget is not None and to_pay > budget and not partial_budget:
            raise BudgetExceeded(
                f"the estimate ${to_pay} is over the budget ${budget}: raise the "
                "budget, or start with partial_budget to run what fits"
            )
        # Uploaded and sent in the send order (`pipeline.send_order`); recorded by row.
        sending = in_send_order(
            plan.items, lambda item: item.video.info.duration_s, self.settings.batch.send_order
        )
        files = self._local_files(replace(plan, items=tuple(sending)))
        if files:
            assert self.storage is not None
            plan = with_stored(plan, self.storage)
        now = self.clock()
        batch_id = batch_id or new_batch_id(now)
        model = self.settings.provider.model_path
        items = [self._item_fields(item, model, now) for item in plan.items]
        prefix = self.settings.storage.prefix
        waiting = {item.id: _local_keys(item, prefix) for item in sending}
        for fields in items:
            if waiting[str(fields["id"])]:
                # Not expected yet: sent (and expected) once its files are in the bucket; the
                # sweeper sends it if its start stops first (`pipeline.sweep`).
                fields.update({"next_step": "", "next_due_at": ""})
        if extra and extra.get("output_prefix"):
            for fields in items:
                fields["output_folder"] = extra["output_prefix"]
        record: dict[str, object] = {
            "name": name or plan.manifest.stem,
            "manifest": str(plan.manifest),
            "created_at": now,
            "model": model,
            "bucket": self.settings.storage.bucket,
            "force": force,
            "cancelled": False,
            "price_model": plan.price_model.model_dump(mode="json"),
            "price_basis": plan.price_basis,
            "estimate_usd": str(to_pay),
            **({"uploading": True, "uploads_beat_at": now} if files else {}),
            **(extra or {}),
        }
        if notify:
            self.ledger.set_batch_notify(batch_id, [url.get_secret_value() for url in notify])
        if not self.ledger.create_batch(batch_id, record, items, budget_usd=budget):
            return batch_id
        for item_id, keys_ in waiting.items():
            if not keys_:
                # `next_step`/`next_due_at` are in the item's fields already (the sweeper's
                # record). One with local files is sent once they are in the bucket.
                self.dispatcher.send(Next("prepare", batch_id, item_id))
        if not items:
            self.dispatcher.send(Next("finalize", batch_id))
        if files:
            self._upload(batch_id, files, waiting, on_upload)
        return batch_id

    def _local_files(self, plan: Plan) -> dict[str, LocalFile]:
        files = local_files(plan, self.settings.storage.prefix)
        if files and self.storage is None:
            raise ValueError("a plan with local inputs needs BatchControl(storage=...)")
        return files

    def _upload(
        self,
        batch_id: str,
        files: dict[str, LocalFile],
        waiting: dict[str, set[str]],
        on_upload: Progress | None,
    ) -> Uploaded:
        """Put the batch's local files in the bucket, sending each item once its own are
        there (or failing it, through its prepare step, with the reason one is not)."""
        assert self.storage is not None
        items_of: dict[str, list[str]] = {}
        for item_id, keys_ in waiting.items():
            for key in keys_:
                items_of.setdefault(key, []).append(item_id)
        refused: dict[str, StorageError] = {}
        beaten = [self.clock()]

        def on_file(key: str, error: StorageError | None) -> None:
            for item_id in items_of.get(key, []):
                if error is not None:
                    refused.setdefault(item_id, error)
                waiting[item_id].discard(key)
                if waiting[item_id]:
                    continue
                why = refused.get(item_id)
                fields: dict[str, object] = {"inputs_ready": True}
                if why is not None:
                    kind = ErrorKind.INPUT if isinstance(why, InputChanged) else ErrorKind.STORAGE
                    fields = {"upload_error": str(why), "upload_error_kind": kind.value}
                step = Next("prepare", batch_id, item_id)
                fields.update({"next_step": step.step, "next_due_at": self.clock()})
                self.ledger.update_item(batch_id, item_id, ItemState.PENDING, fields)
                self.dispatcher.send(step)

        def beat() -> None:
            if self.clock() - beaten[0] >= BEAT_EVERY_S:
                beaten[0] = self.clock()
                self.ledger.update_batch(batch_id, {"uploads_beat_at": beaten[0]})

        sent = upload_files(
            files,
            self.storage,
            files_at_once=self.settings.storage.upload_files_at_once,
            on_file=on_file,
            on_progress=on_upload,
            beat=beat,
        )
        self.ledger.update_batch(
            batch_id, {"uploading": False, "uploads_done_at": self.clock(), **sent.to_fields()}
        )
        return sent

    def status(self, batch_id: str) -> dict[str, Any]:
        """Counts per state and money so far. KeyError for an unknown batch."""
        return batch_status(self.ledger, batch_id)

    def report(self, batch_id: str) -> dict[str, Any]:
        """The complete report: from the ledger, or, for a batch whose items were compacted,
        the one its finalize wrote to the bucket. KeyError for an unknown batch."""
        batch = self.ledger.batch(batch_id)
        if batch is not None and batch.raw.get(COMPACTED) and self.stored_report is not None:
            data: dict[str, Any] = json.loads(self.stored_report(batch.report_key))
            return data
        return batch_report(self.ledger, batch_id)

    def cancel(self, batch_id: str) -> dict[str, Any]:
        """Submit nothing more for this batch. Items already submitted are still collected."""
        if self.ledger.batch(batch_id) is None:
            raise KeyError(batch_id)
        self.ledger.update_batch(batch_id, {"cancelled": True, "cancelled_at": self.clock()})
        # Items parked for a schedule's window or budget have no step on its way: send one
        # now, so they end cancelled tonight rather than when their wait is over.
        for record in self.ledger.items(batch_id):
            if record.get("state") == ItemState.READY and record.get("waiting_on") in PARKED:
                self.dispatcher.send(Next("submit", batch_id, record["id"]))
        return self.status(batch_id)

    def retry_cost_usd(
        self,
        batch_id: str,
        *,
        include_needs_attention: bool = False,
        include_input_errors: bool = False,
    ) -> Decimal:
        """What `retry_failed` with these options would pay at most: the estimates of the
        items it would submit again (polling a timed-out prediction or collecting a paid
        output again costs nothing)."""
        if self.ledger.batch(batch_id) is None:
            raise KeyError(batch_id)
        total = Decimal(0)
        for record in self._retryable(batch_id, include_needs_attention, include_input_errors):
            if self._retry_plan(record)[0] == "prepare":
                total += Decimal(record.get("price_usd") or "0")
        return total

    def retry_failed(
        self,
        batch_id: str,
        *,
        include_needs_attention: bool = False,
        include_input_errors: bool = False,
        budget_usd: Decimal | None = None,
    ) -> list[str]:
        """Run failed, skipped and cancelled items again. Returns their ids.

        A timed-out item polls its prediction again and an item whose output could not be
        collected collects it again: neither pays twice. `needs_attention` items (a submit
        that may have been paid for) go again only when asked, and so do items the provider
        refused for their input (no face, unreadable media): they would be refused again.
        """
        batch = self.ledger.batch(batch_id)
        if batch is None:
            raise KeyError(batch_id)
        scope = batch.budget_scope
        if budget_usd is not None:
            self.ledger.set_budget_limit(scope, budget_usd)
        self.ledger.update_batch(batch_id, {"cancelled": False})
        allowed = list(RETRYABLE) + ([ItemState.NEEDS_ATTENTION] if include_needs_attention else [])
        retried = []
        retryable = in_send_order(
            self._retryable(batch_id, include_needs_attention, include_input_errors),
            lambda record: ItemRecord.decode(record).video_s,
            self.settings.batch.send_order,
        )
        for record in retryable:
            step, to, fields = self._retry_plan(record)
            if step == "prepare":
                fields.update(self._upload_again(record))
            moved = self.ledger.transition(batch_id, record["id"], allowed, to, fields)
            if moved.ok:
                retried.append(record["id"])
                again = Next(step, batch_id, record["id"])
                self.ledger.expect([again], self.clock())
                self.dispatcher.send(again)
        if retried:
            self.ledger.update_batch(batch_id, {"finished_at": ""})
        return retried

    def adopt(
        self, batch_id: str, item_id: str, prediction_id: str, *, created_at: float | None = None
    ) -> dict[str, Any]:
        """Settle an item that needs attention with the prediction a person identified as its
        submit's: it is polled and collected like any other, and nothing is submitted again.
        `created_at` (epoch s, as the provider reports the prediction) narrows the search
        among compacted batches (below) to those whose time overlaps it; without it every
        compacted batch is read. Raises KeyError for an unknown batch or item, ValueError when
        the item is not waiting for this or the prediction belongs to another item."""
        record = self.ledger.item(batch_id, item_id)
        if self.ledger.batch(batch_id) is None or not record:
            raise KeyError(f"{batch_id}/{item_id}")
        if record.get("state") != ItemState.NEEDS_ATTENTION:
            raise ValueError(
                f"item {item_id} is {record.get('state')}: only an item that needs attention "
                "is settled by adopting a prediction"
            )
        member = keys.slot_member(batch_id, item_id)
        # The index names every prediction an item has, except those compaction forgot (the
        # provider's list no longer shows them: a history longer than documented still
        # answers for them); their batches' packed items hold them, and an adopted one would
        # be booked twice.
        since, until = (
            (created_at - WINDOW_MARGIN_S, created_at + WINDOW_MARGIN_S)
            if created_at is not None
            else (float("-inf"), float("inf"))
        )
        for _, holder in compacted_holders(self.ledger, {prediction_id}, since=since, until=until):
            if holder != member:
                raise ValueError(
                    _not_its_own(prediction_id, f"{holder}'s (a compacted batch)", item_id)
                )
        if not self.ledger.claim_prediction(prediction_id, member):
            owner = self.ledger.item_of_prediction(prediction_id)
            raise ValueError(_not_its_own(prediction_id, f"{owner}'s", item_id))
        fields = running_fields(
            self.settings.polling, Item.of(batch_id, record), prediction_id, self.clock(),
            reconciled=True,
        )  # fmt: skip
        # The item's spend is booked when it is collected, as any other's.
        fields.update(dict.fromkeys(_ATTEMPT_FIELDS, ""))
        fields.update({**unbooked_fields(), "adopted": True})
        moved = self.ledger.transition(
            batch_id, item_id, [ItemState.NEEDS_ATTENTION], ItemState.RUNNING, fields
        )
        if not moved.ok:
            raise ValueError(f"item {item_id} moved on meanwhile (now {moved.state})")
        self.ledger.settle_submit(member)
        self.ledger.update_batch(batch_id, {"finished_at": ""})
        poll = Next("poll", batch_id, item_id)
        self.ledger.expect([poll], self.clock())
        self.dispatcher.send(poll)
        return self.ledger.item(batch_id, item_id)

    def _retryable(
        self, batch_id: str, include_needs_attention: bool, include_input_errors: bool
    ) -> list[dict[str, str]]:
        allowed = list(RETRYABLE) + ([ItemState.NEEDS_ATTENTION] if include_needs_attention else [])
        return [
            record
            for record in self.ledger.items(batch_id)
            if record.get("state") in allowed
            and (include_input_errors or record.get("error_kind") != ErrorKind.INPUT)
        ]

    def _upload_again(self, record: dict[str, str]) -> dict[str, object]:
        """An item going back to prepare whose local files this machine has: put what the
        bucket lacks there now (a retry on the machine that started the batch mends an
        upload that failed). The fields that tell its prepare step the files are there."""
        local = []
        for name in ("video", "audio"):
            data = json.loads(record.get(name) or "{}")
            if data.get("kind") == "local" and data.get("stored"):
                local.append(data)
        if not local or self.storage is None:
            return {}
        try:
            for data in local:
                key = str(data["stored"]).split("/", 3)[3]
                self.storage.upload_file(Path(data["location"]), key, media_sha256(key))
        except StorageError:
            return {}  # not here, or S3 still refuses: its prepare step says so
        return {"inputs_ready": True, "upload_error": "", "upload_error_kind": ""}

    def _retry_plan(self, record: dict[str, str]) -> tuple[str, ItemState, dict[str, object]]:
        kind = record.get("error_kind", "")
        now = self.clock()
        if kind == ErrorKind.TIMEOUT and record.get("prediction_id"):
            deadline = now + self.settings.polling.item_deadline_s
            return "poll", ItemState.RUNNING, {"deadline_at": deadline, **unbooked_fields()}
        if kind == ErrorKind.OUTPUT and record.get("output_url"):
            return (
                "collect",
                ItemState.COLLECTING,
                {"collect_errors": 0, "collect_errors_since": ""},
            )
        fields: dict[str, object] = dict.fromkeys(_ATTEMPT_FIELDS, "")
        fields.update({"attempts": 0, "prediction_id": "", **unbooked_fields()})
        return "prepare", ItemState.PENDING, fields

    @staticmethod
    def _item_fields(item: PlannedItem, model: str, now: float) -> dict[str, object]:
        def source(planned: Any) -> dict[str, object]:
            # A stored copy's location names its sha256 (content-addressed): not kept twice,
            # 78 bytes less per input in Redis while the item waits (issue 20).
            facts: dict[str, object] = {
                "kind": planned.ref.kind,
                "location": planned.ref.location,
                "duration_s": planned.info.duration_s,
            }
            if planned.stored:
                facts["stored"] = planned.stored
            else:
                facts["sha256"] = planned.sha256
            return facts

        return {
            "id": item.id,
            "row": item.row,
            "identity": content_identity(item, model),
            "sync_mode": item.sync_mode.value,
            "output": item.output,
            "metadata": dict(item.metadata),
            "video": source(item.video),
            "audio": source(item.audio),
            "expected_output_s": item.expected_output_s,
            "billable_s": item.billable_s,
            "price_usd": str(item.price_usd),
            "created_at": now,
            "next_step": "prepare",
            "next_due_at": now,
        }
