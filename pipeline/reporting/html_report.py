"""The report as one self-contained HTML page a person would rather look at than read, at
any size.

The summary stays one screen however big the batch: cards, the money lines, failures grouped
by reason, what reuse saved, cost by sync_mode and by each metadata column, and a histogram
of items per phase over time that covers every item (small batches also get each item's own
timeline). The item table is searched, sorted and paged in the page itself by one small
inline script (`templates/items_table.js`) from a JSON block: 10,000 rows are data, not
10,000 rows of markup. No external file, no network: the Content-Security-Policy allows inline
styles and that one script, by its hash. Jinja2 autoescaping escapes every value in the markup,
the JSON block escapes `<`, and the script sets values as text, so a manifest's `<script>`
shows up as text.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import secrets
from datetime import UTC, datetime
from decimal import Decimal
from importlib.resources import files
from typing import Any

import jinja2
from markupsafe import Markup

from pipeline.reporting.data import PHASES
from pipeline.reporting.summary import PHASE_NAMES, Summary, money_lines

PHASE_COLOURS = {
    "queued": "#b7b7b7",
    "upload": "#8e7cc3",
    "limits": "#e69138",
    "retried": "#cc4125",
    "provider": "#3d85c6",
    "poll": "#a4c2f4",
    "collect": "#6aa84f",
}
STATE_COLOURS = {
    "completed": "#2e7d32",
    "failed": "#c62828",
    "needs_attention": "#ef6c00",
    "skipped": "#757575",
    "cancelled": "#757575",
}
MAX_TIMELINE_ROWS = 400
"""Up to this many items, each one's timeline is drawn too (beside the histogram)."""
TIMELINE_WIDTH_PX = 760
TIMELINE_ROW_PX = 14
HISTOGRAM_HEIGHT_PX = 140
ITEMS_SCRIPT = files("pipeline.reporting").joinpath("templates/items_table.js").read_text("utf-8")
ITEMS_SCRIPT_HASH = base64.b64encode(hashlib.sha256(ITEMS_SCRIPT.encode()).digest()).decode()
"""The CSP names the table's script by its hash: no other script can run in the page."""

_environment = jinja2.Environment(
    loader=jinja2.PackageLoader("pipeline.reporting", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(epoch_s: float | None) -> str:
    if not epoch_s:
        return ""
    return datetime.fromtimestamp(epoch_s, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _timeline_bars(summary: Summary) -> list[dict[str, Any]]:
    """Rectangles (x, width in px) for each phase of the first MAX_TIMELINE_ROWS items."""
    span = summary.timeline_span_s or 1.0
    scale = TIMELINE_WIDTH_PX / span
    bars = []
    for index, row in enumerate(summary.timeline[:MAX_TIMELINE_ROWS]):
        for phase, start, end in row.phases:
            bars.append(
                {
                    "y": index * TIMELINE_ROW_PX,
                    "x": round(start * scale, 1),
                    "width": max(round((end - start) * scale, 1), 1.0),
                    "colour": PHASE_COLOURS[phase],
                    "title": f"{row.item_id}: {phase} {end - start:.1f} s",
                }
            )
    return bars


def _ticks(span_s: float, most: int = 6) -> list[tuple[float, str]]:
    """(x px, label) marks on the timeline's time axis, at a round step (1, 2 or 5 x 10^k s).

    >>> _ticks(13.4)
    [(0.0, '0 s'), (283.6, '5 s'), (567.2, '10 s')]
    """
    span = span_s or 1.0
    step = 10 ** math.floor(math.log10(span / most))
    for factor in (1, 2, 5, 10):
        if span / (step * factor) <= most:
            step *= factor
            break
    count = int(span // step)
    return [
        (round(TIMELINE_WIDTH_PX * n * step / span, 1), f"{n * step:g} s") for n in range(count + 1)
    ]


def _histogram_bars(summary: Summary) -> list[dict[str, Any]]:
    """Stacked rectangles, one per phase per time bin, scaled to the busiest bin."""
    histogram = summary.histogram
    if histogram is None or not histogram.items:
        return []
    highest = max(histogram.totals(), default=0) or 1
    width = TIMELINE_WIDTH_PX / histogram.bins
    bars = []
    for b in range(histogram.bins):
        y = float(HISTOGRAM_HEIGHT_PX)
        start_s = b * histogram.bin_s
        for phase in PHASE_NAMES:
            n = histogram.counts[phase][b]
            if not n:
                continue
            height = HISTOGRAM_HEIGHT_PX * n / highest
            y -= height
            bars.append(
                {
                    "x": round(b * width, 1),
                    "y": round(y, 1),
                    "width": round(max(width - 1, 1.0), 1),
                    "height": round(height, 1),
                    "colour": PHASE_COLOURS[phase],
                    "title": f"{start_s:g}–{start_s + histogram.bin_s:g} s: {n} {phase}",
                }
            )
    return bars


ITEM_COLUMNS = (
    "row",
    "id",
    "state",
    "sync_mode",
    "metadata",
    "video s",
    "output s",
    *(f"{phase} s" for phase in PHASE_NAMES),
    "cost",
    "output",
    "output_uri",
    "error",
    "hint",
)
NUMERIC_COLUMNS = {"row", "video s", "output s", "cost", *(f"{p} s" for p in PHASE_NAMES)}


def _round(value: Any, digits: int) -> float | None:
    return round(float(value), digits) if value not in (None, "") else None


def _item_row(item: dict[str, Any]) -> list[Any]:
    phases = item.get("phases") or {}
    metadata = "; ".join(f"{k}: {v}" for k, v in (item.get("metadata") or {}).items())
    return [
        item.get("row"),
        item.get("id"),
        item.get("state"),
        item.get("sync_mode"),
        metadata,
        _round(item.get("video_s"), 2),
        _round(item.get("output_s"), 2),
        *(_round(phases[p]["seconds"], 1) if p in phases else None for p in PHASE_NAMES),
        _round(item.get("cost_usd"), 4),
        item.get("output") or None,
        item.get("output_uri") or None,
        item.get("error") or None,
        item.get("hint") or None,
    ]


def _script_safe(text: str) -> str:
    """JSON text safe inside a `<script type="application/json">` element."""
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(raw, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


ITEMS_JSON_OPEN = _script_safe(
    json.dumps(
        {"columns": list(ITEM_COLUMNS), "numeric": [c in NUMERIC_COLUMNS for c in ITEM_COLUMNS]},
        separators=(",", ":"),
    )[:-1]
    + ',"rows":['
)
"""The item table's JSON up to its rows; each row follows (`item_row_json`), then `]}`."""
ITEMS_JSON_CLOSE = "]}"
_ITEMS_PLACE = f"\x00items-{secrets.token_hex(8)}\x00"
"""Where the rows go in the rendered page (no manifest value can hold a token made now)."""


def item_row_json(item: dict[str, Any]) -> str:
    """One item's row of the table's JSON, script-safe."""
    return _script_safe(json.dumps(_item_row(item), ensure_ascii=False, separators=(",", ":")))


def render_html_parts(report: dict[str, Any], summary: Summary) -> tuple[str, str]:
    """The page before and after the item table's rows, which go between them as
    `ITEMS_JSON_OPEN`, the rows joined by commas, and `ITEMS_JSON_CLOSE` (streamed by
    `pipeline.reporting.writer`: the page never holds every row at once)."""
    page = _render(report, summary, Markup(_ITEMS_PLACE))  # noqa: S704 - a placeholder
    before, after = page.split(_ITEMS_PLACE)
    return before, after


def _render(report: dict[str, Any], s: Summary, items_json: Markup) -> str:
    rows = s.timeline[:MAX_TIMELINE_ROWS] if len(s.timeline) <= MAX_TIMELINE_ROWS else []
    histogram_ticks = _ticks(s.histogram.bin_s * s.histogram.bins) if s.histogram else []
    return _environment.get_template("report.html.j2").render(
        histogram_bars=_histogram_bars(s),
        histogram_ticks=histogram_ticks,
        histogram_height=HISTOGRAM_HEIGHT_PX,
        item_columns=[c for c in ITEM_COLUMNS if c not in ("output_uri", "hint")],
        item_column_index={c: i for i, c in enumerate(ITEM_COLUMNS)},
        items_json=items_json,
        items_script=Markup(ITEMS_SCRIPT),  # noqa: S704 - our own file, named by its hash
        items_script_hash=ITEMS_SCRIPT_HASH,
        report=report,
        s=s,
        money_lines=money_lines(s),
        created=_when(report.get("created_at")),
        finished=_when(report.get("finished_at")),
        phases=PHASE_NAMES,
        phase_meanings=PHASES,
        phase_colours=PHASE_COLOURS,
        state_colours=STATE_COLOURS,
        timeline_rows=rows,
        bars=_timeline_bars(s),
        ticks=_ticks(s.timeline_span_s),
        timeline_width=TIMELINE_WIDTH_PX,
        row_px=TIMELINE_ROW_PX,
        max_estimate=max([g.estimate_usd for g in s.by_sync_mode], default=Decimal(0))
        or Decimal(1),
    )
