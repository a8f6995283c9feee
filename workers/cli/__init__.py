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

# The collector paused while the commands' modules load: pydantic, redis-py, Typer and rich
# make hundreds of thousands of objects at import and none of them garbage, and the
# collections they would set off are about a sixth of a command's wall time (`make bench
# BENCH_ARGS="--only cli"`). Restored as it was, once loaded.
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
