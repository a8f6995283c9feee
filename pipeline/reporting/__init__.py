"""A batch's report in four formats, rendered from the ledger's report dict alone.

    files = render_all(report)            # {"report.json": b"...", "report.csv": b"...", ...}
    render(report, "html")                # one format, as bytes

JSON is complete (for machines), CSV has one row per item (for spreadsheets, formula-safe),
HTML is one self-contained page (for people), Markdown is a summary (for tickets and chat).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Literal

from pipeline.ledger import Ledger
from pipeline.reporting.data import report_head, report_items
from pipeline.reporting.summary import Summary, SummaryBuilder, summarize

ReportFormat = Literal["json", "csv", "html", "md"]
FORMATS: tuple[ReportFormat, ...] = ("json", "csv", "html", "md")
CONTENT_TYPES = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "html": "text/html; charset=utf-8",
    "md": "text/markdown; charset=utf-8",
}


def file_name(fmt: ReportFormat) -> str:
    """`report.<format>`."""
    return f"report.{fmt}"


def render(report: dict[str, Any], fmt: ReportFormat, summary: Summary | None = None) -> bytes:
    """The report in one format, UTF-8 encoded. (`summary` is accepted for callers that
    have one; the writer adds it up again as it streams.)"""
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; use one of {', '.join(FORMATS)}")
    return render_all(report)[file_name(fmt)]


def render_all(report: dict[str, Any]) -> dict[str, bytes]:
    """Every format of a report in memory: file name -> bytes (the same writer the
    finalizer streams with, so both give the same files)."""
    with tempfile.TemporaryDirectory(prefix="lipdub-report-") as folder:
        paths = write_local(report, Path(folder))
        return {path.name: path.read_bytes() for path in paths}


def write_local(report: dict[str, Any], folder: Path) -> list[Path]:
    """Write every format of a report in memory into `folder` (created if needed)."""
    from pipeline.reporting.writer import write_reports  # the templates load only to write

    items: list[dict[str, Any]] = report["items_detail"]
    end_s = report.get("finished_at") or max(
        (p["end"] for i in items for p in i["phases"].values() if p), default=None
    )
    paths = write_reports(
        report,
        items,
        folder,
        item_count=len(items),
        metadata_keys={key for item in items for key in item["metadata"]},
        end_s=end_s,
    )
    return [paths[file_name(fmt)] for fmt in FORMATS]


def batch_summary(ledger: Ledger, batch_id: str) -> Summary:
    """The summary of a batch in the ledger, its items read a chunk at a time (memory flat
    in the batch's size). KeyError for an unknown batch."""
    head = report_head(ledger, batch_id)
    builder = SummaryBuilder(head, item_count=int(head["items"]), end_s=head.get("finished_at"))
    for item in report_items(ledger, batch_id, head["bucket"]):
        builder.add(item)
    return builder.build()


__all__ = [
    "CONTENT_TYPES",
    "FORMATS",
    "ReportFormat",
    "batch_summary",
    "file_name",
    "render",
    "render_all",
    "summarize",
    "write_local",
]
