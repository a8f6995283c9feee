"""`lipdub schedule list|run-now` and `lipdub beat`: the overnight schedules.

Schedules live in `configs/schedule.yaml` (`LIPDUB_SCHEDULE__FILE`, or the YAML itself in
`LIPDUB_SCHEDULE__YAML`); see `pipeline.schedules`.
"""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from pipeline.errors import SettingsError
from pipeline.settings import Settings
from workers.cli.common import (
    EXIT_SETTINGS,
    EXIT_USAGE,
    LogLevel,
    app,
    emit_json,
    fail,
    guard,
    out,
)
from workers.cli.common import settings as load_cli_settings
from workers.logs import configure_logging
from workers.session import Session

if TYPE_CHECKING:
    from pipeline.schedules.config import ScheduleSpec
    from pipeline.schedules.runner import RunOutcome
    from pipeline.schedules.store import ScheduleStore

# The schedules' modules (cron, YAML, the runner and the step flow behind it) are imported by
# the commands that use them, so that the other commands start without them.

schedule_app = typer.Typer(
    help="Overnight schedules: list them, or run one now.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(schedule_app, name="schedule")

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _schedules(settings: Settings) -> dict[str, ScheduleSpec]:
    from pipeline.schedules.config import load_schedules

    try:
        return load_schedules(settings.schedule.file, settings.schedule.yaml)
    except SettingsError as error:
        raise fail(str(error), EXIT_SETTINGS) from None


def describe(
    spec: ScheduleSpec, store: ScheduleStore, session: Session, now_s: float
) -> dict[str, Any]:
    """One schedule as `schedule list` shows it."""
    from pipeline.schedules.gate import night_scope
    from pipeline.schedules.timing import next_fire_s
    from pipeline.schedules.window import Window

    window = Window(spec.window, spec.zone)
    night = window.night(now_s)
    budget = session.ledger.budget(night_scope(spec.name, night))
    committed = (budget["spent_usd"] or Decimal(0)) + (budget["reserved_usd"] or Decimal(0))
    return {
        "name": spec.name,
        "cron": spec.cron,
        "timezone": spec.timezone,
        "next_run": datetime.fromtimestamp(next_fire_s(spec, now_s), tz=spec.zone).isoformat(),
        "window": window.describe(),
        "window_open": window.is_open(now_s),
        "inbox": spec.inbox,
        "night": night,
        "nightly_budget_usd": str(spec.nightly_budget_usd)
        if spec.nightly_budget_usd is not None
        else None,
        "tonight_committed_usd": str(committed),
        "parked_items": store.parked_count(spec.name),
        "missed": spec.missed.value,
        "last": store.last_outcome(spec.name),
    }


@schedule_app.command("list")
def list_schedules(as_json: AsJson = False) -> None:
    """Each schedule: next run, window, tonight's budget, items waiting, last outcome."""
    from pipeline.schedules.store import ScheduleStore

    settings = load_cli_settings()
    schedules = _schedules(settings)
    if not schedules:
        message = (
            f"No schedules: {settings.schedule.file} does not exist or lists none. "
            "Copy the example in configs/schedule.yaml, or set LIPDUB_SCHEDULE__FILE."
        )
        emit_json([]) if as_json else out.print(Text(message))
        return
    with guard(), Session.connect(settings) as session:
        store = ScheduleStore(session.redis)
        now = session.control.clock()
        rows = [describe(spec, store, session, now) for spec in schedules.values()]
    if as_json:
        emit_json(rows)
        return
    table = Table()
    for column in ("schedule", "next run", "window", "tonight USD", "parked", "last outcome"):
        table.add_column(column)
    for row in rows:
        limit = row["nightly_budget_usd"]
        table.add_row(
            Text(row["name"]),
            Text(f"{row['next_run'][:16].replace('T', ' ')} {row['timezone']}\n{row['cron']}"),
            Text(
                row["window"]
                + (" (open)" if row["window_open"] and row["window"] != "any time" else "")
            ),
            Text(f"{Decimal(row['tonight_committed_usd']):.2f} / {limit if limit else 'no limit'}"),
            str(row["parked_items"]),
            Text(_last_text(row["last"])),
        )
    out.print(table)


def _last_text(last: dict[str, Any] | None) -> str:
    if not last:
        return "never ran"
    when = datetime.fromtimestamp(float(last["at"])).strftime("%Y-%m-%d %H:%M")
    parts = [f"{when} {last['trigger']}"]
    parts.append(f"{len(last['started'])} started, {len(last['refused'])} refused")
    parts += last["errors"][:2]
    return "\n".join(parts)


@schedule_app.command("run-now")
def run_now(
    name: Annotated[str, typer.Argument(help="The schedule's name (see `lipdub schedule list`).")],
    as_json: AsJson = False,
) -> None:
    """Pick up the schedule's inbox now, as its cron would (its window and budget still apply)."""
    from pipeline.schedules.runner import Scheduler

    settings = load_cli_settings()
    schedules = _schedules(settings)
    if name not in schedules:
        known = ", ".join(schedules) or "none"
        raise fail(f"no schedule {name!r} (schedules: {known})", EXIT_USAGE)
    with guard(), Session.connect(settings) as session:
        session.storage.ensure_bucket()
        scheduler = Scheduler.build(settings, schedules, session.control, session.s3)
        outcome = scheduler.run(name, trigger="run-now")
    if as_json:
        emit_json(outcome.to_dict())
        return
    _print_outcome(outcome)


def _print_outcome(outcome: RunOutcome) -> None:
    if not (outcome.started or outcome.refused or outcome.waiting or outcome.errors):
        out.print(Text(f"{outcome.schedule}: the inbox has no new manifest."))
    for started in outcome.started:
        out.print(
            Text(
                f"Started {started['batch_id']} from {started['manifest']}: {started['items']} "
                f"items, estimate ${Decimal(started['estimate_usd']):.2f}. Follow it with: "
                f"lipdub status {started['batch_id']} --follow"
            )
        )
    for refused in outcome.refused:
        out.print(Text(f"Refused {refused['manifest']}: {refused['error']}", style="red"))
    for waiting in outcome.waiting:
        out.print(Text(f"Waiting: {waiting}"))
    for problem in outcome.errors:
        out.print(Text(f"Problem: {problem}", style="red"))


@app.command()
def beat(
    loglevel: Annotated[LogLevel, typer.Option(case_sensitive=False)] = LogLevel.INFO,
) -> None:
    """The scheduler (Celery beat) with lipdub's settings. One acts; extra ones stand by."""
    from workers.app import create_app

    settings = load_cli_settings()
    schedules = _schedules(settings)
    configure_logging(settings, loglevel.value)
    logging.getLogger("lipdub.beat").info(
        "%d schedule(s): %s; checking every %g s",
        len(schedules),
        ", ".join(f"{s.name} ({s.cron} {s.timezone})" for s in schedules.values()) or "none",
        settings.schedule.tick_s,
    )
    create_app(settings).start(["beat", f"--loglevel={loglevel.value}"])
