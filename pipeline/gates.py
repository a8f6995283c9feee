"""The account's limits, shared by every worker on every machine through Redis.

- **Starts per minute**: a GCRA from throttled-py (`RedisStore`), burst 1, so starts are spaced
  evenly: `rate_window_s + start_margin_s` divided by `starts_per_minute`. Evenly spaced starts
  satisfy a provider that counts a sliding window, a fixed window or a token bucket alike; the
  margin absorbs network jitter between our decision and the provider's clock. The script
  reads Redis's clock, so workers on machines with skewed clocks still agree.
- **Concurrency slots**: a sorted set of in-flight items with lease ends; an item holds its
  slot from before its POST until its prediction is final. Acquiring is idempotent.
- **Poll rate**: a second GCRA (burst = one second's worth) for result requests.
- **Cool-down**: after a 429 every worker holds off until the Retry-After has passed.

Every gate answers at once with how long to wait; the caller reschedules, never sleeps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis
from throttled import RateLimiterType, Throttled, rate_limiter, store
from throttled.exceptions import BaseThrottledError

from pipeline import keys
from pipeline.ledger import LedgerError
from pipeline.settings import ProviderSettings

_ACQUIRE_SLOT = """
local now = redis.call('TIME')
local now_s = tonumber(now[1]) + tonumber(now[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_s)
local lease_end = now_s + tonumber(ARGV[3])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], lease_end, ARGV[1])
  return {1, 0}
end
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], lease_end, ARGV[1])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
  return {1, 0}
end
return {0, redis.call('ZCARD', KEYS[1])}
"""

_COOL_DOWN = """
local current = redis.call('PTTL', KEYS[1])
local wanted = tonumber(ARGV[1])
if current < wanted then redis.call('SET', KEYS[1], '1', 'PX', wanted) end
return 1
"""


@dataclass(frozen=True)
class GateAnswer:
    """`passed`, or else how long to wait before asking again."""

    passed: bool
    wait_s: float = 0.0


PASSED = GateAnswer(True)


class Gates:
    """The shared limits for one provider account."""

    def __init__(
        self,
        client: redis.Redis,
        redis_url: str,
        provider: ProviderSettings,
        *,
        slot_lease_s: float,
        slot_wait_s: float = 5.0,
    ) -> None:
        self.redis = client
        self.provider = provider
        self.slot_lease_s = slot_lease_s
        self.slot_wait_s = slot_wait_s
        shared = store.RedisStore(server=redis_url)
        window = timedelta(seconds=provider.rate_window_s + provider.start_margin_s)
        self._starts = Throttled(
            key=keys.STARTS_LIMITER,
            using=RateLimiterType.GCRA.value,
            quota=rate_limiter.per_duration(window, limit=provider.starts_per_minute, burst=1),
            store=shared,
        )
        per_second = max(1, round(provider.polls_per_second))
        self._polls = Throttled(
            key=keys.POLLS_LIMITER,
            using=RateLimiterType.GCRA.value,
            quota=rate_limiter.per_duration(
                timedelta(seconds=per_second / provider.polls_per_second),
                limit=per_second,
                burst=per_second,
            ),
            store=shared,
        )
        self._acquire = client.register_script(_ACQUIRE_SLOT)
        self._cool = client.register_script(_COOL_DOWN)

    def take_start(self) -> GateAnswer:
        """Take one start from the per-minute allowance, or learn how long until the next."""
        return self._limit(self._starts)

    def take_poll(self) -> GateAnswer:
        """Take one result request from the shared poll rate."""
        return self._limit(self._polls)

    def acquire_slot(self, member: str) -> GateAnswer:
        """Hold one of the account's concurrency slots for `member` (idempotent)."""
        got, _ = self._run(
            lambda: self._acquire(
                keys=[keys.SLOTS],
                args=[member, self.provider.max_concurrent, self.slot_lease_s, keys.SLOT_KEY_TTL_S],
            )
        )
        return PASSED if int(got) else GateAnswer(False, self.slot_wait_s)

    def release_slot(self, member: str) -> None:
        """Free the member's slot (nothing happens if it holds none)."""
        self._run(lambda: self.redis.zrem(keys.SLOTS, member))

    def in_flight(self) -> int:
        """Slots held now (leases not yet ended)."""
        return int(self._run(lambda: self.redis.zcard(keys.SLOTS)))

    def cool_down(self, seconds: float | None) -> float:
        """Make every worker hold off for `seconds` (the default when None). Returns it."""
        wait_s = seconds if seconds and seconds > 0 else self.provider.cooldown_default_s
        self._run(lambda: self._cool(keys=[keys.COOLDOWN], args=[max(1, int(wait_s * 1000))]))
        return wait_s

    def cooling(self) -> GateAnswer:
        """Whether a cool-down is on, and for how much longer."""
        left_ms = int(self._run(lambda: self.redis.pttl(keys.COOLDOWN)))
        return GateAnswer(False, left_ms / 1000) if left_ms > 0 else PASSED

    def _limit(self, limiter: Throttled) -> GateAnswer:
        result = self._run(lambda: limiter.limit(timeout=-1))
        if not result.limited:
            return PASSED
        return GateAnswer(False, max(0.01, float(result.state.retry_after)))

    def _run(self, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except (redis.RedisError, BaseThrottledError) as err:
            raise LedgerError(f"the shared gates (Redis) failed: {type(err).__name__}") from err
