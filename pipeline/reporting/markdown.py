"""A short Markdown summary of a batch, for pasting into a ticket or a chat.

Values from the manifest (ids, metadata, error text quoting them) are escaped so that they
render as the text they are: no links, images, HTML or table breaks sneak in.
"""

from __future__ import annotations

import html
import re
from typing import Any

from pipeline.reporting.summary import CostGroup, Summary, money_lines, summarize

_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")
MAX_PROBLEMS_LISTED = 20


def md_text(value: object) -> str:
    """`value` as inert Markdown text on one line.

    >>> md_text("[click](http://x) | <b>")
    '\\\\[click\\\\]\\\\(http://x\\\\) \\\\| &lt;b&gt;'
    """
    text = " ".join(str(value).split())
    text = html.escape(text, quote=False)
    return _MARKDOWN_SPECIALS.sub(r"\\\1", text)


def _money(value: Any) -> str:
    return f"${value:.2f}"


def _groups_table(title: str, groups: list[CostGroup]) -> list[str]:
    lines = [
        f"| {md_text(title)} | items | completed | billable s | estimate | cost |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for g in groups:
        lines.append(
            f"| {md_text(g.value or '(empty)')} | {g.items} | {g.completed} | "
            f"{g.billable_s:.1f} | {_money(g.estimate_usd)} | {_money(g.cost_usd)} |"
        )
    return lines


def render_markdown(report: dict[str, Any], summary: Summary | None = None) -> str:
    """The Markdown text."""
    s = summary or summarize(report)
    states = ", ".join(f"{n} {state}" for state, n in sorted(s.counts.items(), key=lambda x: -x[1]))
    wall = f"{s.wall_s:.0f} s" if s.wall_s is not None else "still running"
    rate = f", {s.items_per_minute:.1f} items/min" if s.items_per_minute else ""
    lines = [
        f"### lipdub batch {md_text(report['batch_id'])}: {md_text(report.get('name', ''))}",
        "",
        f"**{s.completed}/{s.items} completed** ({states or 'no items'}). "
        f"Billable {s.billable_s:.1f} s; cost {_money(s.cost_usd)} "
        f"(estimate {_money(s.estimate_usd)}). Wall time {wall}{rate}.",
        *[md_text(line) for line in money_lines(s)],
        *(
            [
                f"{s.reuse.items} item(s) reused an earlier output: {_money(s.reuse.saved_usd)} saved."
            ]
            if s.reuse.items
            else []
        ),
        "",
        *_groups_table("sync_mode", s.by_sync_mode),
    ]
    for column, groups in s.by_metadata.items():
        lines += ["", *_groups_table(column, groups)]
    if s.problems:
        lines += ["", "**Not completed:**", ""]
        for item in s.problems[:MAX_PROBLEMS_LISTED]:
            hint = f" — {md_text(item['hint'])}" if item.get("hint") else ""
            lines.append(
                f"- {md_text(item['id'])} (row {item['row']}, {item['state']}): "
                f"{md_text(item['error'])}{hint}"
            )
        if s.problems_total > MAX_PROBLEMS_LISTED:
            lines.append(f"- … and {s.problems_total - MAX_PROBLEMS_LISTED} more (see the report)")
    return "\n".join(lines) + "\n"
