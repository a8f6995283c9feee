"""The connections a batch command needs: the ledger, the Celery dispatcher, the bucket."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from pipeline import wiring
from pipeline.batches import BatchControl
from pipeline.due import DueSteps
from pipeline.errors import LedgerError
from pipeline.ledger import Ledger
from pipeline.settings import Settings
from pipeline.storage import Storage
from workers.app import create_app
from workers.tasks import CeleryDispatcher

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def redacted_url(url: str) -> str:
    """`url` without its password, for messages.

    >>> redacted_url("redis://:hunter2@cache:6379/0")
    'redis://:***@cache:6379/0'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


@dataclass
class Session:
    """A connected batch control, for one command: `with Session.connect(settings) as s:`."""

    settings: Settings
    redis: redis.Redis
    ledger: Ledger
    control: BatchControl
    s3: S3Client
    app: Celery

    @classmethod
    def connect(cls, settings: Settings) -> Session:
        """Connect and check that Redis answers (LedgerError saying where to look if not)."""
        client = wiring.redis_client(settings)
        ledger = Ledger(client)
        try:
            ledger.ping()
        except LedgerError as error:
            client.close()
            raise LedgerError(
                f"cannot reach Redis at {redacted_url(settings.redis.url)} ({error.__cause__}). "
                "Start it, or point LIPDUB_REDIS__URL at it."
            ) from None
        app = create_app(settings)
        dispatcher = CeleryDispatcher(
            app, settings.worker.queue, due=DueSteps(client, settings.worker.queue)
        )
        s3 = wiring.starter_s3_client(settings)
        storage = Storage(s3, settings.storage)
        control = BatchControl(
            ledger, dispatcher, settings, stored_report=storage.get_bytes, storage=storage
        )
        return cls(settings, client, ledger, control, s3, app)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def workers_online(self, timeout_s: float = 1.0) -> int:
        """How many workers answer a ping within `timeout_s` (0 when none, or on trouble)."""
        try:
            return len(self.app.control.ping(timeout=timeout_s) or [])
        except (OperationalError, redis.RedisError, OSError):
            return 0  # only a hint for the user: never fail a run on it

    @property
    def storage(self) -> Storage:
        """The bucket."""
        return Storage(self.s3, self.settings.storage)

    def close(self) -> None:
        """Close the Redis connection."""
        self.redis.close()
