"""What an item step needs to run: settings, ledger, gates, bucket, provider, clock.

Built once per worker process from the settings (`Runtime.from_settings`), or by tests from
the real local servers they started. Nothing here is global.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import httpx

from pipeline import wiring
from pipeline.durability import DurableWrites
from pipeline.errors import SettingsError
from pipeline.gates import Gates
from pipeline.ledger import Ledger
from pipeline.processing_time import ProcessingTimes, expected_line
from pipeline.provider.client import ProviderClient
from pipeline.provider.retry import RetryPolicy
from pipeline.schedules.config import ScheduleSpec, load_schedules
from pipeline.settings import Settings
from pipeline.storage import Storage

__all__ = ["Runtime", "schedules_or_none"]

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


log = logging.getLogger("lipdub.runtime")


@dataclass
class Runtime:
    """The clients one worker process shares between its tasks."""

    settings: Settings
    ledger: Ledger
    gates: Gates
    storage: Storage
    provider: ProviderClient
    http: httpx.Client
    """Fetches outputs from the provider's URLs."""
    clock: Callable[[], float] = time.time
    schedules: dict[str, ScheduleSpec] = field(default_factory=dict)
    """The schedules (configs/schedule.yaml): where a scheduled batch's inbox is, whom to notify."""

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        s3: S3Client | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> Runtime:
        """Connect to what the settings name. Provider calls are never retried in-process
        (a worker reschedules instead of sleeping), and the submit POST never at all."""
        client = wiring.redis_client(settings)
        s3_client = s3 or wiring.s3_client(settings)
        lease_s = settings.polling.item_deadline_s + settings.worker.max_countdown_s * 2
        return cls(
            settings=settings,
            ledger=Ledger(client, DurableWrites(client, settings.ledger)),
            gates=Gates(client, settings.redis.url, settings.provider, slot_lease_s=lease_s),
            storage=Storage(s3_client, settings.storage),
            provider=ProviderClient.from_settings(
                settings.provider, transport=transport, retry_policy=RetryPolicy(max_attempts=1)
            ),
            http=httpx.Client(
                timeout=httpx.Timeout(
                    settings.provider.read_timeout_s, connect=settings.provider.connect_timeout_s
                ),
                follow_redirects=True,
                transport=transport,
            ),
            clock=clock,
            schedules=schedules_or_none(settings),
        )

    @cached_property
    def times(self) -> ProcessingTimes:
        """The provider's learned processing times (`pipeline.processing_time`)."""
        return ProcessingTimes(self.ledger.redis, shape=expected_line(self.settings.polling))

    def close(self) -> None:
        """Close network clients."""
        self.provider.close()
        self.http.close()
        self.ledger.redis.close()

    def countdown(self, seconds: float) -> float:
        """A countdown within the broker's visibility timeout (longer waits ask again)."""
        return max(0.0, min(seconds, self.settings.worker.max_countdown_s))


def schedules_or_none(settings: Settings) -> dict[str, ScheduleSpec]:
    """The schedules, or none when their file is invalid: a typo in it must not stop a
    worker's batches. `lipdub beat` and `lipdub schedule` refuse the file and say why."""
    try:
        return load_schedules(settings.schedule.file, settings.schedule.yaml)
    except SettingsError as err:
        log.error("%s; no schedule is used until it is fixed", err)
        return {}
