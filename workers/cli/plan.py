"""`lipdub plan` and `lipdub samples`: validate and price a manifest; make sample media."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import redis
import typer
from rich import box
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from pipeline import wiring
from pipeline.errors import LedgerError, LipdubError, ManifestError
from pipeline.ledger import Ledger
from pipeline.makespan import Duration, batch_duration
from pipeline.pricing import to_cents
from pipeline.processing_time import ProcessingTimes, expected_line
from pipeline.settings import Settings
from pipeline.sync_modes import SyncMode
from workers.cli.common import (
    EXIT_BUDGET,
    EXIT_ERROR,
    EXIT_INVALID,
    app,
    emit_json,
    err,
    fail,
    out,
)
from workers.cli.common import settings as load_cli_settings

if TYPE_CHECKING:
    from pipeline.batches import Payable
    from pipeline.planning import Plan
    from pipeline.provider.client import ProviderClient

# The planner, the provider's client and the batches' pricing are imported where they are
# used, so that every other command starts without them (PyAV, httpx, the step flow).


@app.command()
def plan(
    manifest: Annotated[Path, typer.Argument(help="CSV, JSON, JSONL or YAML manifest.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    sync_mode: Annotated[
        SyncMode | None, typer.Option(help="Use this sync_mode for every row.")
    ] = None,
    budget: Annotated[
        float | None, typer.Option(help="Fail (exit 4) when the estimate is over this many USD.")
    ] = None,
) -> None:
    """Validate a manifest, probe its media and print the cost estimate. Spends nothing."""
    settings = load_cli_settings()
    with provider_client(settings) as provider:
        result = build_plan(settings, manifest, sync_mode, as_json=as_json, provider=provider)
    payable = _payable_if_known(settings, result)
    to_pay = payable.total_usd if payable else result.total_usd
    limit = Decimal(str(budget)) if budget is not None else settings.budget.batch_usd
    over = limit is not None and to_pay > limit
    duration = expected_duration(settings, result)
    if as_json:
        known = {"payable_usd": str(to_pay), "free": payable.free} if payable else {}
        timing = {"duration_s": round(duration.seconds, 1), "duration_learned": duration.learned}
        emit_json({"valid": True, "over_budget": over, **result.to_dict(), **known, **timing})
    else:
        print_plan(result, payable, duration=duration)
        if payable is None:
            err.print(
                Text(
                    "Redis did not answer, so pairs paid for earlier are not known: the "
                    "estimate counts every item (LIPDUB_REDIS__URL)."
                )
            )
    if over:
        raise fail(
            f"the estimate ${to_cents(to_pay)} is over the budget ${limit}. "
            "Raise --budget (or LIPDUB_BUDGET__BATCH_USD) or plan fewer items.",
            EXIT_BUDGET,
        )


def expected_duration(
    settings: Settings, result: Plan, client: redis.Redis | None = None
) -> Duration:
    """How long the plan's batch should take under the account's limits, with the processing
    times the provider has been taking (read from `client`'s Redis, or the settings' when
    none is given; the configured expectation when Redis does not answer)."""
    own = client is None
    client = client or redis.Redis.from_url(
        settings.redis.url, decode_responses=True, socket_connect_timeout=2, socket_timeout=10
    )
    times = ProcessingTimes(client, shape=expected_line(settings.polling))
    model = settings.provider.model_path
    try:
        return batch_duration(
            [(i.sync_mode.value, i.video.info.duration_s) for i in result.items],
            settings.provider,
            settings.polling,
            lambda mode: times.line(model, mode) if settings.polling.learn else None,
            settings.batch.send_order,
        )
    finally:
        if own:
            client.close()


def _payable_if_known(settings: Settings, result: Plan) -> Payable | None:
    """What the plan will pay, given what the ledger says is paid for; None when Redis does
    not answer (planning needs no Redis)."""
    from pipeline.batches import plan_payable

    client = redis.Redis.from_url(
        settings.redis.url, decode_responses=True, socket_connect_timeout=2, socket_timeout=10
    )
    try:
        return plan_payable(Ledger(client), result, settings.provider.model_path)
    except LedgerError:
        return None
    finally:
        client.close()


@contextlib.contextmanager
def provider_client(settings: Settings) -> Iterator[ProviderClient]:
    """A client for the provider (quotes, the balance), closed afterwards."""
    from pipeline.provider.client import ProviderClient
    from pipeline.provider.retry import RetryPolicy

    client = ProviderClient.from_settings(
        settings.provider, retry_policy=RetryPolicy(max_attempts=2)
    )
    try:
        yield client
    finally:
        client.close()


def build_plan(
    settings: Settings,
    manifest: Path,
    sync_mode: SyncMode | None,
    *,
    as_json: bool,
    provider: ProviderClient | None = None,
) -> Plan:
    """Plan the manifest with a progress bar; an invalid manifest exits 1 listing every problem.
    With a provider and `price.quotes` on, items are priced by the provider's quotes."""
    try:
        with progress_bar("Checking media") as progress:
            return wiring.plan(
                settings,
                manifest,
                provider=provider,
                sync_mode_override=sync_mode,
                progress=progress,
            )
    except ManifestError as error:
        if as_json:
            problems = [
                {
                    "row": p.row,
                    "line": p.line,
                    "field": p.field,
                    "message": p.message,
                    "hint": p.hint,
                }
                for p in error.problems
            ]
            emit_json({"valid": False, "problems": problems})
        else:
            err.print(Text(f"lipdub: {manifest} is not valid: {error}"))
        raise typer.Exit(EXIT_INVALID) from None
    except LipdubError as error:
        raise fail(str(error), EXIT_ERROR) from None


@contextlib.contextmanager
def progress_bar(
    label: str, *, in_bytes: bool = False
) -> Iterator[Callable[[int, int], None] | None]:
    """A transient progress bar on stderr when it is a terminal; else no callback at all.
    It counts items, or bytes with their rate (`in_bytes`)."""
    if not err.is_terminal:
        yield None
        return
    counts = (DownloadColumn(), TransferSpeedColumn()) if in_bytes else (MofNCompleteColumn(),)
    with Progress(
        TextColumn(label),
        BarColumn(),
        *counts,
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def print_plan(
    result: Plan,
    payable: Payable | None = None,
    *,
    max_rows: int = 50,
    duration: Duration | None = None,
) -> None:
    """The plan as a table (the first `max_rows` items), the estimate line and, given its
    `duration`, how long it should take. With what is `payable`, items whose pair is paid
    for already show what they cost: nothing."""
    free = payable.free if payable else {}
    table = Table(
        title=f"Plan for {result.manifest.name}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1, 0, 0),
    )
    for name, justify in (
        ("row", "right"),
        ("id", "left"),
        ("sync_mode", "left"),
        ("video s", "right"),
        ("audio s", "right"),
        ("output s", "right"),
        ("billable s", "right"),
        ("USD", "right"),
    ):
        # Only the id may wrap: numbers and modes stay whole in an 80-column log.
        table.add_column(
            name,
            justify=justify,  # type: ignore[arg-type]
            overflow="fold",
            no_wrap=name != "id",
        )
    for item in result.items[:max_rows]:
        table.add_row(
            str(item.row),
            Text(item.id),
            item.sync_mode.value,
            f"{item.video.info.duration_s:.2f}",
            f"{item.audio.info.duration_s:.2f}",
            f"{item.expected_output_s:.2f}",
            f"{item.billable_s:.2f}",
            f"0 ({free[item.id]})" if item.id in free else f"{item.price_usd:.4f}",
        )
    if len(result.items) > max_rows:
        table.add_row("", Text(f"… {len(result.items) - max_rows} more"), *[""] * 6)
    table.add_section()
    table.add_row(
        "",
        f"{len(result.items)} items",
        "",
        "",
        "",
        "",
        f"{result.total_billable_s:.2f}",
        f"{to_cents(payable.total_usd if payable else result.total_usd)}",
    )
    out.print(table)
    modes = ", ".join(f"{mode} ${to_cents(cost)}" for mode, cost in result.by_sync_mode_usd.items())
    reuse = ""
    if free:
        saved = result.total_usd - (payable.total_usd if payable else result.total_usd)
        reuse = (
            f"; {len(free)} item(s) reuse a pair already paid for "
            f"(${to_cents(saved)} not paid again)"
        )
        modes = f"before reuse: {modes}"
    to_pay = payable.total_usd if payable else result.total_usd
    out.print(
        Text(
            f"Estimate: ${to_cents(to_pay)} ({modes}){reuse}. Nothing was spent.\n"
            f"Priced by the {result.price_basis}."
        )
    )
    if duration is not None:
        basis = (
            "the processing times the provider has been taking"
            if duration.learned
            else "the expected processing time (LIPDUB_POLLING__EXPECTED_*; learned once "
            "the provider has finished a few)"
        )
        out.print(Text(f"Time: {duration.text()} under the account's limits, with {basis}."))


@app.command()
def samples(
    folder: Annotated[Path, typer.Argument(help="Where to write the media and catalog.csv.")],
) -> None:
    """Write generated sample media and a manifest covering all five sync modes."""
    from pipeline.samples import write_sample_catalog

    manifest = write_sample_catalog(folder)
    out.print(Text(f"Wrote {manifest} and its media. Next: lipdub plan {manifest}"))
