"""The `lipdub` command line (Typer, with rich output).

    lipdub plan catalog.csv          validate, probe and price; spends nothing
    lipdub run catalog.csv           plan, confirm, start, follow to the report
    lipdub status|report|cancel|retry-failed BATCH, lipdub batches
    lipdub worker, lipdub sandbox, lipdub demo, lipdub samples DIR
    lipdub schedule list|run-now NAME, lipdub beat      overnight schedules

It lives beside the Celery app because `run` and `worker` need it; everything it shows or
decides comes from `pipeline/`. Exit codes: `workers.cli.common.EXIT_CODES`.
"""

from __future__ import annotations

from workers.cli import batch, plan, schedule, services
from workers.cli.common import EXIT_CODES, app

__all__ = ["EXIT_CODES", "app", "batch", "main", "plan", "schedule", "services"]


def main() -> None:
    """Entry point for `python -m workers.cli`."""
    app()
