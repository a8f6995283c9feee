"""One backoff, and the named policies every retry in lipdub uses.

A retry waits `base_s * factor**(attempt - 1)`, capped at `cap_s`, less up to `jitter` of it
at random (so that many items failing together do not come back together). Workers never
sleep on it: the delay becomes a Celery countdown (capped again by `Runtime.countdown`);
only the provider client's in-call retries of safe calls wait in-process, outside tasks.

    >>> STORAGE.delay_s(1), STORAGE.delay_s(3)
    (5.0, 20.0)
    >>> [TASK_INFRA.delay_s(n) for n in (1, 2, 5, 9)]
    [5.0, 10.0, 80.0, 120.0]
"""

from __future__ import annotations

import random
from dataclasses import dataclass

MAX_EXPONENT = 60
"""Past this the delay is the cap anyway; bounding it keeps the power finite."""


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff: `delay_s(attempt)` for attempt 1, 2, ..."""

    base_s: float
    cap_s: float
    factor: float = 2.0
    jitter: float = 0.0
    """The share of each delay that may be taken off at random (0: exact, 0.5: half)."""

    def __post_init__(self) -> None:
        if self.base_s < 0 or self.cap_s < self.base_s or self.factor < 1:
            raise ValueError(f"not a backoff: {self}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter is a share of the delay, 0 to 1: {self.jitter}")

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry `attempt` (1 for the first retry).

        >>> Backoff(1.0, 8.0).delay_s(4), Backoff(1.0, 8.0).delay_s(9)
        (8.0, 8.0)
        >>> 2.5 <= Backoff(1.0, 8.0, jitter=0.5).delay_s(3, random.Random(1)) <= 4.0
        True
        """
        if attempt < 1:
            raise ValueError(f"attempt counts from 1, got {attempt}")
        delay = min(self.cap_s, self.base_s * self.factor ** min(attempt - 1, MAX_EXPONENT))
        if self.jitter:
            draw = rng.random() if rng is not None else random.random()
            delay -= delay * self.jitter * draw
        return delay


STORAGE = Backoff(base_s=5.0, cap_s=5.0 * 2**10)
"""S3 (or the provider's fetch of our inputs) failing: bounded by `storage.retry_for_s`, not
by a count; the countdown cap keeps each wait short."""
RECONCILE_LIST = Backoff(base_s=2.0, cap_s=60.0)
"""The provider's list call failing while a lost submit is reconciled."""
NOTICE = Backoff(base_s=5.0, cap_s=5.0 * 2**4)
"""A schedule's notice (Slack, a webhook) not delivered."""
TASK_INFRA = Backoff(base_s=5.0, cap_s=120.0)
"""A step that met Redis or S3 trouble, run again by Celery's retry."""
