"""Conclude a finished scheduled batch: file its manifest, with its report, and tell someone.

The manifest moves from `processing/` to `done/` when every item completed, else to
`failed/`, and `<name>.report.{json,csv,html,md}` are written beside it. Concluding again
(a redelivered task, a batch finished again after `retry-failed`) moves the manifest to
where it now belongs and rewrites its report; the chosen name is recorded before the move,
so a crash between the two never files it twice. A name already taken in the target folder
(yesterday's catalog.csv) gets the batch id: `catalog.<batch>.csv`.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from pipeline.reporting import batch_summary
from pipeline.reporting.writer import REPORT_FILES
from pipeline.runtime import Runtime
from pipeline.schedules.inbox import open_inbox
from pipeline.schedules.notices import finished_text, post_notice
from pipeline.schedules.store import ScheduleStore
from pipeline.steps import Next
from pipeline.storage import report_key


def conclude(rt: Runtime, batch_id: str) -> list[Next]:
    """File the manifest of a finished scheduled batch and post its notification."""
    batch = rt.ledger.batch(batch_id)
    if batch is None or not batch.scheduled or not batch.finished:
        return []
    summary = batch_summary(rt.ledger, batch_id)
    folder = "done" if summary.completed == summary.items else "failed"
    inbox = open_inbox(batch.inbox, rt.storage.s3)
    original = batch.inbox_manifest
    current = (batch.inbox_folder or "processing", batch.inbox_name or original)
    if batch.inbox_target == folder and batch.inbox_target_name:
        final = batch.inbox_target_name
    elif current[0] == folder:
        final = current[1]
    else:
        final = original if not inbox.exists(folder, original) else _with_batch(original, batch_id)
        rt.ledger.update_batch(batch_id, {"inbox_target": folder, "inbox_target_name": final})
    inbox.move(current, (folder, final))
    stem = PurePosixPath(final).stem
    # The finalizer's reports, one file at a time (a big batch's are never all in memory).
    for name in sorted(REPORT_FILES):
        body = rt.storage.get_bytes(report_key(rt.storage.prefix, batch_id, name))
        inbox.write(folder, f"{stem}.{name}", body)
    rt.ledger.update_batch(
        batch_id, {"inbox_folder": folder, "inbox_name": final, "concluded_at": rt.clock()}
    )
    text = finished_text(
        batch.schedule, batch_id, summary, f"{inbox.location.rstrip('/')}/{folder}/{final}"
    )
    event = f"{batch_id}.finished.{batch.raw.get('finished_at', '')}"
    return post_notice(ScheduleStore(rt.ledger.redis), batch.schedule, event, text)


def _with_batch(name: str, batch_id: str) -> str:
    path = PurePosixPath(name)
    return f"{path.stem}.{batch_id}{path.suffix}"
