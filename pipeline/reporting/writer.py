"""Write a batch's four reports by streaming over its items: memory flat in the batch's size.

Each item passes once: its CSV row, its JSON object and its row of the HTML table's data go
straight to files, and the summary (`SummaryBuilder`) adds it up. Then the HTML page and the
Markdown summary are rendered around what was streamed. Only the summary's bounded figures
are ever in memory, so the finalizer of a 10,000-item batch holds about what the finalizer of
a 1,000-item one does (`make bench` measures it).

    paths = write_reports(head, items, folder, item_count=n, metadata_keys=keys, end_s=t)
    paths["report.html"]   # folder / "report.html"
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.reporting.csv_report import header, metadata_columns, row
from pipeline.reporting.html_report import (
    ITEMS_JSON_CLOSE,
    ITEMS_JSON_OPEN,
    item_row_json,
    render_html_parts,
)
from pipeline.reporting.markdown import render_markdown
from pipeline.reporting.summary import Summary, SummaryBuilder

REPORT_FILES = ("report.csv", "report.html", "report.md", "report.json")
"""In the order they are written; JSON last: its presence means the set is complete."""


def write_reports(
    head: dict[str, Any],
    items: Iterable[dict[str, Any]],
    folder: Path,
    *,
    item_count: int,
    metadata_keys: Iterable[str],
    end_s: float | None,
) -> dict[str, Path]:
    """The four reports of the batch `head` (`pipeline.reporting.data.report_head`) with
    these items (`item_report` dicts, in manifest order) written into `folder`. `end_s`: the
    end of the batch's time (its histogram's last bin), else its `finished_at`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / name for name in REPORT_FILES}
    json_items, table_rows = folder / ".items.json.part", folder / ".rows.json.part"
    summary = _stream(head, items, paths["report.csv"], json_items, table_rows, item_count,
                      metadata_columns(metadata_keys), end_s)  # fmt: skip
    before, after = render_html_parts(head, summary)
    with paths["report.html"].open("w", encoding="utf-8") as out:
        out.write(before + ITEMS_JSON_OPEN)
        _append(out, table_rows)
        out.write(ITEMS_JSON_CLOSE + after)
    paths["report.md"].write_text(render_markdown(head, summary), encoding="utf-8")
    fields = {"total_billable_s": summary.billable_s, **head}
    fields.pop("items_detail", None)
    opening = json.dumps(fields, indent=2, sort_keys=True, default=str)
    with paths["report.json"].open("w", encoding="utf-8") as out:
        out.write(opening[: opening.rindex("}")].rstrip() + ',\n  "items_detail": [\n')
        _append(out, json_items)
        out.write("\n  ]\n}\n")
    json_items.unlink()
    table_rows.unlink()
    return paths


def _stream(
    head: dict[str, Any],
    items: Iterable[dict[str, Any]],
    csv_path: Path,
    json_items: Path,
    table_rows: Path,
    item_count: int,
    extra: list[tuple[str, str]],
    end_s: float | None,
) -> Summary:
    builder = SummaryBuilder(head, item_count=item_count, end_s=end_s)
    with (
        csv_path.open("w", encoding="utf-8", newline="") as csv_out,
        json_items.open("w", encoding="utf-8") as json_out,
        table_rows.open("w", encoding="utf-8") as rows_out,
    ):
        writer = csv.writer(csv_out, lineterminator="\n")
        writer.writerow(header(extra))
        separator = ""
        for item in items:
            builder.add(item)
            writer.writerow(row(item, extra))
            json_out.write(separator + "    " + json.dumps(item, sort_keys=True, default=str))
            rows_out.write(separator.strip() + item_row_json(item))
            separator = ",\n"
    return builder.build()


def _append(out: Any, part: Path) -> None:
    with part.open(encoding="utf-8") as source:
        shutil.copyfileobj(source, out)
