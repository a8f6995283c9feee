"""Storage faults: the S3 endpoint down for a while, and errors on upload and on collect.

Lipdub and the provider both reach S3 through `FaultyS3Proxy` (presigned URLs point at it),
so an outage is an outage for everyone, as it would be in production.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from tests.chaos.kills import kill_settings
from tests.chaos.s3_proxy import FaultyS3Proxy
from tests.integration.stack import Stack


def storage_settings(proxy: FaultyS3Proxy, retry_for_s: float = 8.0) -> dict[str, dict[str, Any]]:
    """Lipdub's S3 endpoint is the proxy; short countdowns so retries come within seconds.
    `retry_for_s` is how long an item rides out storage trouble: longer than any outage a
    scenario means to survive (back-to-back outages add up), shorter than its test's patience
    where a refusal for good must end in a clear failure."""
    return {
        "storage": {"endpoint_url": proxy.url, "retry_for_s": retry_for_s},
        **kill_settings(),
    }


def outage_when_in_flight(
    stack: Stack, proxy: FaultyS3Proxy, batch_id: str, down_s: float, timeout_s: float = 60.0
) -> dict[str, int]:
    """Take S3 down for `down_s` once items are both uploading and in flight at the provider.

    Returns the batch's counts when the outage began (the proof that it hit a live batch).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        status = stack.control.status(batch_id)
        counts = status["counts"]
        in_flight = sum(counts.get(s, 0) for s in ("submitting", "running", "collecting"))
        if in_flight and counts.get("pending", 0):
            break
        if status["state"] == "finished" or time.monotonic() > deadline:
            raise AssertionError(f"no moment with uploads and predictions at once: {status}")
        time.sleep(0.02)
    proxy.stop()
    time.sleep(down_s)  # the test holds S3 down; no worker sleeps
    proxy.start()
    return dict(counts)


def media_key_of(path: Path) -> str:
    """The content-addressed key lipdub uploads a local file to."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return f"media/sha256/{digest}{path.suffix.lower()}"
