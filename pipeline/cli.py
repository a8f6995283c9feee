"""The `lipdub` command line.

Exit codes: 0 success; 1 the manifest is invalid (every problem is listed); 2 wrong usage;
3 invalid settings; 4 the estimate is over the budget; 5 another lipdub error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from pipeline.errors import LipdubError, ManifestError, SettingsError
from pipeline.media import MediaInspector, ProbeCache
from pipeline.planning import Plan, plan_manifest
from pipeline.pricing import to_cents
from pipeline.remote import RemoteProber, make_s3_client
from pipeline.settings import Settings, load_settings
from pipeline.sync_modes import SyncMode

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_SETTINGS, EXIT_BUDGET, EXIT_ERROR = 0, 1, 2, 3, 4, 5

app = typer.Typer(
    name="lipdub",
    help="Localize a video catalog with lip-sync (WaveSpeed sync/lipsync-3).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _fail(message: str, code: int) -> typer.Exit:
    err.print(Text(message))
    return typer.Exit(code)


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except SettingsError as error:
        raise _fail(f"lipdub: {error}", EXIT_SETTINGS) from None


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
    settings = _settings()
    cache = ProbeCache(settings.media.cache_path / "probe-cache.sqlite3")
    try:
        with _progress_bar("Checking media") as progress:
            result = plan_manifest(
                manifest,
                media=settings.media,
                price=settings.price,
                default_sync_mode=settings.batch.default_sync_mode,
                sync_mode_override=sync_mode,
                inspector=MediaInspector(cache),
                remote=_remote_prober(settings),
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
            out.print_json(json.dumps({"valid": False, "problems": problems}))
        else:
            err.print(Text(f"lipdub: {manifest} is not valid: {error}"))
        raise typer.Exit(EXIT_INVALID) from None
    except LipdubError as error:
        raise _fail(f"lipdub: {error}", EXIT_ERROR) from None
    limit = Decimal(str(budget)) if budget is not None else settings.budget.batch_usd
    over = limit is not None and result.total_usd > limit
    if as_json:
        out.print_json(json.dumps({"valid": True, "over_budget": over, **result.to_dict()}))
    else:
        _print_plan(result)
    if over:
        raise _fail(
            f"lipdub: the estimate ${to_cents(result.total_usd)} is over the budget ${limit}. "
            "Raise --budget (or LIPDUB_BUDGET__BATCH_USD) or plan fewer items.",
            EXIT_BUDGET,
        )


@contextlib.contextmanager
def _progress_bar(label: str) -> Iterator[Callable[[int, int], None] | None]:
    """A transient progress bar on stderr when it is a terminal; else no callback at all."""
    if not err.is_terminal:
        yield None
        return
    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _remote_prober(settings: Settings) -> RemoteProber:
    storage = settings.storage
    return RemoteProber(
        s3_factory=lambda: make_s3_client(endpoint_url=storage.endpoint_url, region=storage.region),
        timeout_s=settings.media.probe_timeout_s,
    )


def _print_plan(result: Plan) -> None:
    table = Table(title=f"Plan for {result.manifest.name}", title_justify="left")
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
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for item in result.items:
        table.add_row(
            str(item.row),
            Text(item.id),
            item.sync_mode.value,
            f"{item.video.info.duration_s:.2f}",
            f"{item.audio.info.duration_s:.2f}",
            f"{item.expected_output_s:.2f}",
            f"{item.billable_s:.2f}",
            f"{item.price_usd:.4f}",
        )
    table.add_section()
    table.add_row(
        "",
        f"{len(result.items)} items",
        "",
        "",
        "",
        "",
        f"{result.total_billable_s:.2f}",
        f"{to_cents(result.total_usd)}",
    )
    out.print(table)
    modes = ", ".join(f"{mode} ${to_cents(cost)}" for mode, cost in result.by_sync_mode_usd.items())
    out.print(
        Text(
            f"Estimate: ${to_cents(result.total_usd)} at ${result.price_model.rate_per_second_usd}/s "
            f"of {result.price_model.basis.value.replace('_', ' ')} ({modes}). Nothing was spent."
        )
    )


@app.command()
def samples(
    folder: Annotated[Path, typer.Argument(help="Where to write the media and catalog.csv.")],
) -> None:
    """Write generated sample media and a manifest covering all five sync modes."""
    from pipeline.samples import write_sample_catalog

    manifest = write_sample_catalog(folder)
    out.print(Text(f"Wrote {manifest} and its media. Next: lipdub plan {manifest}"))


@app.command()
def sandbox(
    port: Annotated[int, typer.Option(help="Port to listen on (0 picks a free one).")] = 8199,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    config: Annotated[Path | None, typer.Option(help="Sandbox config (TOML or JSON).")] = None,
) -> None:
    """Run the offline lipsync-3 provider: the WaveSpeed API without a key or a bill."""
    from pydantic import ValidationError

    from pipeline.sandbox.config import SandboxConfig
    from pipeline.sandbox.server import SandboxServer

    try:
        sandbox_config = SandboxConfig.from_file(config) if config else SandboxConfig()
    except (OSError, ValueError, ValidationError) as error:
        raise _fail(f"lipdub: cannot use sandbox config {config}: {error}", EXIT_SETTINGS) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # httpx logs every URL it fetches; presigned input URLs carry credentials and signatures.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        server = SandboxServer(sandbox_config, host=host, port=port)
    except OSError as error:
        raise _fail(
            f"lipdub: cannot listen on {host}:{port}: {error.strerror}. Try --port 0.", EXIT_ERROR
        ) from None

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    out.print(
        Text(
            f"lipdub sandbox listening on {server.url} (model {sandbox_config.model_path}, "
            f"API key {sandbox_config.api_keys[0]!r}); Ctrl-C stops it."
        )
    )
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.engine.stop()
        out.print("sandbox stopped")


def main() -> None:
    """Entry point for `python -m pipeline.cli`."""
    app()


if __name__ == "__main__":
    main()
