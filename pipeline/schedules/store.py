"""A schedule's state in Redis: fire times handled, pickups, parked items, last outcome.

Every decision two schedulers (or two ticks) could both make is a single atomic Redis
operation here, so exactly one of them acts: `claim_fire` for a fire time, `claim_pickup`
for a manifest, `pop_parked` for the items to wake.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from pipeline import keys
from pipeline.errors import LedgerError

_CLAIM_FIRE = """
local last = tonumber(redis.call('GET', KEYS[1]) or '-1')
if last >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""

# A pickup is free when unknown, or claimed by a run whose lease has lapsed (it died before
# starting the batch). Once `started` or `refused` it is never claimed again.
_CLAIM_PICKUP = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'started' or state == 'refused' then return 0 end
if state == 'claimed' and tonumber(redis.call('HGET', KEYS[1], 'lease_until')) > tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'claimed', 'token', ARGV[1], 'lease_until', ARGV[3],
  'claimed_at', ARGV[2], 'manifest', ARGV[4])
return 1
"""

_POP_PARKED = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if #due > 0 then redis.call('ZREM', KEYS[1], unpack(due)) end
return due
"""


class ScheduleStore:
    """Schedule state. Give it a `redis.Redis` made with `decode_responses=True`."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._claim_fire = client.register_script(_CLAIM_FIRE)
        self._claim_pickup = client.register_script(_CLAIM_PICKUP)
        self._pop_parked = client.register_script(_POP_PARKED)

    # ---------------------------------------------------------------- fire times

    def last_handled_s(self, name: str) -> float | None:
        """The latest fire time handled (run or skipped), None when never."""
        value = self._call(lambda: self.redis.get(keys.schedule(name, "fired")))
        return float(value) if value else None

    def claim_fire(self, name: str, fire_at_s: float) -> bool:
        """True for the one caller that handles this fire time (later ones get False)."""
        return bool(
            self._call(
                lambda: self._claim_fire(keys=[keys.schedule(name, "fired")], args=[fire_at_s])
            )
        )

    def record_outcome(self, name: str, outcome: dict[str, Any]) -> None:
        """Remember what the last run did (for `lipdub schedule list`)."""
        self._call(
            lambda: self.redis.set(keys.schedule(name, "last"), json.dumps(outcome, default=str))
        )

    def last_outcome(self, name: str) -> dict[str, Any] | None:
        """What the last run did, None when it never ran."""
        value = self._call(lambda: self.redis.get(keys.schedule(name, "last")))
        return json.loads(value) if value else None

    # ---------------------------------------------------------------- pickups

    def claim_pickup(
        self, name: str, pickup_id: str, *, token: str, now_s: float, lease_s: float, manifest: str
    ) -> bool:
        """True when this caller may start the manifest (it holds the claim for `lease_s`)."""
        key = keys.schedule(name, f"pickup:{pickup_id}")
        return bool(
            self._call(
                lambda: self._claim_pickup(
                    keys=[key], args=[token, now_s, now_s + lease_s, manifest]
                )
            )
        )

    def pickup(self, name: str, pickup_id: str) -> dict[str, str]:
        """A pickup's record ({} when unknown)."""
        key = keys.schedule(name, f"pickup:{pickup_id}")
        return dict(self._call(lambda: self.redis.hgetall(key)))

    def finish_pickup(self, name: str, pickup_id: str, state: str, fields: dict[str, str]) -> None:
        """Record a pickup as `started` (with its batch id) or `refused` (with why)."""
        key = keys.schedule(name, f"pickup:{pickup_id}")
        mapping: dict[Any, Any] = {**fields, "state": state}
        self._call(lambda: self.redis.hset(key, mapping=mapping))

    # ---------------------------------------------------------------- parked items

    def park(self, name: str, member: str, until_s: float) -> None:
        """An item (`<batch>:<item>`) waits for the window or the next night's budget."""
        key = keys.schedule(name, "parked")

        def write() -> None:
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.zadd(key, {member: until_s})
                pipe.expire(key, keys.SLOT_KEY_TTL_S)
                pipe.execute()

        self._call(write)

    def pop_parked(self, name: str, now_s: float) -> list[str]:
        """Take the items due by `now_s` (each is returned to one caller only)."""
        key = keys.schedule(name, "parked")
        return [str(m) for m in self._call(lambda: self._pop_parked(keys=[key], args=[now_s]))]

    def parked_count(self, name: str) -> int:
        """How many items wait."""
        return int(self._call(lambda: self.redis.zcard(keys.schedule(name, "parked"))))

    # ---------------------------------------------------------------- notices

    def post_notice(self, event: str, schedule: str, text: str) -> bool:
        """Record a notification for `event`; True the first time (False: posted already)."""
        key = keys.notice(event)

        def write() -> bool:
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.hsetnx(key, "text", text)
                pipe.hsetnx(key, "schedule", schedule)
                pipe.expire(key, keys.ONCE_TTL_S)
                first, _, _ = pipe.execute()
                return bool(first)

        return bool(self._call(write))

    def notice(self, event: str) -> dict[str, str]:
        """A notification's record ({} when unknown)."""
        return dict(self._call(lambda: self.redis.hgetall(keys.notice(event))))

    def notice_attempt(self, event: str) -> int:
        """Count a delivery attempt; the count so far."""
        return int(self._call(lambda: self.redis.hincrby(keys.notice(event), "attempts", 1)))

    def notice_reached(self, event: str, targets: list[int]) -> None:
        """Remember which targets (by position) have the notice: they are not sent it again."""
        value = json.dumps(targets)
        self._call(lambda: self.redis.hset(keys.notice(event), "reached", value))

    def notice_sent(self, event: str, outcome: str) -> None:
        """Mark a notification handled (`delivered`, `logged` or `gave up: ...`)."""
        self._call(lambda: self.redis.hset(keys.notice(event), "sent", outcome))

    def _call(self, action: Any) -> Any:
        try:
            return action()
        except redis.RedisError as err:
            raise LedgerError(f"the schedule state (Redis) failed: {type(err).__name__}") from err
