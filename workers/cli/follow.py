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
from rich.progress_bar import ProgressBar
from rich.table import Table
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


def status_panel(status: dict[str, Any], now_s: float) -> Group:
    """The live display: a bar, the items per state, money and time."""
    total = max(status["items"], 1)
    title = Text.assemble(
        ("Batch ", "bold"),
        (status["batch_id"], "bold cyan"),
        f"  {status['name']}  ",
        (status["state"] + (" (cancelled)" if status["cancelled"] else ""), "bold"),
    )
    bar = ProgressBar(total=total, completed=status["done"], width=50)
    table = Table.grid(padding=(0, 2))
    for _ in ItemState:
        table.add_column(justify="right")
    table.add_row(*[Text(s.value, style=STATE_STYLES.get(s.value, "")) for s in ItemState])
    table.add_row(*[str(status["counts"].get(s.value, 0)) for s in ItemState])
    elapsed = now_s - status["created_at"] if status.get("created_at") else None
    money = Text(
        f"{status['done']}/{status['items']} final · spent ${Decimal(status['spent_usd']):.2f} "
        f"(reserved ${Decimal(status['reserved_usd']):.2f}) of an estimated "
        f"${Decimal(status['estimate_usd']):.2f} · elapsed {_duration(elapsed)} · "
        f"ETA {_duration(eta_s(status, now_s))}"
    )
    return Group(title, bar, table, money)


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
        with Live(status_panel(status, clock()), console=console, refresh_per_second=4) as live:
            while status["state"] != "finished":
                pause.wait(interval_s)
                status = read_status()
                live.update(status_panel(status, clock()))
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
