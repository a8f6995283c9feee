"""Helpers to run batches on the real parts: Redis, Celery workers, moto's S3, the sandbox."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis
from celery.contrib.testing.worker import start_worker

from pipeline.batches import BatchControl
from pipeline.ledger import Ledger
from pipeline.media import MediaInspector
from pipeline.planning import Plan, plan_manifest
from pipeline.provider.client import ProviderClient
from pipeline.quotes import ProviderQuotes
from pipeline.remote import RemoteProber, make_s3_client
from pipeline.samples import write_audio, write_video
from pipeline.settings import Settings, to_environment
from pipeline.storage import Storage
from pipeline.wiring import starter_s3_client
from workers.app import create_app
from workers.pump import Pump
from workers.tasks import starting_dispatcher

ROOT = Path(__file__).resolve().parents[2]
SANDBOX_KEY = "sk-sandbox"

# Every sync mode, with video and audio of different lengths both ways.
ALL_MODES_ITEMS = [
    (f"{mode}-{n}", video_s, audio_s, mode)
    for n, (video_s, audio_s) in enumerate([(1.0, 1.6), (1.6, 1.0), (1.2, 1.2), (0.8, 1.4)])
    for mode in ("cut_off", "loop", "bounce", "silence", "remap")
]


def stack_settings(
    *, sandbox_url: str, redis_url: str, s3_url: str, bucket: str, **sections: dict[str, Any]
) -> Settings:
    """Settings for a test stack: fast polls (allowed for a local provider), short limits."""
    values: dict[str, dict[str, Any]] = {
        "provider": {
            "base_url": sandbox_url,
            "api_key": SANDBOX_KEY,
            "starts_per_minute": 600,
            "rate_window_s": 60.0,
            "start_margin_s": 0.0,
            "max_concurrent": 8,
            "polls_per_second": 100.0,
            "cooldown_default_s": 1.0,
            "submit_timeout_s": 5.0,
            "read_timeout_s": 10.0,
        },
        "storage": {"bucket": bucket, "endpoint_url": s3_url, "presign_expiry_s": 3600},
        "redis": {"url": redis_url},
        "polling": {
            "first_poll_min_s": 0.2,
            "max_interval_s": 1.0,
            "expected_fixed_s": 0.2,
            "expected_per_video_s": 0.1,
            "item_deadline_s": 60.0,
            "reconcile_grace_s": 1.0,
        },
        "worker": {
            "task_time_limit_s": 60,
            "task_soft_time_limit_s": 50,
            "max_countdown_s": 20.0,
            "visibility_timeout_s": 120,
            "retry_delay_s": 0.2,
        },
    }
    for section, overrides in sections.items():
        values.setdefault(section, {}).update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as LIPDUB_ environment variables, for a worker subprocess."""
    return to_environment(settings)


def write_manifest(folder: Path, items: list[tuple[str, float, float, str]]) -> Path:
    """Generate media and a CSV manifest for (id, video_s, audio_s, sync_mode) rows."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["id,video,audio,sync_mode,language"]
    for item_id, video_s, audio_s, mode in items:
        video = folder / f"{item_id}.mp4"
        audio = folder / f"{item_id}.wav"
        if not video.exists():
            write_video(video, video_s, width=160, height=96)
        if not audio.exists():
            write_audio(audio, audio_s)
        lines.append(f"{item_id},{video.name},{audio.name},{mode},de")
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return manifest


def plan(manifest: Path, settings: Settings) -> Plan:
    """Plan a manifest with the test settings (no probe cache on disk), priced by the
    provider's quotes as `lipdub run` prices it."""
    provider = ProviderClient.from_settings(settings.provider)
    try:
        return plan_manifest(
            manifest,
            media=settings.media,
            price=settings.price,
            inspector=MediaInspector(),
            remote=RemoteProber(
                s3_factory=lambda: make_s3_client(
                    endpoint_url=settings.storage.endpoint_url, region=settings.storage.region
                )
            ),
            quotes=ProviderQuotes.of(provider) if settings.price.quotes else None,
        )
    finally:
        provider.close()


FOUR_CLIPS = [(f"clip-{n}", 1.0 + n * 0.2, 1.2, "cut_off") for n in range(4)]
"""Four clips of 1.0-1.6 s, each priced apart (manifest rows for `write_manifest`)."""


def budget_for_two(manifest: Path, settings: Settings) -> tuple[Plan, list[Decimal], Decimal]:
    """The manifest's plan, its items' prices, and a budget that pays for the first two and
    half the third: a batch started with it and `partial_budget`, one item at a time
    (`provider.max_concurrent` 1), completes two and skips the rest."""
    batch_plan = plan(manifest, settings)
    prices = [item.price_usd for item in batch_plan.items]
    return batch_plan, prices, prices[0] + prices[1] + prices[2] / 2


class Stack:
    """A Celery app for the settings, its batch control, the ledger and the bucket."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        self.redis = redis.Redis.from_url(settings.redis.url, decode_responses=True)
        self.ledger = Ledger(self.redis)
        self.s3 = starter_s3_client(settings)  # the stack starts batches, as the CLI
        self.storage = Storage(self.s3, settings.storage)
        self.storage.ensure_bucket()
        self.control = BatchControl(
            self.ledger,
            starting_dispatcher(self.app, settings, self.redis),  # as `workers.session`
            settings,
            storage=self.storage,
        )

    def wait(self, batch_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
        """Wait (the test waits, not a worker) until the batch is finished; its status."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.control.status(batch_id)
            if status["state"] == "finished":
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"batch not finished after {timeout_s} s: {status}")
            time.sleep(0.1)

    def keys(self, prefix: str) -> list[str]:
        """Object keys in the bucket under a prefix."""
        listing = self.s3.list_objects_v2(Bucket=self.settings.storage.bucket, Prefix=prefix)
        return sorted(obj["Key"] for obj in listing.get("Contents", []))

    def close(self) -> None:
        self.redis.close()


@contextmanager
def in_process_worker(stack: Stack, concurrency: int = 4) -> Iterator[None]:
    """A Celery worker in this process (threads pool): fast, for most scenarios. Celery's
    test worker sends no `worker_ready`, so its pump (which sends the steps whose countdown
    is over) is started here, as a real worker's main process starts it."""
    with start_worker(
        stack.app,
        pool="threads",
        concurrency=concurrency,
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=20,
    ) as worker:
        pump = Pump(stack.app, stack.settings)
        pump.start(sender=worker)
        try:
            yield
        finally:
            pump.stop(sender=worker)


@contextmanager
def worker_processes(
    settings: Settings,
    tmp_path: Path,
    *,
    count: int = 1,
    concurrency: int = 2,
    app: str = "workers.app",
    extra_env: dict[str, str] | None = None,
    name: str = "worker",
    supervised: bool = False,
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Real `celery worker` processes (prefork), configured only through the environment;
    `supervised`: `lipdub worker` instead, which starts its Celery worker again if it dies.

    Each runs in a session of its own, so a test can kill one whole worker (main process and
    pool) with its process group, and nothing is left behind when the test ends.
    """
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LIPDUB_")},
        **settings_env(settings),
        **(extra_env or {}),
        "PYTHONPATH": str(ROOT),
    }
    procs = []
    logs = []
    for n in range(count):
        log = (tmp_path / f"{name}-{n}.log").open("ab")
        logs.append(log)
        hostname = f"--hostname={name}{n}-{os.getpid()}-{time.monotonic_ns()}@%h"
        if supervised:
            command = [
                sys.executable,
                "-m",
                "workers.cli",
                "worker",
                f"--concurrency={concurrency}",
                hostname,
            ]
        else:
            command = [
                sys.executable,
                "-m",
                "celery",
                "-A",
                app,
                "worker",
                "--pool=prefork",
                f"--concurrency={concurrency}",
                "--loglevel=INFO",
                hostname,
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-Q",
                settings.worker.queue,
            ]
        procs.append(
            subprocess.Popen(
                command,
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )  # fmt: skip
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            # Pool processes of a worker that was killed must not outlive the test.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        for log in logs:
            log.close()


def audit(sandbox_url: str) -> list[dict[str, Any]]:
    """The sandbox's audit log of submits."""
    import httpx

    return list(json.loads(httpx.get(f"{sandbox_url}/_sandbox/audit", timeout=5).text))


def accepted_submits(sandbox_url: str) -> list[dict[str, Any]]:
    """Submits that created a task (paid), whatever answer the client got."""
    return [e for e in audit(sandbox_url) if str(e.get("outcome", "")).startswith("accepted")]
