"""The benchmarks' stack: the demo's (redis-server, moto's S3, the sandbox, `lipdub worker`
processes), with the sandbox's account limits and lipdub's settings chosen per scenario."""

from __future__ import annotations

import contextlib
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.media import MediaInspector
from pipeline.planning import Plan, plan_manifest
from pipeline.samples import write_audio, write_video
from pipeline.sandbox.config import SandboxConfig
from pipeline.settings import Settings
from workers.demo import DEMO_API_KEY, DemoStack
from workers.session import Session


def bench_stack(
    workdir: Path,
    sandbox: dict[str, Any],
    *,
    provider: dict[str, Any],
    polling: dict[str, Any],
    workers: int = 2,
    concurrency: int = 4,
    appendfsync: str = "always",
    ledger: dict[str, Any] | None = None,
    tuned: bool = True,
    webhooks_port: int | None = None,
    batch: dict[str, Any] | None = None,
) -> DemoStack:
    """A stack whose sandbox has `sandbox` settings and whose lipdub has `provider`/`polling`
    (and `ledger`, `batch`), on a Redis with `appendfsync`. `tuned=False`: lipdub's defaults except
    where the stack is and the given `provider`/`polling` (an account's limits, as a user sets
    them); else shorter cool-downs, countdowns and deadlines for the bench's quick runs.
    With `webhooks_port`, `lipdub webhooks` runs there and the provider is pointed at it."""

    def settings(folder: Path, *, redis_url: str, s3_url: str, sandbox_url: str) -> Settings:
        hook = {} if webhooks_port is None else {"webhook_url": webhook_url(webhooks_port)}
        if not tuned:
            return Settings(
                provider={"base_url": sandbox_url, "api_key": DEMO_API_KEY, **hook, **provider},  # type: ignore[arg-type]
                storage={"bucket": "lipdub-bench", "endpoint_url": s3_url},  # type: ignore[arg-type]
                redis={"url": redis_url},  # type: ignore[arg-type]
                polling=polling,  # type: ignore[arg-type]
                media={"cache_dir": folder / "cache"},  # type: ignore[arg-type]
                batch=batch or {},  # type: ignore[arg-type]
            )
        return Settings(
            provider={  # type: ignore[arg-type]
                "base_url": sandbox_url,
                "api_key": DEMO_API_KEY,
                "submit_timeout_s": 30.0,
                "cooldown_default_s": 1.0,
                **hook,
                **provider,
            },
            storage={"bucket": "lipdub-bench", "endpoint_url": s3_url},  # type: ignore[arg-type]
            redis={"url": redis_url},  # type: ignore[arg-type]
            polling={"item_deadline_s": 1800.0, "reconcile_grace_s": 2.0, **polling},  # type: ignore[arg-type]
            worker={  # type: ignore[arg-type]
                "task_time_limit_s": 300,
                "task_soft_time_limit_s": 280,
                "max_countdown_s": 60.0,
                "visibility_timeout_s": 900,
                "retry_delay_s": 1.0,
            },
            media={"cache_dir": folder / "cache"},  # type: ignore[arg-type]
            ledger=ledger or {},  # type: ignore[arg-type]
            batch=batch or {},  # type: ignore[arg-type]
        )

    config = SandboxConfig(
        audit_log=workdir / "sandbox-audit.jsonl", workdir=workdir / "sandbox", **sandbox
    )
    return DemoStack(
        workdir,
        workers=workers,
        concurrency=concurrency,
        sandbox_config=config,
        settings_factory=settings,
        appendfsync=appendfsync,
        webhooks_port=webhooks_port,
    )


@contextlib.contextmanager
def connected(stack: DemoStack) -> Iterator[Session]:
    """A session on a started stack: its bucket made and its workers answering."""
    assert stack.settings is not None
    session = Session.connect(stack.settings)
    try:
        session.storage.ensure_bucket()
        wait_for_workers(session, stack.worker_count)
        yield session
    finally:
        session.close()


def plan_of(manifest: Path, settings: Settings) -> Plan:
    """The manifest planned as `lipdub run` plans it (media probed, prices quoted)."""
    return plan_manifest(
        manifest, media=settings.media, price=settings.price, inspector=MediaInspector()
    )


def webhook_url(port: int) -> str:
    """Where `lipdub webhooks` on this machine's `port` receives deliveries."""
    return f"http://127.0.0.1:{port}/webhooks"


def write_catalog(folder: Path, items: int, *, video_s: float = 1.0) -> tuple[Path, list[float]]:
    """`items` distinct pairs: ten videos (1.0 s to 1.9 s), one audio each. Returns the CSV
    and each row's video seconds."""
    folder.mkdir(parents=True, exist_ok=True)
    durations = [round(video_s + (n % 10) * 0.1, 2) for n in range(items)]
    for n in range(min(items, 10)):
        write_video(folder / f"v{n}.mp4", durations[n], width=96, height=64)
    rows = ["id,video,audio,sync_mode"]
    for n in range(items):
        write_audio(folder / f"a{n}.wav", durations[n] + 0.2, frequency_hz=200 + n)
        rows.append(f"item{n:04d},v{n % 10}.mp4,a{n}.wav,cut_off")
    manifest = folder / "catalog.csv"
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return manifest, durations


def distinct_copies(base: bytes, kind: str, n: int) -> bytes:
    """`base` made distinct by a trailing chunk the format ignores (MP4 `free`, WAV `junk`)."""
    tag = n.to_bytes(8, "big")
    if kind == "mp4":
        return base + struct.pack(">I4s", 16, b"free") + tag
    wav = bytearray(base + b"junk" + struct.pack("<I", 8) + tag)
    wav[4:8] = struct.pack("<I", len(wav) - 8)
    return bytes(wav)


def wait_finished(session: Session, batch_id: str, timeout_s: float) -> dict[str, Any]:
    """Wait (the benchmark waits, not a worker) until the batch is finished."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = session.control.status(batch_id)
        if status["state"] == "finished":
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"batch {batch_id} not finished after {timeout_s} s: {status}")
        time.sleep(0.25)


def wait_for_workers(session: Session, count: int, timeout_s: float = 60.0) -> None:
    """Wait until `count` workers answer a ping: a run's clock starts with workers ready."""
    deadline = time.monotonic() + timeout_s
    while session.workers_online(timeout_s=1.0) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {count} workers answered within {timeout_s} s")
