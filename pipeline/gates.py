"""The account's limits, shared by every worker on every machine through Redis.

- **Starts per minute**: start *reservations* in a sorted-set log. An item holding a slot asks
  once and is told its own start time; it comes back exactly then, so a thousand waiting items
  cost a thousand asks, not a thousand asks per start. Pacing `window` (the default) allows
  `starts_per_minute` starts in any `rate_window_s + start_margin_s`: right for a provider
  counting a sliding or fixed window, or a token bucket of that size. Pacing `even` spaces
  starts by that window divided by `starts_per_minute`: also right for a bucket that holds a
  single start. A start that passes is recorded among the starts *made*, and with window
  pacing recorded again when its POST has its answer (`anchor_start`): the provider counted it
  by then, so the next window is timed from a moment no earlier than the provider's own
  count, however long the POST took or however late the worker sent it. Whether a start may
  go is decided by counting the starts made, not by its place in the plan: an answer can move
  a start past reservations planned after it (POSTs in flight together), and a start that
  took its place in the plan by rank would then share the provider's window with one more
  start than it allows. The margin (none by default) only covers a start whose answer could
  not be recorded. The scripts read Redis's clock, so workers with skewed clocks still agree.
- **Concurrency slots**: a sorted set of in-flight items with lease ends; an item holds its
  slot from before its POST until its prediction is final. There are `in_flight_max` of them:
  the account's `max_concurrent` and `queue_ahead` more, which the provider queues and starts
  as ours end. Acquiring is idempotent, and says how many slots are held with this one (more
  than `max_concurrent`: this prediction will wait in the provider's queue). An item that
  finds none waits in line, by its place (`pipeline.send_order.place_in_line`: its batch's
  start, then the batch's send order); whoever frees a slot wakes the first in line.
- **The turn**: the provider starts its queue in the order the POSTs arrived, so the POSTs
  that go to its queue (beyond `max_concurrent`) are sent one at a time, first in line
  first: the one sending holds the turn (a short lease, `TURN_LEASE_S`, so a dead worker
  holds nobody up for long) and gives it up when its submit step ends, waking the next.
  Without it, slots freed together (the account's watch sees ends a second at a time) woke
  their waiters together, and whichever POST arrived first went first: a long clip could
  start last and end the batch alone. POSTs the provider starts at once need no order and
  go together; so do the POSTs to its queue while more than `ORDERED_QUEUE_PLACES` of its
  places are free (a large account, or ends coming faster than one POST at a time follows:
  filled one at a time, the queue would run dry).
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
from pipeline.errors import LedgerError
from pipeline.lua import lua_script
from pipeline.settings import ProviderSettings

# KEYS: the plan, the starts made. ARGV: reservation name, starts allowed per window, window s.
# Returns [1 when passed, else 0; the seconds until the reserved start as text (Lua numbers
# would be truncated)].


@dataclass(frozen=True)
class GateAnswer:
    """`passed`, or else how long to wait before asking again."""

    passed: bool
    wait_s: float = 0.0
    held: int = 0
    """For a slot: how many are held with this one (0: none was taken)."""
    wake: tuple[str, ...] = ()
    """For a slot: waiters ahead in line, to wake now (this one waits behind them)."""


PASSED = GateAnswer(True)
ORDERED_QUEUE_PLACES = 4
"""While at most this many places are free in the provider's queue (lipdub's queue ahead),
they are filled one POST at a time, in line order (the turn); with more free, together. One
at a time fills about four a second against the sandbox (a POST and its answer, 0.17-0.23 s,
and the hop to the next submit), so an account whose ends come faster than that (many
slots, short items) would see its queue run dry; a small account (the bench's four slots
and four queued) is always in order."""
TURN_LEASE_S = 15.0
"""How long the turn (see above) outlives a submit that took it and never gave it up (a
worker killed mid-step): the POSTs to the provider's queue then go on, in order, from the
next freed slot. A live submit gives it up within its POST's answer, well inside this; one
slower than this lets the next in line post meanwhile (only their order is at stake)."""


class Gates:
    """The shared limits for one provider account."""

    def __init__(
        self,
        client: redis.Redis,
        redis_url: str,
        provider: ProviderSettings,
        *,
        slot_lease_s: float,
        slot_recheck_s: float = 300.0,
        turn_lease_s: float = TURN_LEASE_S,
        ordered_queue_places: int = ORDERED_QUEUE_PLACES,
    ) -> None:
        self.redis = client
        self.provider = provider
        self.slot_lease_s = slot_lease_s
        self.slot_recheck_s = slot_recheck_s
        self.turn_lease_ms = max(1, round(turn_lease_s * 1000))
        self.ordered_queue_places = ordered_queue_places
        shared = store.RedisStore(server=redis_url)
        window_s = provider.start_window_s
        if provider.start_pacing == "even":
            self._starts_allowed, self._start_window_s = 1, window_s / provider.starts_per_minute
        else:
            self._starts_allowed, self._start_window_s = provider.starts_per_minute, window_s
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
        self._acquire = client.register_script(lua_script("acquire_slot.lua"))
        self._release = client.register_script(lua_script("release_slot.lua"))
        self._reserve = client.register_script(lua_script("reserve_start.lua"))
        self._anchor = client.register_script(lua_script("anchor_start.lua"))
        self._cool = client.register_script(lua_script("cool_down.lua"))

    def reserve_start(self, reservation: str) -> GateAnswer:
        """Reserve a start (idempotent per `reservation` name): passed when it may go now
        (it is then recorded as made), else how long until it is due. Name one reservation
        per submit attempt."""
        passed, wait_s = self._run(
            lambda: self._reserve(
                keys=[keys.START_LOG, keys.STARTS_MADE],
                args=[reservation, self._starts_allowed, self._start_window_s],
            )
        )
        return PASSED if int(passed) else GateAnswer(False, float(wait_s))

    def anchor_start(self, reservation: str) -> bool:
        """Record the `reservation`'s start at now: its POST has been answered, or given up,
        so the provider counted it no later than this. Later starts keep a window from here
        (`reserve_start` counts the starts made when each is due). Window pacing only: even
        pacing spaces planned starts (anchoring each at its answer would make every start
        wait for the POST before it). True when the start moved later."""
        if self.provider.start_pacing != "window":
            return False
        return bool(
            self._run(
                lambda: self._anchor(keys=[keys.START_LOG, keys.STARTS_MADE], args=[reservation])
            )
        )

    def take_poll(self) -> GateAnswer:
        """Take one result request from the shared poll rate."""
        return self._limit(self._polls)

    def acquire_slot(
        self, member: str, limit: int | None = None, place: float | None = None
    ) -> GateAnswer:
        """Hold one of the account's concurrency slots for `member` (idempotent), of `limit`
        (by default `in_flight_max`: the account's concurrency and the queue ahead).

        A slot the provider starts at once (fewer than `max_concurrent` held) is taken
        straight away, and so is one of many free in its queue (more than
        `ordered_queue_places`). One that goes to the provider's queue is taken only with the turn
        (see the module's docstring), and only by the first in line: a waiter with an
        earlier `place` (by default now) is woken instead (`wake`) and this one waits
        behind it. When the member does not pass it waits in line: `release_slot` will
        name it. `wait_s` is only the safety net (a wake-up lost with a crashed worker).
        Passed, `held` says how many slots are held with this one."""
        held, wake = self._run(
            lambda: self._acquire(
                keys=[keys.SLOTS, keys.SLOT_WAITERS, keys.SLOT_TURN],
                args=[
                    member,
                    limit or self.provider.in_flight_max,
                    self.slot_lease_s,
                    keys.SLOT_KEY_TTL_S,
                    self.provider.max_concurrent,
                    "" if place is None else repr(place),
                    self.turn_lease_ms,
                    self.ordered_queue_places,
                ],
            )
        )
        if int(held):
            return GateAnswer(True, held=int(held))
        return GateAnswer(False, self.slot_recheck_s, wake=(str(wake),) if wake else ())

    def release_slot(
        self, member: str = "", limit: int | None = None, *, turn_of: str = ""
    ) -> list[str]:
        """Free the member's slot (if it holds one) and the turn (if `turn_of` holds it);
        the waiters to wake, first in line first: as many as the provider would start at
        once, and one more for its queue when a slot of `limit` (as `acquire_slot`) is free
        and nobody holds the turn (that one takes it); as many as are free when more than
        `ordered_queue_places` of its queue's are. With no member, only wakes."""
        woken = self._run(
            lambda: self._release(
                keys=[keys.SLOTS, keys.SLOT_WAITERS, keys.SLOT_TURN],
                args=[
                    member,
                    limit or self.provider.in_flight_max,
                    self.provider.max_concurrent,
                    self.turn_lease_ms,
                    turn_of,
                    self.ordered_queue_places,
                ],
            )
        )
        return [str(name) for name in woken]

    def holders(self) -> list[str]:
        """The members holding a slot now: every prediction of the account being followed."""
        return [str(m) for m in self._run(lambda: self.redis.zrange(keys.SLOTS, 0, -1))]

    def in_flight(self) -> int:
        """Slots held now (leases not yet ended)."""
        return int(self._run(lambda: self.redis.zcard(keys.SLOTS)))

    def cool_down(self, seconds: float | None) -> float:
        """Make every worker hold off for `seconds` (the default when None). Returns it."""
        wait_s = seconds if seconds and seconds > 0 else self.provider.cooldown_default_s
        self._run(
            lambda: self._cool(
                keys=[keys.COOLDOWN, keys.RATE_LIMITED], args=[max(1, int(wait_s * 1000))]
            )
        )
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
