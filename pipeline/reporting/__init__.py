"""A batch's report in four formats, rendered from the ledger's report dict alone.

    files = render_all(report)            # {"report.json": b"...", "report.csv": b"...", ...}
    render(report, "html")                # one format, as bytes

JSON is complete (for machines), CSV has one row per item (for spreadsheets, formula-safe),
HTML is one self-contained page (for people), Markdown is a summary (for tickets and chat).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pipeline.reporting.csv_report import render_csv
from pipeline.reporting.html_report import render_html
from pipeline.reporting.markdown import render_markdown
from pipeline.reporting.summary import Summary, summarize

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
    """The report in one format, UTF-8 encoded."""
    if fmt == "json":
        return json.dumps(report, indent=2, sort_keys=True, default=str).encode() + b"\n"
    if fmt == "csv":
        return render_csv(report).encode()
    if fmt == "html":
        return render_html(report, summary).encode()
    if fmt == "md":
        return render_markdown(report, summary).encode()
    raise ValueError(f"unknown report format {fmt!r}; use one of {', '.join(FORMATS)}")


def render_all(report: dict[str, Any]) -> dict[str, bytes]:
    """Every format: file name -> bytes."""
    summary = summarize(report)
    return {file_name(fmt): render(report, fmt, summary) for fmt in FORMATS}


def write_local(report: dict[str, Any], folder: Path) -> list[Path]:
    """Write every format into `folder` (created if needed); the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, body in render_all(report).items():
        path = folder / name
        path.write_bytes(body)
        paths.append(path)
    return paths


__all__ = [
    "CONTENT_TYPES",
    "FORMATS",
    "ReportFormat",
    "file_name",
    "render",
    "render_all",
    "summarize",
    "write_local",
]
