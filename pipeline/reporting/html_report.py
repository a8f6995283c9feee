"""The report as one self-contained HTML page a person would rather look at than read.

Summary cards, cost by sync_mode and by each metadata column, a timeline of every item's
phases (inline SVG), and a table of items with status, durations, cost, output, error and
hint. No script, no external file, no network: a Content-Security-Policy that allows only
inline styles makes sure of it. Jinja2 autoescaping escapes every value, so a manifest's
`<script>` shows up as text.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import jinja2

from pipeline.reporting.data import PHASES
from pipeline.reporting.summary import PHASE_NAMES, Summary, money_lines, summarize

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
TIMELINE_WIDTH_PX = 760
TIMELINE_ROW_PX = 14

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


def render_html(report: dict[str, Any], summary: Summary | None = None) -> str:
    """The HTML page."""
    s = summary or summarize(report)
    rows = s.timeline[:MAX_TIMELINE_ROWS]
    return _environment.get_template("report.html.j2").render(
        report=report,
        s=s,
        money_lines=money_lines(s),
        items=report["items_detail"],
        created=_when(report.get("created_at")),
        finished=_when(report.get("finished_at")),
        phases=PHASE_NAMES,
        phase_meanings=PHASES,
        phase_colours=PHASE_COLOURS,
        state_colours=STATE_COLOURS,
        timeline_rows=rows,
        timeline_hidden=max(0, len(s.timeline) - len(rows)),
        bars=_timeline_bars(s),
        ticks=_ticks(s.timeline_span_s),
        timeline_width=TIMELINE_WIDTH_PX,
        row_px=TIMELINE_ROW_PX,
        max_estimate=max([g.estimate_usd for g in s.by_sync_mode], default=Decimal(0))
        or Decimal(1),
    )
