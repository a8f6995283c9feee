"""The scheduler's lock: of any number of beat processes, one acts; the others stand by.

The holder renews it every tick; a holder that stops (killed, partitioned from Redis) loses
it after `ttl_s`, and the next standby to ask takes over. Acting is also safe without it:
every fire time and every manifest is claimed atomically (`ScheduleStore`), so two active
schedulers would still start each batch once. The lock keeps the second one quiet.
"""

from __future__ import annotations

import contextlib
import secrets

import redis

from pipeline import keys
from pipeline.errors import LedgerError

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class SchedulerLock:
    """`hold()` takes or renews the lock; True while this process is the active scheduler."""

    def __init__(self, client: redis.Redis, ttl_s: float, key: str = keys.BEAT_LOCK) -> None:
        self.key = key
        self.ttl_ms = int(ttl_s * 1000)
        self.token = secrets.token_hex(12)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def hold(self) -> bool:
        """Take the lock if it is free, renew it if it is ours; False when another holds it."""
        try:
            return bool(self._renew(keys=[self.key], args=[self.token, self.ttl_ms]))
        except redis.RedisError as err:
            raise LedgerError(f"the scheduler lock (Redis) failed: {type(err).__name__}") from err

    def release(self) -> None:
        """Let a standby take over at once (a clean shutdown)."""
        with contextlib.suppress(redis.RedisError):  # it lapses by itself
            self._release(keys=[self.key], args=[self.token])
