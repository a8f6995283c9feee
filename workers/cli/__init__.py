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

import gc

# The collector paused while the commands' modules load, and what they made frozen (kept
# out of every later collection): pydantic, redis-py, Typer, rich and lipdub make some 93,000
# objects at import, all but some 600 (import-time cycles, then never collected: once per
# process) kept for the process's life anyway, and the collections they set off were a
# quarter of a command's wall time (docs/performance.md, row 10). Restored as it was.
_collecting = gc.isenabled()
gc.disable()
try:
    from workers.cli import batch, plan, schedule, services
    from workers.cli.common import EXIT_CODES, app
finally:
    gc.freeze()
    if _collecting:
        gc.enable()

__all__ = ["EXIT_CODES", "app", "batch", "main", "plan", "schedule", "services"]


def main() -> None:
    """Entry point for `python -m workers.cli`."""
    app()
