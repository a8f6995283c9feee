"""Follow a batch until it finishes: a live display on a terminal, one line per change elsewhere.

Following only reads the ledger; stopping it (Ctrl-C) leaves the batch running.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.text import Text

from pipeline.states import ItemState

STATE_STYLES = {
    "completed": "green",
    "failed": "red",
    "needs_attention": "dark_orange",
    "skipped": "grey50",
    "cancelled": "grey50",
}


def eta_s(status: dict[str, Any], now_s: float) -> float | None:
    """Seconds left at the pace so far (None until an item has finished).

    >>> eta_s({"items": 10, "done": 5, "created_at": 100.0}, 150.0)
    50.0
    """
    done, total = int(status["done"]), int(status["items"])
    created = status.get("created_at")
    if done >= total:
        return 0.0
    if not done or not created:
        return None
    elapsed = max(now_s - float(created), 0.0)
    return round(elapsed / done * (total - done), 1)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def status_line(status: dict[str, Any], now_s: float) -> str:
    """One line: done/total, the non-zero states, money so far, elapsed and ETA."""
    states = ", ".join(f"{state} {n}" for state, n in status["counts"].items() if n)
    elapsed = now_s - status["created_at"] if status.get("created_at") else None
    return (
        f"{status['done']}/{status['items']} final ({states or 'no items'}); "
        f"spent ${Decimal(status['spent_usd']):.2f} of ~${Decimal(status['estimate_usd']):.2f}; "
        f"elapsed {_duration(elapsed)}, ETA {_duration(eta_s(status, now_s))}"
    )


class Panel:
    """The live display: the batch's title, a `rich.progress` bar with items done, spend and
    ETA, and the items per state, wrapped to the terminal's width (80 columns hold it)."""

    def __init__(self) -> None:
        self.progress = Progress(
            BarColumn(bar_width=None),
            MofNCompleteColumn(),
            TextColumn("{task.fields[money]}"),
            TextColumn("ETA {task.fields[eta]}"),
            expand=True,
        )
        self.task = self.progress.add_task("items", total=1, money="", eta="–")
        self.title = Text()
        self.states = Text()

    def update(self, status: dict[str, Any], now_s: float) -> None:
        """Show this status."""
        self.title = Text.assemble(
            ("Batch ", "bold"),
            (status["batch_id"], "bold cyan"),
            f"  {status['name']}  ",
            (status["state"] + (" (cancelled)" if status["cancelled"] else ""), "bold"),
            overflow="ellipsis",
            no_wrap=True,
        )
        elapsed = now_s - status["created_at"] if status.get("created_at") else None
        self.progress.update(
            self.task,
            total=max(status["items"], 1),
            completed=status["done"],
            money=f"${Decimal(status['spent_usd']):.2f} of ~${Decimal(status['estimate_usd']):.2f}",
            eta=_duration(eta_s(status, now_s)),
        )
        parts: list[Text | str] = []
        for state in ItemState:
            count = status["counts"].get(state.value, 0)
            if count:
                parts += [
                    (Text(state.value, style=STATE_STYLES.get(state.value, ""))),
                    f" {count}  ",
                ]
        parts.append(
            f"reserved ${Decimal(status['reserved_usd']):.2f} · elapsed {_duration(elapsed)}"
        )
        self.states = Text.assemble(*parts)

    def __rich__(self) -> Group:
        return Group(self.title, self.progress.get_renderable(), self.states)


def follow(
    read_status: Callable[[], dict[str, Any]],
    console: Console,
    *,
    interval_s: float = 0.5,
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """Show the batch until it is finished; its final status. Ctrl-C raises KeyboardInterrupt."""
    pause = threading.Event()  # never set: its wait() paces the loop
    status = read_status()
    if console.is_terminal:
        panel = Panel()
        panel.update(status, clock())
        with Live(panel, console=console, refresh_per_second=4) as live:
            while status["state"] != "finished":
                pause.wait(interval_s)
                status = read_status()
                panel.update(status, clock())
                live.refresh()
        return status
    last = None
    while True:
        counts = (tuple(status["counts"].items()), status["state"])
        if counts != last:
            console.print(Text(status_line(status, clock())))
            last = counts
        if status["state"] == "finished":
            return status
        pause.wait(interval_s)
        status = read_status()
