"""The batch commands: run, status, report, cancel, retry-failed, batches.

`run` plans, asks before a large spend, starts the batch and follows it to its report; the
others read or steer a batch by id, from any machine that reaches the same Redis.
"""

from __future__ import annotations

import json
import socket
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_args

import typer
from rich.table import Table
from rich.text import Text

from pipeline import wiring
from pipeline.errors import PredictionNotFound, SettingsError
from pipeline.heartbeat import LIVE_S, Beat, Heartbeats, disagreements
from pipeline.pricing import to_cents
from pipeline.reporting.data import batch_status
from pipeline.settings import StorageSettings
from pipeline.sync_modes import SyncMode
from pipeline.waiting import FIELDS as WAITING_FIELDS
from pipeline.waiting import GateFacts, history, reason_of, reasons
from workers.cli.common import (
    EXIT_BUDGET,
    EXIT_ERROR,
    EXIT_INCOMPLETE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    app,
    emit_json,
    err,
    fail,
    guard,
    out,
    unknown_batch,
)
from workers.cli.common import settings as load_cli_settings
from workers.cli.follow import follow, status_line
from workers.cli.plan import (
    build_plan,
    expected_duration,
    print_plan,
    progress_bar,
    provider_client,
)
from workers.session import Session

if TYPE_CHECKING:
    from pipeline.reporting import ReportFormat

# What only some commands use (the planner, the reports, the bucket, notices, audits) is
# imported where they use it: `lipdub status` and `lipdub batches` start without it.

REPORTS_DIR = Path("lipdub-reports")
WAITING_READ_AT_MOST = 2000
"""`lipdub status` groups at most this many unfinished items (the first, in manifest order:
those a batch is working on) by what they wait for, so that it takes the same time at any size."""
FOLLOW_EVERY_S = 0.5
"""How often `--follow` re-reads the status (the batch record's counts: the same cost at any
size)."""

BatchId = Annotated[str, typer.Argument(help="The batch id `run` printed (see `lipdub batches`).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
OutDir = Annotated[
    Path, typer.Option("--out", help="Folder for the local reports (one subfolder per batch).")
]


@dataclass(frozen=True)
class RunOptions:
    """What `lipdub run` was asked to do."""

    name: str | None = None
    sync_mode: SyncMode | None = None
    budget_usd: Decimal | None = None
    partial_budget: bool = False
    force: bool = False
    yes: bool = False
    detach: bool = False
    as_json: bool = False
    reports_dir: Path = REPORTS_DIR
    create_bucket: bool = False
    notify: tuple[str, ...] = ()
    """Apprise URLs to tell when the batch finishes (secrets)."""


def run_batch(session: Session, manifest: Path, options: RunOptions) -> int:
    """Plan, confirm, start, follow, write the reports; the exit code. Shared by `run` and `demo`."""
    from pydantic import SecretStr

    from pipeline.preflight import preflight
    from pipeline.schedules.notices import check_targets

    settings = session.settings
    problems = check_targets(options.notify)
    if problems:
        raise SettingsError("; ".join(problems))
    with provider_client(settings) as provider:
        plan = build_plan(
            settings, manifest, options.sync_mode, as_json=options.as_json, provider=provider
        )
        # Pairs paid for already (earlier batches, earlier rows) cost nothing again.
        to_pay = session.control.payable(plan, force=options.force)
        if not options.as_json:
            print_plan(plan, to_pay, duration=expected_duration(settings, plan, session.redis))
        _check_budget(to_pay.total_usd, options, settings.budget.batch_usd)
        # Before any spend and before asking: the key, the balance, the bucket.
        balance_usd = preflight(
            provider, session.storage, to_pay.total_usd, create_bucket=options.create_bucket
        )
    _confirm(to_pay.total_usd, settings.budget.confirm_above_usd, options.yes)
    with progress_bar("Uploading inputs", in_bytes=True) as on_upload:
        batch_id = session.control.start(
            plan,
            name=options.name,
            budget_usd=options.budget_usd,
            partial_budget=options.partial_budget,
            force=options.force,
            extra={"balance_before_usd": str(balance_usd)},
            notify=[SecretStr(url) for url in options.notify],
            on_upload=on_upload,
        )
    if not options.as_json:
        _print_uploads(session, batch_id)
    started = (
        f"Started batch {batch_id}: {len(plan.items)} items, estimate "
        f"${to_cents(to_pay.total_usd)}. Follow it with: lipdub status {batch_id} --follow"
    )
    if options.detach:
        if options.as_json:
            emit_json(session.control.status(batch_id))
        else:
            out.print(Text(started))
        return EXIT_OK
    err.print(Text(started))
    return follow_to_report(
        session, batch_id, options.reports_dir, as_json=options.as_json, check_workers=True
    )


def _print_uploads(session: Session, batch_id: str) -> None:
    """What putting the manifest's local files in the bucket did (nothing without any)."""
    batch = session.ledger.batch(batch_id)
    fields = batch.raw if batch is not None else {}
    if not fields.get("inputs_local"):
        return
    sent_mb = int(fields.get("inputs_uploaded_bytes") or 0) / 1_000_000
    refused = int(fields.get("inputs_refused") or 0)
    err.print(
        Text(
            f"Uploaded {fields.get('inputs_uploaded')} of {fields.get('inputs_local')} local "
            f"files ({sent_mb:.1f} MB); {fields.get('inputs_present')} were in the bucket already"
            + (
                f"; {refused} could not be put there: their items fail, saying why"
                if refused
                else ""
            )
            + "."
        )
    )


def _check_budget(total_usd: Decimal, options: RunOptions, default: Decimal | None) -> None:
    budget = options.budget_usd if options.budget_usd is not None else default
    if budget is not None and total_usd > budget and not options.partial_budget:
        raise fail(
            f"the estimate ${to_cents(total_usd)} is over the budget ${budget}; nothing was "
            "spent. Raise --budget, run fewer items, or add --partial-budget to run what fits.",
            EXIT_BUDGET,
        )


def _confirm(total_usd: Decimal, above_usd: Decimal, yes: bool) -> None:
    if yes or total_usd <= above_usd:
        return
    question = f"Spend up to ${to_cents(total_usd)} on this batch?"
    if not sys.stdin.isatty():
        raise fail(
            f"the estimate ${to_cents(total_usd)} is above LIPDUB_BUDGET__CONFIRM_ABOVE_USD "
            f"(${above_usd}) and there is no terminal to ask on: add --yes to start anyway.",
            EXIT_USAGE,
        )
    if not typer.confirm(question, default=False, err=True):
        raise fail("not started; nothing was spent.", EXIT_USAGE)


def follow_to_report(
    session: Session,
    batch_id: str,
    reports_dir: Path,
    *,
    as_json: bool,
    check_workers: bool = False,
) -> int:
    """Follow the batch, then write its reports locally and print the summary; the exit code."""
    from pipeline.reporting import write_local
    from pipeline.storage import report_key

    try:
        if check_workers and not session.workers_online():
            err.print(
                Text(
                    "No worker answered yet: items wait in the queue "
                    f"{session.settings.worker.queue!r} until one runs. Start one with: "
                    "lipdub worker (same LIPDUB_REDIS__URL).",
                    style="yellow",
                )
            )
        status = follow(
            lambda: batch_status(session.ledger, batch_id), err, interval_s=FOLLOW_EVERY_S
        )
    except KeyboardInterrupt:
        err.print(
            Text(
                f"\nStopped following. Batch {batch_id} keeps running on the workers; follow it "
                f"again with: lipdub status {batch_id} --follow (or cancel it: lipdub cancel "
                f"{batch_id})."
            )
        )
        return EXIT_INTERRUPTED
    report = session.control.report(batch_id)
    try:
        paths = write_local(report, reports_dir / batch_id)
    except OSError as error:
        # The batch is done and its reports are in the bucket: say so, keep the summary.
        paths = []
        unwritten = f"{error.strerror or error}: {error.filename or reports_dir}"
    else:
        unwritten = ""
    if as_json:
        emit_json({**status, "reports": [str(p) for p in paths]})
    else:
        print_summary(report, paths, session.settings.storage)
    if unwritten:
        storage = session.settings.storage
        raise fail(
            f"the local reports could not be written ({unwritten}); they are in "
            f"s3://{storage.bucket}/{report_key(storage.prefix, batch_id)} and "
            f"`lipdub report {batch_id} --format all --out DIR` writes them elsewhere",
            EXIT_ERROR,
        )
    return EXIT_OK if status["counts"].get("completed", 0) == status["items"] else EXIT_INCOMPLETE


def print_summary(report: dict[str, Any], paths: list[Path], storage: StorageSettings) -> None:
    """The finished batch in a few lines, then where its reports are."""
    from pipeline.reporting import summarize
    from pipeline.reporting.summary import money_lines
    from pipeline.storage import output_key

    s = summarize(report)
    table = Table(title=f"Batch {report['batch_id']} ({report['name']})", title_justify="left")
    for column in ("state", "items", "billable s", "cost USD"):
        table.add_column(column, justify="left" if column == "state" else "right")
    by_state: dict[str, list[dict[str, Any]]] = {}
    for item in report["items_detail"]:
        by_state.setdefault(item["state"], []).append(item)
    for state_name, items in sorted(by_state.items()):
        table.add_row(
            state_name,
            str(len(items)),
            f"{sum(i['billable_s'] or 0 for i in items):.1f}",
            f"{sum(Decimal(i['cost_usd'] or 0) for i in items):.4f}",
        )
    table.add_section()
    table.add_row("total", str(s.items), f"{s.billable_s:.1f}", f"{s.cost_usd:.4f}")
    out.print(table)
    wall = f"{s.wall_s:.0f} s" if s.wall_s is not None else "–"
    out.print(
        Text(
            f"Cost ${s.cost_usd:.2f} (estimate ${s.estimate_usd:.2f}); wall time {wall}; "
            f"outputs in s3://{storage.bucket}/{output_key(storage.prefix, report['batch_id'], '')}"
        )
    )
    for line in money_lines(s):
        out.print(Text(line, style="red" if line.startswith("UNATTRIBUTED") else ""))
    for item in report["items_detail"]:
        if item["state"] != "completed" and item.get("error"):
            out.print(Text(f"  {item['id']} (row {item['row']}): {item['error']}", style="red"))
            if item.get("hint"):
                out.print(Text(f"    → {item['hint']}"))
    if paths:
        out.print(Text("Reports: " + ", ".join(str(p) for p in paths)))


@app.command()
def run(
    manifest: Annotated[Path, typer.Argument(help="CSV, JSON, JSONL or YAML manifest.")],
    name: Annotated[str | None, typer.Option(help="A name for the batch.")] = None,
    sync_mode: Annotated[
        SyncMode | None, typer.Option(help="Use this sync_mode for every row.")
    ] = None,
    budget: Annotated[
        float | None,
        typer.Option(help="Spend at most this many USD (refuse if the estimate is over)."),
    ] = None,
    partial_budget: Annotated[
        bool, typer.Option(help="With --budget: run what fits, skip the rest.")
    ] = False,
    force: Annotated[
        bool, typer.Option(help="Pay again for pairs already paid for (normally reused).")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before spending.")] = False,
    detach: Annotated[
        bool, typer.Option(help="Start the batch and return its id at once.")
    ] = False,
    as_json: AsJson = False,
    reports_dir: OutDir = REPORTS_DIR,
    create_bucket: Annotated[
        bool,
        typer.Option(help="Create the bucket when it does not exist (else refuse: a typo)."),
    ] = False,
    notify: Annotated[
        list[str] | None,
        typer.Option(
            help="Tell this apprise URL when the batch finishes (repeat for more): "
            "https://hooks.slack.com/services/..., mmost://..., json://host/path, mailto://...",
        ),
    ] = None,
) -> None:
    """Plan a manifest, check the account, start the batch and follow it to its report."""
    settings = load_cli_settings()
    options = RunOptions(
        name=name,
        sync_mode=sync_mode,
        budget_usd=Decimal(str(budget)) if budget is not None else None,
        partial_budget=partial_budget,
        force=force,
        yes=yes,
        detach=detach,
        as_json=as_json,
        reports_dir=reports_dir,
        create_bucket=create_bucket,
        notify=tuple(notify or ()),
    )
    with guard(), Session.connect(settings) as session:
        code = run_batch(session, manifest, options)
    raise typer.Exit(code)


@app.command()
def status(
    batch_id: BatchId,
    follow_batch: Annotated[
        bool, typer.Option("--follow", "-f", help="Follow until the batch finishes.")
    ] = False,
    as_json: AsJson = False,
    reports_dir: OutDir = REPORTS_DIR,
    item_id: Annotated[
        str | None, typer.Option("--item", help="One item's history instead of the batch's.")
    ] = None,
) -> None:
    """Items per state, money so far, and (with --follow) a live display to the end."""
    with guard(), Session.connect(load_cli_settings()) as session:
        current = _status_or_exit(session, batch_id)
        if item_id is not None:
            _item_status(session, batch_id, item_id, as_json=as_json)
            return
        if follow_batch:
            code = follow_to_report(session, batch_id, reports_dir, as_json=as_json)
            raise typer.Exit(code)
        now = datetime.now(tz=UTC).timestamp()
        alive = Heartbeats(session.redis).alive(now)
        unfinished = session.ledger.unfinished_items(
            batch_id, WAITING_FIELDS, limit=WAITING_READ_AT_MOST
        )
        waiting = reasons(batch_id, unfinished, GateFacts.read(session.redis))
        of_unfinished = current["items"] - current["done"]
        if as_json:
            workers = {"alive": len(alive), "disagree_on": disagreements(alive)}
            groups = [
                {"reason": w.reason.name.lower(), "says": w.reason.value, "items": w.items,
                 "next_due_at": w.next_due_at}
                for w in waiting
            ]  # fmt: skip
            emit_json(
                {**current, "workers": workers, "waiting": groups,
                 "waiting_read": len(unfinished), "unfinished": of_unfinished}
            )  # fmt: skip
        else:
            warning = workers_warning(alive) if current["state"] != "finished" else None
            if warning:
                err.print(Text(warning, style="bold red"))
            out.print(Text(f"{batch_id} ({current['name']}): {current['state']}"))
            out.print(Text(status_line(current, now)))
            for group in waiting:
                due = (
                    f"; next step due {_clock(group.next_due_at)}"
                    if group.next_due_at is not None
                    else ""
                )
                out.print(Text(f"  waiting for {group.reason.value}: {group.items}{due}"))
            if len(unfinished) < of_unfinished:
                out.print(
                    Text(
                        f"  (of the first {len(unfinished):,} of {of_unfinished:,} unfinished items)"
                    )
                )


def _item_status(session: Session, batch_id: str, item_id: str, *, as_json: bool) -> None:
    """One item: its state, attempts, last error and its recorded moments."""
    record = session.ledger.item(batch_id, item_id)
    if not record:
        from pipeline.retention import lapsed

        if lapsed(session.ledger, batch_id, item_id):
            raise fail(
                f"the record of item {item_id!r} lapsed after batch {batch_id} was compacted "
                f"(nothing could ask for it any more): `lipdub report {batch_id}` has it",
                EXIT_USAGE,
            )
        raise fail(f"batch {batch_id} has no item {item_id!r}", EXIT_USAGE)
    member = f"{batch_id}:{item_id}"
    why = reason_of(record, member, GateFacts.read(session.redis))
    moments = history(record)
    summary = {
        "id": item_id,
        "state": record.get("state", ""),
        "waiting_for": why.value if why else None,
        "attempts": int(record.get("attempts") or 0),
        "submits": int(record.get("submits") or 0),
        "prediction_id": record.get("prediction_id") or None,
        "error": record.get("error") or None,
        "last_submit_error": record.get("last_submit_error") or None,
        "history": [{"at": at, "what": what} for at, what in moments],
    }
    if as_json:
        emit_json(summary)
        return
    out.print(Text(f"{batch_id}/{item_id}: {summary['state']}"))
    if why:
        out.print(Text(f"  waiting for {why.value}"))
    out.print(Text(f"  attempts {summary['attempts']}, submits {summary['submits']}"))
    for name in ("prediction_id", "error", "last_submit_error"):
        if summary[name]:
            out.print(Text(f"  {name.replace('_', ' ')}: {summary[name]}"))
    for at, what in moments:
        out.print(Text(f"  {_clock(at)}  {what}"))


def _clock(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, tz=UTC).strftime("%H:%M:%S UTC")


def workers_warning(alive: list[Beat]) -> str | None:
    """What is wrong with the live workers, for a running batch's status: none alive, or
    alive but disagreeing on settings that must agree."""
    if not alive:
        return (
            f"No worker is alive (no heartbeat in the last {LIVE_S:.0f} s): this batch's items "
            "wait until one runs. Start one with: lipdub worker"
        )
    differ = disagreements(alive)
    if differ:
        return (
            f"The {len(alive)} live workers disagree on {', '.join(differ)}: "
            "`lipdub workers` shows which runs with what."
        )
    return None


@app.command()
def workers(
    as_json: AsJson = False,
    here: Annotated[
        bool,
        typer.Option(
            "--here",
            help="Exit 0 only if a live worker runs on this host (a container's health check).",
        ),
    ] = False,
) -> None:
    """The live workers (a heartbeat in the last 30 s): host, pid, version, and the settings
    that must agree across them (the API key as a fingerprint, never the key)."""
    with guard(), Session.connect(load_cli_settings()) as session:
        now = datetime.now(tz=UTC).timestamp()
        alive = Heartbeats(session.redis).alive(now)
    if here:
        host = socket.gethostname()
        if not any(beat.host == host for beat in alive):
            raise fail(f"no live worker on {host}", EXIT_ERROR)
        out.print(Text(f"a worker is alive on {host}"))
        return
    if as_json:
        emit_json([asdict(b) for b in alive])
        return
    if not alive:
        out.print(Text("No worker is alive. Start one with: lipdub worker"))
        return
    differ = disagreements(alive)
    table = Table()
    for column in ("worker", "host", "pid", "version", "up", *differ):
        table.add_column(column)
    for beat in alive:
        table.add_row(
            Text(beat.name),
            Text(beat.host),
            str(beat.pid),
            beat.version,
            _duration(now - beat.started_at),
            *(Text(beat.settings.get(name, "")) for name in differ),
        )
    out.print(table)
    shared = {k: v for k, v in alive[0].settings.items() if k not in differ}
    out.print(Text("All agree on: " + ", ".join(f"{k}={v}" for k, v in sorted(shared.items()))))
    if differ:
        err.print(Text(f"They disagree on: {', '.join(differ)}", style="bold red"))


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(max(0.0, seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _status_or_exit(session: Session, batch_id: str) -> dict[str, Any]:
    try:
        return batch_status(session.ledger, batch_id)  # what control.status reads
    except KeyError:
        raise unknown_batch(batch_id) from None


class ReportChoice(StrEnum):
    """`lipdub report --format`: one of the report formats, or all of them."""

    JSON = "json"
    CSV = "csv"
    HTML = "html"
    MD = "md"
    ALL = "all"


@app.command()
def report(
    batch_id: BatchId,
    fmt: Annotated[
        ReportChoice, typer.Option("--format", help="A format, or all of them (needs --out).")
    ] = ReportChoice.MD,
    out_path: Annotated[
        Path | None,
        typer.Option("--out", help="Write to this file (a folder with --format all)."),
    ] = None,
) -> None:
    """The batch's report, rendered from the ledger (works while it is still running)."""
    if fmt is ReportChoice.ALL and out_path is None:
        raise fail("--format all writes four files: give a folder with --out", EXIT_USAGE)
    with guard(), Session.connect(load_cli_settings()) as session:
        _status_or_exit(session, batch_id)
        data = session.control.report(batch_id)
    with guard():  # a path that cannot be written is one line, not a traceback
        _write_report(data, fmt.value, out_path)


def _write_report(data: dict[str, Any], fmt: str, out_path: Path | None) -> None:
    from pipeline.reporting import file_name, render, write_local

    if fmt == "all":
        assert out_path is not None
        for path in write_local(data, out_path):
            out.print(Text(str(path)))
        return
    body = render(data, _format(fmt))
    if out_path is None:
        sys.stdout.write(body.decode())
        sys.stdout.flush()
        return
    target = out_path / file_name(_format(fmt)) if out_path.is_dir() else out_path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(body)
    out.print(Text(str(target)))


def _format(name: str) -> ReportFormat:
    from pipeline.reporting import ReportFormat

    for fmt in get_args(ReportFormat):
        if fmt == name:
            return fmt  # type: ignore[no-any-return]
    raise ValueError(name)


@app.command()
def cancel(batch_id: BatchId, as_json: AsJson = False) -> None:
    """Submit nothing more for the batch; what is already submitted is still collected."""
    with guard(), Session.connect(load_cli_settings()) as session:
        _status_or_exit(session, batch_id)
        current = session.control.cancel(batch_id)
    if as_json:
        emit_json(current)
        return
    out.print(
        Text(
            f"Cancelled {batch_id}: nothing more will be submitted; items already submitted "
            f"are collected (you pay for those). Resume later with: lipdub retry-failed {batch_id}"
        )
    )


@app.command("retry-failed")
def retry_failed(
    batch_id: BatchId,
    include_needs_attention: Annotated[
        bool,
        typer.Option(help="Also retry needs_attention items (their earlier submit may be billed)."),
    ] = False,
    include_input_errors: Annotated[
        bool,
        typer.Option(help="Also retry items the provider refused for their input (no face, ...)."),
    ] = False,
    budget: Annotated[
        float | None, typer.Option(help="A new budget for the batch, in USD.")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before spending.")] = False,
    detach: Annotated[bool, typer.Option(help="Return at once instead of following.")] = False,
    as_json: AsJson = False,
    reports_dir: OutDir = REPORTS_DIR,
) -> None:
    """Run failed, skipped and cancelled items again (a timed-out item polls again, no new pay).
    Items refused for their input, and needs_attention ones, only when asked."""
    with guard():
        settings = load_cli_settings()
        with Session.connect(settings) as session:
            _status_or_exit(session, batch_id)
            options = {
                "include_needs_attention": include_needs_attention,
                "include_input_errors": include_input_errors,
            }
            # Asked like `run`: a retry pays for every item it submits again.
            _confirm(
                session.control.retry_cost_usd(batch_id, **options),
                settings.budget.confirm_above_usd,
                yes,
            )
            retried = session.control.retry_failed(
                batch_id,
                **options,
                budget_usd=Decimal(str(budget)) if budget is not None else None,
            )
            if not retried:
                message = f"nothing to retry in {batch_id}"
                emit_json({"retried": []}) if as_json else out.print(message)
                return
            err.print(Text(f"Retrying {len(retried)} items of {batch_id}: {', '.join(retried)}"))
            if detach:
                if as_json:
                    emit_json({"retried": retried})
                return
            code = follow_to_report(session, batch_id, reports_dir, as_json=as_json)
    raise typer.Exit(code)


@app.command()
def adopt(
    batch_id: BatchId,
    item_id: Annotated[str, typer.Argument(help="The item that needs attention.")],
    prediction_id: Annotated[
        str, typer.Argument(help="Its prediction, found among the evidence's candidates.")
    ],
    as_json: AsJson = False,
) -> None:
    """Settle an item that needs attention with its prediction: polled and collected, nothing
    submitted again (its evidence lists the candidates; the dashboard tells which is it)."""
    with guard():
        settings = load_cli_settings()
        with Session.connect(settings) as session:
            _status_or_exit(session, batch_id)
            with provider_client(settings) as provider:
                try:
                    prediction = provider.get_result(prediction_id)
                except PredictionNotFound:
                    raise fail(
                        f"the provider knows no prediction {prediction_id!r} (predictions are "
                        "kept 7 days): check the id",
                        EXIT_USAGE,
                    ) from None
            if prediction.model and prediction.model.strip("/") != provider.model_path:
                raise fail(
                    f"prediction {prediction_id} is of {prediction.model}, not "
                    f"{provider.model_path}: it cannot be this item's",
                    EXIT_USAGE,
                )
            try:
                record = session.control.adopt(
                    batch_id,
                    item_id,
                    prediction_id,
                    created_at=prediction.created_at.timestamp() if prediction.created_at else None,
                )
            except KeyError:
                raise fail(f"no item {item_id!r} in batch {batch_id}", EXIT_USAGE) from None
            except ValueError as error:
                raise fail(str(error), EXIT_USAGE) from None
    if as_json:
        emit_json({"item": item_id, "state": record.get("state")})
    else:
        out.print(
            Text(
                f"{item_id} now has prediction {prediction_id} ({prediction.status}); it is "
                f"polled and collected as any other (nothing is submitted again). Follow it "
                f"with: lipdub status {batch_id} --follow"
            )
        )


@app.command()
def audit(batch_id: BatchId, as_json: AsJson = False) -> None:
    """Every charge of the batch: the provider's predictions in the batch's time that no
    lipdub item has, and those of its items charged beyond what the items booked, each with
    its status and cost (kept in the batch's report too)."""
    from pipeline.audit import audit_batch

    with guard():
        settings = load_cli_settings()
        with Session.connect(settings) as session:
            _status_or_exit(session, batch_id)
            with provider_client(settings) as provider:
                found = audit_batch(
                    session.ledger,
                    provider,
                    batch_id,
                    model=settings.provider.model_path,
                    now=datetime.now(tz=UTC).timestamp(),
                )
            session.ledger.update_batch(
                batch_id, {"audit": json.dumps(found.to_dict()), "audit_error": ""}
            )
    if as_json:
        emit_json(found.to_dict())
        return
    out.print(
        Text(
            f"{found.predictions} prediction(s) of {settings.provider.model_path} in the "
            f"batch's time; {len(found.unattributed)} belong to no lipdub item"
            + ("" if found.complete else " (more than the audit reads: it is incomplete)")
        )
    )
    for entry in found.unattributed:
        maybe = f", may be {', '.join(entry.may_be)}" if entry.may_be else ""
        known = entry.charged_usd is not None or entry.estimate_usd is not None
        cost = f" ${entry.cost_usd}" if known else ""
        out.print(Text(f"  {entry.id} {entry.status}{cost}{maybe}", style="red"))
    if found.unbooked:
        out.print(
            Text(
                f"{len(found.unbooked)} prediction(s) of this batch's items cost "
                f"${found.unbooked_usd} their items did not book:",
                style="red",
            )
        )
    for held in found.unbooked:
        pending = " (still running: may be charged)" if held.pending else ""
        out.print(
            Text(
                f"  {held.id} of {held.item_id} {held.status} ${held.cost_usd}{pending}",
                style="red",
            )
        )


@app.command()
def batches(
    limit: Annotated[int, typer.Option(help="How many, most recent first.")] = 20,
    as_json: AsJson = False,
) -> None:
    """Recent batches with their state, progress and spend."""
    with guard(), Session.connect(load_cli_settings()) as session:
        rows = [batch_status(session.ledger, b) for b in session.ledger.batch_ids(limit)]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        out.print("No batches yet. Start one with: lipdub run MANIFEST")
        return
    table = Table()
    for column in ("batch", "name", "state", "done", "completed", "spent USD", "started"):
        table.add_column(
            column, justify="right" if column in ("done", "completed", "spent USD") else "left"
        )
    for row in rows:
        created = row.get("created_at")
        table.add_row(
            row["batch_id"],
            Text(row["name"]),
            row["state"] + (" (cancelled)" if row["cancelled"] else ""),
            f"{row['done']}/{row['items']}",
            str(row["counts"].get("completed", 0)),
            f"{Decimal(row['spent_usd']):.2f}",
            datetime.fromtimestamp(created, tz=UTC).strftime("%Y-%m-%d %H:%M") if created else "",
        )
    out.print(table)


@app.command()
def prune(
    older_than: Annotated[
        float | None,
        typer.Option(help="Days since a batch finished (default LIPDUB_LEDGER__RETENTION_DAYS)."),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Shrink the completed items of batches finished long enough ago to their id, state,
    prediction, output and cost (their reports stay in the bucket; workers do this by
    themselves once a batch is LIPDUB_LEDGER__RETENTION_DAYS old)."""
    from pipeline.retention import every_batch

    settings = load_cli_settings()
    days = older_than if older_than is not None else settings.ledger.retention_days
    now = datetime.now(tz=UTC).timestamp()
    with guard(), Session.connect(settings) as session:
        done = list(every_batch(session.ledger, now=now, older_than_s=days * 86_400))
    if as_json:
        emit_json([{"batch_id": d.batch_id, "items": d.items} for d in done])
        return
    for d in done:
        out.print(Text(f"{d.batch_id}: {d.items} completed item(s) compacted"))
    out.print(Text(f"{len(done)} batch(es) finished more than {days:g} days ago compacted."))


@app.command()
def bucket(
    create: Annotated[
        bool, typer.Option("--create", help="Create it when it does not exist.")
    ] = False,
) -> None:
    """Check that the bucket (LIPDUB_STORAGE__BUCKET) exists; with --create, make it first
    (a deployment's one-shot setup: compose's `bucket` service)."""
    from pipeline.storage import Storage

    settings = load_cli_settings()
    with guard():
        storage = Storage(wiring.s3_client(settings), settings.storage)
        storage.check_bucket(create=create)
    out.print(Text(f"bucket {settings.storage.bucket} is there"))
