"""Finalize a batch once every item is final: write its reports and mark it finished.

The reports (JSON, CSV, HTML, Markdown) go to `reports/<batch>/` in the bucket. A batch a
schedule started then concludes: its manifest is filed in its inbox with the report.

Any step whose transition leaves the set of finished items complete asks for this; it can be
asked several times (redelivery, two last items at once), so it checks the set itself and
takes a guard that only one process holds. No chord is involved.

The guard lasts a minute, renewed as the report is written; a finalize that finds it held
looks again when it lapses, so a finalizer killed mid-write (its guard left behind) is
replaced, and the batch still finishes. The reports are streamed from the items
(`pipeline.reporting.writer`), so a big batch's finalizer needs no more memory than a
small one's.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline import retention
from pipeline.audit import audit_batch
from pipeline.errors import ProviderError
from pipeline.flow.common import after_end, load, unsettled
from pipeline.records import BatchRecord
from pipeline.reporting import CONTENT_TYPES, batch_summary
from pipeline.reporting.data import metadata_keys, report_head, report_items
from pipeline.reporting.earlier import EarlierRows
from pipeline.reporting.writer import REPORT_FILES, write_reports
from pipeline.runtime import Runtime
from pipeline.schedules.notices import batch_source, finished_text, post_notice, targets
from pipeline.schedules.store import ScheduleStore
from pipeline.states import BatchState
from pipeline.steps import Next
from pipeline.storage import report_key

log = logging.getLogger("lipdub.finalize")

RENEW_EVERY_ITEMS = 1_000
GUARD_S = 60
SETTLE_CHUNK = 1_000
"""Items whose settled flag one read takes, before the report."""
"""The finalizer's guard (or the task time limit, if shorter), renewed at each stage of the report: a finalizer that dies holding
it is replaced within a minute (not after the task time limit), and two finalizers writing
the same reports at once would only write them twice."""


def finalize(rt: Runtime, batch_id: str) -> list[Next]:
    """Write the report when the batch is complete; do nothing otherwise or if already done."""
    batch = rt.ledger.batch(batch_id)
    if batch is None:
        return []
    if batch.finished:
        return _conclude_if_scheduled(batch) or _tell(rt, batch)
    if rt.ledger.done_count(batch_id) < batch.item_count:
        return []
    guard_s = min(GUARD_S, rt.settings.worker.task_time_limit_s)
    if not rt.ledger.acquire_finalizer(batch_id, guard_s):
        wait_s = rt.ledger.finalizer_guard_left_s(batch_id) + 1.0
        return [Next("finalize", batch_id, None, rt.countdown(wait_s), "another finalizer")]
    try:
        woken = settle_ended(rt, batch_id)
        finished_at = rt.clock()
        rt.ledger.update_batch(batch_id, {"finished_at": finished_at, **_balance_after(rt, batch)})
        rt.ledger.update_batch(batch_id, _audit(rt, batch_id))
        rt.ledger.renew_finalizer(batch_id, guard_s)
        _write_reports(rt, batch, finished_at, guard_s)
        key = report_key(rt.storage.prefix, batch_id)
        rt.ledger.update_batch(batch_id, {"state": BatchState.FINISHED.value, "report_key": key})
        retention.finished(rt.ledger, batch_id, finished_at)
    finally:
        rt.ledger.release_finalizer(batch_id)
    written = rt.ledger.batch(batch_id)
    if written is None:
        return woken
    return woken + (_conclude_if_scheduled(written) or _tell(rt, written))


def settle_ended(rt: Runtime, batch_id: str) -> list[Next]:
    """Before the report reads the books: finish what follows the move for every item that
    ended but was not settled (`flow.common.after_end`: the step that ended it died, or Redis
    failed, between the move and the settle, and no redelivery has come yet). Its cost is in
    the spend the report shows, its slot is free. Reads one flag per item, in chunks; the
    waiters its freed slots wake."""
    ids = rt.ledger.item_ids(batch_id)
    woken: list[Next] = []
    for start in range(0, len(ids), SETTLE_CHUNK):
        chunk = ids[start : start + SETTLE_CHUNK]
        flags = rt.ledger.fields_of([(batch_id, item_id) for item_id in chunk], ["settled"])
        for item_id, flag in zip(chunk, flags, strict=True):
            if flag.get("settled") == "1":
                continue
            item = load(rt, batch_id, item_id)
            if item is not None and unsettled(item.record.raw):
                log.warning("%s/%s ended without being settled: settled now", batch_id, item_id)
                woken += after_end(rt, item)
    return woken


def _write_reports(rt: Runtime, batch: BatchRecord, finished_at: float, guard_s: int) -> None:
    """Stream the batch's items into the four reports (`pipeline.reporting.writer`: memory
    flat in the batch's size), then put them in the bucket, JSON last: its presence means
    the set is complete. The guard is renewed as the items are read and between files.

    A batch finished again after its items were compacted (a retry of its failed ones) takes
    the compacted items' rows from the report it wrote before (`pipeline.reporting.earlier`):
    the new report tells them as whole as the first did. When that report cannot be read,
    the step fails (and is tried again) rather than write one that tells less."""
    batch_id = batch.id
    # The report shows the batch as it is once written: finished. (Marking it finished
    # first would let a finalizer killed mid-write leave a finished batch with no report.)
    head = {**report_head(rt.ledger, batch_id), "state": BatchState.FINISHED.value}
    with tempfile.TemporaryDirectory(prefix="lipdub-finalize-") as folder:
        earlier = _earlier_rows(rt, batch, Path(folder) / "earlier")
        keys = metadata_keys(rt.ledger, batch_id) | (earlier.metadata_keys() if earlier else set())

        def items() -> Iterator[dict[str, Any]]:
            rows = report_items(
                rt.ledger, batch_id, head["bucket"], earlier=earlier.row if earlier else None
            )
            for n, item in enumerate(rows, 1):
                if n % RENEW_EVERY_ITEMS == 0:
                    rt.ledger.renew_finalizer(batch_id, guard_s)
                yield item

        paths = write_reports(
            head, items(), Path(folder) / "reports", item_count=batch.item_count,
            metadata_keys=keys, end_s=finished_at,
        )  # fmt: skip
        for name in REPORT_FILES:
            rt.ledger.renew_finalizer(batch_id, guard_s)
            content_type = CONTENT_TYPES[name.rsplit(".", 1)[1]]
            key = report_key(rt.storage.prefix, batch_id, name)
            rt.storage.put_file(key, paths[name], content_type)


def _earlier_rows(rt: Runtime, batch: BatchRecord, folder: Path) -> EarlierRows | None:
    """The report a compacted batch wrote before, read into `folder` (None for a batch whose
    items were never compacted, or whose report is no longer in the bucket: there is nothing
    left to keep then, and the batch must still finish)."""
    if not batch.raw.get(retention.COMPACTED) or not batch.report_key:
        return None
    if not rt.storage.exists(batch.report_key):
        log.warning(
            "batch %s: its earlier report %s is gone from the bucket; its compacted items' "
            "rows hold only what compaction kept",
            batch.id,
            batch.report_key,
        )
        return None
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "report.json"
    rt.storage.download(batch.report_key, path)
    return EarlierRows(path)


def _tell(rt: Runtime, batch: BatchRecord) -> list[Next]:
    """A batch no schedule started tells its notice targets (its own `--notify` URLs and
    `notify.urls`) that it finished, once per time it finished. A scheduled batch tells
    them when it is concluded."""
    source = batch_source(batch.id)
    if batch.scheduled or not targets(rt, source):
        return []
    text = finished_text(batch.name, batch.id, batch_summary(rt.ledger, batch.id))
    event = f"{batch.id}.finished.{batch.raw.get('finished_at', '')}"
    return post_notice(ScheduleStore(rt.ledger.redis), source, event, text)


def _balance_after(rt: Runtime, batch: BatchRecord) -> dict[str, str]:
    """The account's balance now, for a batch that recorded it before its first spend: the
    report sets the change beside lipdub's own spend. Nothing when it cannot be read."""
    if batch.balance_before_usd is None:
        return {}
    try:
        return {"balance_after_usd": str(rt.provider.balance_usd())}
    except ProviderError:
        return {}


def _audit(rt: Runtime, batch_id: str) -> dict[str, str]:
    """The provider's predictions in the batch's time that no item has (`pipeline.audit`),
    for the report; when the list cannot be read, why."""
    try:
        found = audit_batch(
            rt.ledger, rt.provider, batch_id, model=rt.settings.provider.model_path, now=rt.clock()
        )
    except ProviderError as err:
        return {"audit": "", "audit_error": str(err)}
    return {"audit": json.dumps(found.to_dict()), "audit_error": ""}


def _conclude_if_scheduled(batch: BatchRecord) -> list[Next]:
    """A scheduled batch then files its manifest in its inbox (`pipeline.schedules.conclude`),
    unless that has been done since it last finished (a redelivered finalize asks again)."""
    if not batch.scheduled:
        return []
    if (batch.concluded_at or 0.0) >= (batch.finished_at or 0.0):
        return []
    return [Next("conclude", batch.id)]
