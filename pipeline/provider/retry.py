"""Which provider calls are retried, and after how long. Small pure functions.

Layering (decided here, once): the HTTP client retries only *safe* calls (GETs, the list
call) a bounded number of times within one call; it never retries the submit POST. Task
level retries (Celery countdowns) belong to workers/ and reuse `backoff_delay_s`.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass

from pipeline.backoff import Backoff

RETRYABLE_STATUS_CODES = frozenset({408, 429, 500, 502, 503, 504})
"""HTTP statuses a safe call may be repeated after (the official SDK's set, plus 408)."""

MAX_RETRY_AFTER_S = 300.0
"""A Retry-After larger than this is capped: a broken header must not park a batch for days."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds for retrying safe calls. `RetryPolicy(max_attempts=4)` = first try + 3 retries.

    Delays in seconds: `base_delay_s * 2**(attempt-1)` capped at `max_delay_s`, with full
    jitter down to half; a server's Retry-After wins when it is larger, up to MAX_RETRY_AFTER_S.
    """

    max_attempts: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0


def parse_retry_after_s(value: str | None, *, now_s: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date.

    Returns None when absent or unparseable, and never less than 0.

    >>> parse_retry_after_s("7")
    7.0
    >>> parse_retry_after_s("soon") is None
    True
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        current = time.time() if now_s is None else now_s
        seconds = when.timestamp() - current
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def backoff_delay_s(
    attempt: int,
    *,
    base_delay_s: float,
    max_delay_s: float,
    rng: random.Random | None = None,
) -> float:
    """Capped exponential backoff with jitter, in seconds, for the retry after try `attempt`
    (`pipeline.backoff.Backoff` with half the delay jittered).

    `attempt` is 1 for the first retry. The result lies in [cap/2, cap] where
    cap = min(max_delay_s, base_delay_s * 2**(attempt-1)).

    >>> backoff_delay_s(1, base_delay_s=1.0, max_delay_s=10.0, rng=random.Random(0)) <= 1.0
    True
    """
    return Backoff(base_delay_s, max(max_delay_s, base_delay_s), jitter=0.5).delay_s(attempt, rng)


def retry_delay_s(
    attempt: int,
    policy: RetryPolicy,
    *,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """The delay before retry `attempt` (1-based): the server's Retry-After when it sent one
    (already capped by `parse_retry_after_s`), else capped exponential backoff with jitter.

    >>> retry_delay_s(1, RetryPolicy(), retry_after_s=3.0)
    3.0
    """
    if retry_after_s is not None:
        return min(retry_after_s, MAX_RETRY_AFTER_S)
    return backoff_delay_s(
        attempt, base_delay_s=policy.base_delay_s, max_delay_s=policy.max_delay_s, rng=rng
    )


def should_retry_status(status_code: int) -> bool:
    """True when a safe call that got this HTTP status may be repeated."""
    return status_code in RETRYABLE_STATUS_CODES


def should_retry(attempt: int, policy: RetryPolicy, *, safe: bool, retryable: bool) -> bool:
    """Decide whether to try again after try number `attempt` (1-based) failed.

    Unsafe calls (the submit POST) are never retried, whatever failed.
    """
    return safe and retryable and attempt < policy.max_attempts
