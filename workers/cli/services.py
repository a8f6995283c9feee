"""The long-running commands: a worker, the sandbox, and the end-to-end demo."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.text import Text

from pipeline.due import DueSteps
from pipeline.errors import LipdubError, LocalStackError
from pipeline.settings import Settings
from workers.cli.batch import RunOptions, run_batch
from workers.cli.common import (
    EXIT_ERROR,
    EXIT_INCOMPLETE,
    EXIT_OK,
    EXIT_SETTINGS,
    LogLevel,
    app,
    err,
    fail,
    guard,
    out,
)
from workers.cli.common import settings as load_cli_settings
from workers.logs import configure_logging
from workers.session import Session


def _quiet_http_logs() -> None:
    # httpx logs every URL it fetches; presigned URLs carry credentials and signatures.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


class Pool(StrEnum):
    """Celery pools lipdub's tasks run in (they block on I/O in threads or processes)."""

    PREFORK = "prefork"
    THREADS = "threads"
    SOLO = "solo"


@app.command()
def worker(
    concurrency: Annotated[
        int, typer.Option(help="Task processes (or threads) in this worker.")
    ] = max(os.cpu_count() or 1, 2),
    pool: Annotated[
        Pool, typer.Option(help="The pool of task processes (gevent/eventlet are not supported).")
    ] = Pool.PREFORK,
    loglevel: Annotated[LogLevel, typer.Option(case_sensitive=False)] = LogLevel.INFO,
    hostname: Annotated[
        str | None, typer.Option(help="Worker name (default: celery@<host>).")
    ] = None,
    supervise: Annotated[
        bool,
        typer.Option(
            help="Start the Celery worker again if it dies (OOM, a lost broker); "
            "--no-supervise runs it in this process."
        ),
    ] = True,
) -> None:
    """A Celery worker with lipdub's settings, on lipdub's queue. Start one per machine or more."""
    from workers.app import create_app

    settings = load_cli_settings()
    configure_logging(settings, logging.INFO if supervise else loglevel.value)
    _refuse_without_durability(settings)
    if supervise:
        from workers.supervise import supervise as run_supervised

        child = [sys.executable, "-m", "workers.cli", "worker", "--no-supervise"]
        child += [
            f"--concurrency={concurrency}",
            f"--pool={pool.value}",
            f"--loglevel={loglevel.value}",
        ]
        child += [f"--hostname={hostname}"] if hostname else []
        raise typer.Exit(run_supervised(child))
    argv = [
        "worker",
        f"--concurrency={concurrency}",
        f"--pool={pool.value}",
        f"--loglevel={loglevel.value}",
        f"--queues={settings.worker.queue}",
        "--without-gossip",
        "--without-mingle",
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    # Celery's programmatic entry drops the worker's exit code; read it off the worker (its
    # `worker_init` signal hands it over), so that a worker that died of an unrecoverable error
    # does not exit 0 like one that was stopped: the supervisor restarts the former.
    from celery.signals import worker_init

    workers: list[Any] = []
    worker_init.connect(lambda sender, **_: workers.append(sender), weak=False)
    create_app(settings).start(argv)
    raise typer.Exit(int(workers[0].exitcode or 0) if workers else 1)


def _refuse_without_durability(settings: Settings) -> None:
    """Exit 3 with one line when the ledger's Redis cannot make a submit's intent durable
    (the setting named); a supervisor would only start it again to the same end."""
    from pipeline.durability import check_at_start
    from pipeline.errors import DurabilityError

    try:
        check_at_start(settings.redis.url, settings.ledger)
    except DurabilityError as error:
        raise fail(f"worker not started: {error}", EXIT_SETTINGS) from None


@app.command()
def metrics(
    port: Annotated[int, typer.Option(help="Port to serve /metrics on.")] = 9108,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
) -> None:
    """Serve Prometheus metrics read from the ledger at each scrape: items by state, spend and
    polls per batch; the provider's 429s, live workers, the cool-down, the queue's depth."""
    import time as clock

    from prometheus_client import make_asgi_app
    from prometheus_client.registry import CollectorRegistry

    from pipeline.metrics import LedgerCollector
    from pipeline.serving import AsgiServer
    from workers.tasks import queued_messages

    settings = load_cli_settings()
    configure_logging(settings)
    with guard(), Session.connect(settings) as session:
        registry = CollectorRegistry()
        registry.register(
            LedgerCollector(
                session.ledger,
                queued=lambda: queued_messages(session.app, settings.worker.queue),
                clock=clock.time,
                queue=settings.worker.queue,
            )
        )
        try:
            server = AsgiServer(make_asgi_app(registry), host, port, max_connections=100)
        except OSError as error:
            raise fail(f"cannot listen on {host}:{port}: {error.strerror}", EXIT_ERROR) from None
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        try:
            server.start()
            logging.getLogger("lipdub.metrics").info("serving http://%s:%d/metrics", host, port)
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()


@app.command()
def sandbox(
    port: Annotated[int, typer.Option(help="Port to listen on (0 picks a free one).")] = 8199,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    config: Annotated[Path | None, typer.Option(help="Sandbox config (TOML or JSON).")] = None,
    public_url: Annotated[
        str | None,
        typer.Option(help="The URL clients reach it at, for output links (e.g. in compose)."),
    ] = None,
) -> None:
    """Run the offline lipsync-3 provider: the WaveSpeed API without a key or a bill."""
    from pydantic import ValidationError

    from pipeline.sandbox.config import SandboxConfig
    from pipeline.sandbox.server import SandboxServer

    try:
        sandbox_config = SandboxConfig.from_file(config) if config else SandboxConfig()
        if public_url:
            sandbox_config = sandbox_config.model_copy(
                update={"public_url": public_url.rstrip("/")}
            )
    except (OSError, ValueError, ValidationError) as error:
        raise fail(f"cannot use sandbox config {config}: {error}", EXIT_SETTINGS) from None
    configure_logging(load_cli_settings())
    try:
        server = SandboxServer(sandbox_config, host=host, port=port)
    except OSError as error:
        raise fail(
            f"cannot listen on {host}:{port}: {error.strerror}. Try --port 0.", EXIT_ERROR
        ) from None
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
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


@app.command()
def webhooks(
    port: Annotated[int, typer.Option(help="Port to listen on (0 picks a free one).")] = 8280,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
) -> None:
    """Receive the provider's webhooks on POST /webhooks: a finished prediction is polled at
    once instead of at its next scheduled poll. Forged, stale and replayed deliveries are
    refused. Point LIPDUB_PROVIDER__WEBHOOK_URL at it (through your TLS proxy)."""
    from pipeline.provider.client import ProviderClient
    from pipeline.webhook_inbox import WebhookInbox
    from workers.tasks import CeleryDispatcher
    from workers.webhooks import WebhookServer

    settings = load_cli_settings()
    configure_logging(settings)
    with guard():
        session = Session.connect(settings)
        secret = settings.provider.webhook_secret
        if secret is None:
            provider = ProviderClient.from_settings(settings.provider)
            try:
                secret = provider.webhook_secret()
            finally:
                provider.close()
        inbox = WebhookInbox(session.ledger, secret)
        dispatcher = CeleryDispatcher(
            session.app, settings.worker.queue, due=DueSteps(session.redis, settings.worker.queue)
        )
    try:
        server = WebhookServer(inbox, dispatcher, host=host, port=port)
    except OSError as error:
        raise fail(
            f"cannot listen on {host}:{port}: {error.strerror}. Try --port 0.", EXIT_ERROR
        ) from None
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        # uvicorn serves in a thread; this one waits for Ctrl-C or SIGTERM, then stops it
        # gracefully (requests in progress finish) and exits 0.
        server.start()
        out.print(Text(f"lipdub webhooks listening on {server.url}; Ctrl-C stops it."))
        sys.stdout.flush()
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        session.close()
        out.print("webhooks stopped")


@app.command()
def demo(
    workdir: Annotated[
        Path, typer.Option(help="Where the sample media, logs and reports go.")
    ] = Path("demo-output"),
    workers: Annotated[int, typer.Option(help="Worker processes to start.")] = 2,
) -> None:
    """Run a real batch end to end on a bundled local stack, then stop it all.

    Starts redis-server, moto's S3 server, the sandbox and worker processes, generates sample
    media (all five sync modes, one item that fails on purpose), runs it like `lipdub run`,
    prints the summary and the report paths, and leaves no process behind.
    """
    from pipeline.samples import write_sample_catalog
    from workers.demo import DemoStack

    _quiet_http_logs()
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    out.print(Text(f"Generating sample media in {workdir / 'catalog'} …"))
    manifest = write_sample_catalog(workdir / "catalog")
    out.print(Text(f"Starting redis-server, S3 (moto), the sandbox and {workers} workers …"))
    code = EXIT_OK
    try:
        with guard(), DemoStack(workdir, workers=workers) as stack:
            assert stack.settings is not None
            out.print(
                Text(
                    f"  redis {stack.redis.url} · s3 {stack.s3.url} · sandbox {stack.sandbox.url} · "
                    f"worker logs {workdir}/worker-*.log"
                )
            )
            with Session.connect(stack.settings) as session:
                options = RunOptions(
                    name="demo", yes=True, reports_dir=workdir / "reports", create_bucket=True
                )
                code = run_batch(session, manifest, options)
            out.print(Text("Stopping the stack …"))
    except KeyboardInterrupt:
        err.print(Text("Interrupted: the demo stack is stopped."))
        raise typer.Exit(130) from None
    except ModuleNotFoundError as error:
        raise fail(
            f"the demo needs {error.name}: install it with pip install 'lipdub[demo]'", EXIT_ERROR
        ) from None
    except (LocalStackError, LipdubError) as error:
        raise fail(str(error), EXIT_ERROR) from None
    # The sample catalog fails one item on purpose (a video without a face): that is success.
    if code == EXIT_INCOMPLETE:
        code = EXIT_OK
    out.print(Text("Demo finished; nothing is left running."))
    raise typer.Exit(code)
