"""The progress display: what a person sees while a batch runs (pure rendering, scripted status)."""

from __future__ import annotations

import io

from rich.console import Console

from workers.cli.follow import eta_s, follow, status_line


def status(done, state="running", **counts):
    all_counts = {"pending": 0, "running": 0, "completed": 0, "failed": 0, **counts}
    return {
        "batch_id": "b1",
        "name": "catalog",
        "state": state,
        "cancelled": False,
        "items": 4,
        "done": done,
        "counts": all_counts,
        "estimate_usd": "1.000000",
        "spent_usd": str(0.25 * done),
        "reserved_usd": "0.5",
        "created_at": 100.0,
    }


SCRIPT = [
    status(0, pending=4),
    status(0, running=2, pending=2),
    status(2, running=2, completed=2),
    status(4, "finished", completed=3, failed=1),
]


AFTER_THE_END = status(4, "finished", completed=4)
"""Never to be read: following stops at the first finished status."""


def scripted(remaining: list | None = None):
    remaining = remaining if remaining is not None else [*SCRIPT, AFTER_THE_END]
    return lambda: remaining.pop(0)


def test_eta_is_the_pace_so_far():
    assert eta_s(status(0), 130.0) is None
    assert eta_s(status(2), 140.0) == 40.0
    assert eta_s(status(4), 140.0) == 0.0


def test_a_line_per_change_when_output_is_not_a_terminal():
    buffer = io.StringIO()
    remaining = [*SCRIPT, AFTER_THE_END]
    final = follow(
        scripted(remaining), Console(file=buffer, width=200), interval_s=0, clock=lambda: 140.0
    )
    assert final is SCRIPT[-1] and remaining == [AFTER_THE_END]
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 4
    assert lines[2] == (
        "2/4 final (running 2, completed 2); spent $0.50 of ~$1.00; elapsed 0:40, ETA 0:40"
    )
    assert lines[3].startswith("4/4 final (completed 3, failed 1)")


def test_a_live_panel_on_a_terminal():
    buffer = io.StringIO()
    console = Console(file=buffer, width=120, force_terminal=True, color_system=None)
    remaining = [*SCRIPT, AFTER_THE_END]
    final = follow(scripted(remaining), console, interval_s=0, clock=lambda: 140.0)
    assert final is SCRIPT[-1] and remaining == [AFTER_THE_END]
    text = buffer.getvalue()
    assert "Batch b1  catalog  finished" in text
    assert "4/4 $1.00 of ~$1.00 ETA 0:00" in text
    assert "completed 3  failed 1  reserved $0.50 · elapsed 0:40" in text


def test_status_line_for_an_empty_batch():
    empty = {**status(0), "items": 0, "counts": {}}
    assert status_line(empty, 100.0).startswith("0/0 final (no items)")
