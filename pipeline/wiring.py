"""One place that builds lipdub's clients from its settings.

Every entry point (a worker's runtime, a CLI session, the scheduler, the Python API) gets its
Redis client, its S3 client, its provider client and its planner from here, so that each is
built one way: Redis with decoded responses and one connection pool per process, S3 typed,
the provider with the settings' timeouts, the planner with the probe cache, the remote
prober and (when `price.quotes`) the provider's quotes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import redis

from pipeline.settings import Settings
from pipeline.sync_modes import SyncMode

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from pipeline.planning import Plan
    from pipeline.provider.client import ProviderClient
    from pipeline.remote import RemoteProber

# The builders import what they build when called: a command that only reads the ledger
# (`lipdub status`) then starts without the media prober (PyAV), boto3 or the planner.

REDIS_CONNECT_TIMEOUT_S = 5.0


def redis_client(settings: Settings) -> redis.Redis:
    """The ledger's Redis (strings in, strings out; one pool for the process)."""
    return redis.Redis.from_url(
        settings.redis.url, decode_responses=True, socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S
    )


def s3_client(settings: Settings) -> S3Client:
    """The bucket's S3 client (credentials from the environment, as boto3 finds them)."""
    from pipeline.remote import make_s3_client

    return make_s3_client(
        endpoint_url=settings.storage.endpoint_url, region=settings.storage.region
    )


STARTER_S3_ATTEMPTS = 10
"""Tries of each S3 call by the process that starts batches and uploads their files (the CLI,
the Python API): botocore's backoff rides out about a minute of throttling or 5xx before a
file fails its items. Workers keep botocore's default: their steps reschedule instead."""


def starter_s3_client(settings: Settings) -> S3Client:
    """The S3 client of a process that starts batches (it may wait: it is nobody's worker)."""
    from pipeline.remote import make_s3_client

    return make_s3_client(
        endpoint_url=settings.storage.endpoint_url,
        region=settings.storage.region,
        max_attempts=STARTER_S3_ATTEMPTS,
    )


def remote_prober(settings: Settings) -> RemoteProber:
    """Reads remote inputs (`s3://`, `https://`) while planning."""
    from pipeline.remote import RemoteProber

    return RemoteProber(
        s3_factory=lambda: s3_client(settings),
        timeout_s=settings.media.probe_timeout_s,
        max_bytes=settings.media.max_file_size_bytes,
    )


def plan(
    settings: Settings,
    manifest: Path,
    *,
    provider: ProviderClient | None,
    sync_mode_override: SyncMode | None = None,
    default_sync_mode: SyncMode | None = None,
    base_dir: Path | str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Plan:
    """Plan a manifest as every entry point plans it: the probe cache on disk, the remote
    prober, and the provider's quotes when there is a provider and `price.quotes` is on
    (ManifestError listing every bad row)."""
    from pipeline.media import MediaInspector, ProbeCache
    from pipeline.planning import plan_manifest
    from pipeline.quotes import ProviderQuotes

    return plan_manifest(
        manifest,
        media=settings.media,
        price=settings.price,
        default_sync_mode=default_sync_mode or settings.batch.default_sync_mode,
        sync_mode_override=sync_mode_override,
        inspector=MediaInspector(ProbeCache(settings.media.cache_path / "probe-cache.sqlite3")),
        remote=remote_prober(settings),
        base_dir=base_dir,
        progress=progress,
        quotes=ProviderQuotes.of(provider) if provider and settings.price.quotes else None,
    )
