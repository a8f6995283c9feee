"""Steps that wait, kept in Redis until they are due; and the steps being run, by worker.

A step with a countdown (a poll in 30 s, a submit after a 429 cool-down) is not handed to the
broker as a delayed message: Redis's transport gives such a message to one worker at once,
which holds it until its time, and if that worker dies the message comes back only after the
broker's visibility timeout (an hour by default). Instead the step waits in `lipdub:due:<queue>`
(scored by when it is due, on Redis's clock), and each live worker's pump takes what is due
and sends it at once (`workers.pump`). Nothing that waits belongs to a worker, so a dead
worker holds no future steps.

A step being run is written to `lipdub:running` with the worker's name when it starts and
removed when it ends. The worker's heartbeat (`pipeline.heartbeat`) is its lease on all of
them: when the beat lapses, the sweeper sends those steps again at once, instead of waiting
for the broker to give the unacknowledged message back. Every step is safe to run twice.

    >>> decode_member(encode_member(Next("poll", "b1", "i-7", 30.0)))
    Next(step='poll', batch_id='b1', item_id='i-7', countdown_s=0.0, why='', extra=False)
    >>> decode_member(encode_member(Next("finalize", "b1")))
    Next(step='finalize', batch_id='b1', item_id=None, countdown_s=0.0, why='', extra=False)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis

from pipeline import keys
from pipeline.errors import LedgerError, LedgerUnreachable
from pipeline.lua import lua_script
from pipeline.steps import Next

SENDING_LEASE_S = 30.0
"""How long a pump may take to send what it took before another pump takes it again."""
TAKE_AT_MOST = 200
"""Steps one pump takes at a time."""

T = TypeVar("T")


def encode_member(step: Next) -> str:
    """A step as the due set keeps it: which step of what, without its countdown."""
    return json.dumps([step.step, step.batch_id, step.item_id or ""])


def decode_member(member: str) -> Next:
    """The step a due-set member names (to be run now)."""
    name, batch_id, item_id = json.loads(member)
    return Next(str(name), str(batch_id), str(item_id) or None)


class DueSteps:
    """The steps for one queue waiting for their countdown (`lipdub:due:<queue>`) or for
    room in the broker (`lipdub:feed:<queue>`), shared by every worker of that queue (only
    they send them: a step goes to the workers it was meant for)."""

    def __init__(self, client: redis.Redis, queue: str) -> None:
        self.redis = client
        self.queue = queue
        self._due, self._sending = keys.due(queue), keys.due_sending(queue)
        self._feed = keys.feed(queue)
        self._schedule = client.register_script(lua_script("schedule_due.lua"))
        self._take = client.register_script(lua_script("take_due.lua"))
        self._take_fed = client.register_script(lua_script("take_fed.lua"))

    def schedule(self, steps: Sequence[Next]) -> None:
        """Keep each step until its countdown is over (of two copies, the earlier stays)."""
        if not steps:
            return
        args: list[str] = []
        for step in steps:
            args += [encode_member(step), repr(max(0.0, step.countdown_s))]
        _call(lambda: self._schedule(keys=[self._due], args=args))

    def take(self, limit: int = TAKE_AT_MOST) -> list[tuple[str, Next]]:
        """The steps due now (and those another pump took but did not send in time), each
        with its member for `sent`. They stay leased to this pump for `SENDING_LEASE_S`."""
        members = _call(
            lambda: self._take(keys=[self._due, self._sending], args=[limit, SENDING_LEASE_S])
        )
        return [(str(m), decode_member(str(m))) for m in members]

    def sent(self, members: Iterable[str]) -> None:
        """The broker has these now."""
        found = list(members)
        if found:
            _call(lambda: self.redis.zrem(self._sending, *found))

    def waiting(self, steps: Sequence[Next]) -> set[Next]:
        """Which of these steps are kept here (due later, or being sent)."""
        if not steps:
            return set()
        members = [encode_member(s) for s in steps]

        def read() -> list[bool]:
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.zmscore(self._due, members)
                pipe.zmscore(self._sending, members)
                later, sending = pipe.execute()
            return [a is not None or b is not None for a, b in zip(later, sending, strict=True)]

        kept = _call(read)
        return {decode_member(m) for m, held in zip(members, kept, strict=True) if held}

    def next_due_in_s(self) -> float | None:
        """Seconds until the earliest step waiting here is due, on Redis's clock (0 or less:
        due now), or None when none waits: when a pump should look again."""

        def read() -> tuple[list[Any], list[Any]]:
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.zrange(self._due, 0, 0, withscores=True)
                pipe.time()
                earliest, clock = pipe.execute()
            return earliest, clock

        earliest, clock = _call(read)
        if not earliest:
            return None
        return float(earliest[0][1]) - (float(clock[0]) + float(clock[1]) / 1_000_000)

    def count(self) -> int:
        """Steps waiting here."""
        return int(_call(lambda: self.redis.zcard(self._due)))

    def feed(self, steps: Sequence[Next]) -> int:
        """Queue steps to be handed to the broker as it has room (`take_fed`), in order: a
        batch's uploads wait here as ids (~100 bytes each) instead of as broker messages.
        Returns how many steps the feed then holds (0 when `steps` is empty)."""
        if not steps:
            return 0
        members = [encode_member(step) for step in steps]
        return int(_call(lambda: self.redis.rpush(self._feed, *members)))

    def fed_waiting(self) -> int:
        """Steps in the feed."""
        return int(_call(lambda: self.redis.llen(self._feed)))

    def take_fed(self, count: int) -> list[tuple[str, Next]]:
        """Up to `count` steps from the feed's head to send now, each with its member for
        `sent`: leased to this pump for `SENDING_LEASE_S` like due steps, so that a pump that
        dies before sending them leaves them to the next pump (`take`), not to the
        lost-message sweep."""
        if count <= 0:
            return []
        taken: Any = _call(
            lambda: self._take_fed(keys=[self._feed, self._sending], args=[count, SENDING_LEASE_S])
        )
        return [(str(m), decode_member(str(m))) for m in taken or []]


@dataclass(frozen=True)
class Lease:
    """A step a worker took: `worker` holds it since `started_at` (epoch s). `member` is the
    task id of the message it holds (the same in the worker's main process, which records
    the lease, and in the pool process that runs the step and ends it)."""

    worker: str
    step: Next
    started_at: float
    member: str
    queue: str = ""
    """The queue the step came from: only that queue's workers send it again."""
    delivery_tag: str = ""
    """The broker's tag of the message the worker received (its unacknowledged copy's key);
    empty in records an older lipdub wrote."""


class RunningSteps:
    """The steps being run (`lipdub:running`: task id -> since; `lipdub:running:steps`: task
    id -> which worker holds which step)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def start(
        self,
        task_id: str,
        worker: str,
        step: Next,
        now: float,
        queue: str,
        delivery_tag: str = "",
    ) -> None:
        """`worker`, consuming `queue`, holds `step` (its message `task_id`, delivered with
        `delivery_tag`) from now."""
        what = json.dumps(
            [worker, step.step, step.batch_id, step.item_id or "", queue, delivery_tag]
        )

        def write() -> None:
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.zadd(keys.RUNNING, {task_id: now})
                pipe.hset(keys.RUNNING_STEPS, task_id, what)
                pipe.execute()

        _call(write)

    def end(self, task_id: str) -> None:
        """The step of message `task_id` is over (whatever came of it)."""
        self._forget([task_id])

    def all(self) -> list[Lease]:
        """Every step recorded as running."""

        def read() -> tuple[list[Any], list[Any]]:
            entries: list[Any] = list(self.redis.zrange(keys.RUNNING, 0, -1, withscores=True))
            ids = [str(entry[0]) for entry in entries]
            return entries, list(self.redis.hmget(keys.RUNNING_STEPS, ids)) if ids else []

        entries, whats = _call(read)
        leases = []
        for (member, score), what in zip(entries, whats, strict=True):
            if not what:
                continue  # ended between the two reads
            worker, name, batch_id, item_id, queue, *tag = json.loads(str(what))
            step = Next(str(name), str(batch_id), str(item_id) or None)
            leases.append(
                Lease(
                    str(worker),
                    step,
                    float(score),
                    str(member),
                    str(queue),
                    str(tag[0]) if tag else "",
                )
            )
        return leases

    def claim(self, lease: Lease) -> bool:
        """Remove a dead worker's entry; True for the one caller that removed it (that one
        sends its step again)."""
        removed = _call(lambda: self.redis.zrem(keys.RUNNING, lease.member))
        _call(lambda: self.redis.hdel(keys.RUNNING_STEPS, lease.member))
        return bool(removed)

    def drop(self, leases: Iterable[Lease]) -> None:
        """Forget these entries (they cannot still be running)."""
        self._forget([lease.member for lease in leases])

    def _forget(self, task_ids: list[str]) -> None:
        if not task_ids:
            return

        def write() -> None:
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.zrem(keys.RUNNING, *task_ids)
                pipe.hdel(keys.RUNNING_STEPS, *task_ids)
                pipe.execute()

        _call(write)


def orphaned(
    leases: Iterable[Lease], alive: set[str], *, now: float, live_s: float, limit_s: float
) -> tuple[list[Lease], list[Lease]]:
    """Split the running entries into those to send again (their worker has not beaten for
    `live_s` since they started: it died with them) and stale ones to drop (older than the
    task time limit `limit_s`: a pool process that was killed, whose worker lives on and whose
    broker message came back by itself).

    >>> leases = [Lease("w1", Next("poll", "b", "i"), 100.0, "m1"),
    ...           Lease("w2", Next("prepare", "b", "j"), 100.0, "m2"),
    ...           Lease("w2", Next("submit", "b", "k"), 195.0, "m3"),
    ...           Lease("w1", Next("prepare", "b", "l"), 0.0, "m4")]
    >>> again, stale = orphaned(leases, {"w1"}, now=200.0, live_s=30.0, limit_s=150.0)
    >>> [lease.member for lease in again], [lease.member for lease in stale]
    (['m2'], ['m4'])
    """
    again, stale = [], []
    for lease in leases:
        if lease.worker not in alive and now - lease.started_at > live_s:
            again.append(lease)
        elif now - lease.started_at > limit_s:
            stale.append(lease)
    return again, stale


def _call(action: Callable[[], T]) -> T:
    try:
        return action()
    except (redis.ConnectionError, redis.TimeoutError) as err:
        raise LedgerUnreachable(f"Redis could not be reached: {type(err).__name__}") from err
    except redis.RedisError as err:
        raise LedgerError(f"Redis failed: {type(err).__name__}: {err}") from err
