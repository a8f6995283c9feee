"""The connections a batch command or the Python API needs: the ledger, the Celery dispatcher, the
bucket (here, not under `workers.cli`, so that the Python API loads no command line)."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import redis

from pipeline import wiring
from pipeline.errors import LedgerError
from pipeline.ledger import Ledger
from pipeline.settings import Settings

if TYPE_CHECKING:
    from celery import Celery
    from mypy_boto3_s3 import S3Client

    from pipeline.batches import BatchControl
    from pipeline.storage import Storage


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


class Session:
    """A connected batch control, for one command: `with Session.connect(settings) as s:`.

    Redis is connected and checked at once; the Celery app, the bucket's client and the batch
    control are built when a command first uses them, so a command that only reads the
    ledger (`lipdub status`, `lipdub batches`) starts without importing Celery or boto3.
    """

    def __init__(self, settings: Settings, client: redis.Redis, ledger: Ledger) -> None:
        self.settings = settings
        self.redis = client
        self.ledger = ledger

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
        return cls(settings, client, ledger)

    @cached_property
    def app(self) -> Celery:
        """The Celery app the workers serve (for sending steps and pinging workers)."""
        from workers.app import create_app

        return create_app(self.settings)

    @cached_property
    def s3(self) -> S3Client:
        """The bucket's client, with the retries of a process that starts batches."""
        return wiring.starter_s3_client(self.settings)

    @cached_property
    def control(self) -> BatchControl:
        """Start, report, cancel and retry batches."""
        from pipeline.batches import BatchControl
        from workers.tasks import starting_dispatcher

        return BatchControl(
            self.ledger,
            starting_dispatcher(self.app, self.settings, self.redis),
            self.settings,
            stored_report=self.storage.get_bytes,
            storage=self.storage,
        )

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def workers_online(self, timeout_s: float = 1.0) -> int:
        """How many workers answer a ping within `timeout_s` (0 when none, or on trouble)."""
        from kombu.exceptions import OperationalError

        try:
            return len(self.app.control.ping(timeout=timeout_s) or [])
        except (OperationalError, redis.RedisError, OSError):
            return 0  # only a hint for the user: never fail a run on it

    @cached_property
    def storage(self) -> Storage:
        """The bucket."""
        from pipeline.storage import Storage

        return Storage(self.s3, self.settings.storage)

    def close(self) -> None:
        """Close the Redis connection."""
        self.redis.close()
