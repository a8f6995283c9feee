"""The ledger: Redis as the system of record for batches and items.

Every state change is one Lua script (compare the state, write the fields, keep the set of
finished items) so two workers handling the same item can never both win a transition: the
loser sees the state it lost to and does nothing. Values are stored as strings; money is
kept as integer micro-USD so reservations can be added atomically.

    >>> from decimal import Decimal
    >>> to_micros(Decimal("0.134"))
    134000
    >>> from_micros(134000)
    Decimal('0.134')
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

import redis

from pipeline import keys
from pipeline.durability import DurableWrites
from pipeline.errors import DurabilityError, LedgerError
from pipeline.lua import lua_script
from pipeline.records import encode_value
from pipeline.states import FINAL_STATES, BatchState, ItemState
from pipeline.steps import BATCH_STEPS, Next

if TYPE_CHECKING:
    from pipeline.steps import Next


MICROS_PER_USD = 1_000_000


def to_micros(amount_usd: Decimal) -> int:
    """USD to integer micro-USD, rounded half up."""
    return int((amount_usd * MICROS_PER_USD).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def from_micros(micros: int) -> Decimal:
    """Integer micro-USD to USD."""
    return (Decimal(micros) / MICROS_PER_USD).normalize()


@dataclass(frozen=True)
class Transition:
    """What a state change did: `ok` when it happened, else `state` is the item's state."""

    ok: bool
    state: str
    done: int = 0
    total: int = 0

    @property
    def batch_complete(self) -> bool:
        """True when this change left every item of the batch in a final state."""
        return self.ok and self.total > 0 and self.done >= self.total


@dataclass(frozen=True)
class Claim:
    """Who pays for a pair: `own` (this item), `reuse` (done: copy `output_key`) or `wait`."""

    kind: str
    owner: str
    output_key: str = ""


class Ledger:
    """Batches and items in Redis. Give it a `redis.Redis` made with `decode_responses=True`,
    and `durable` (the settings' guarantee) where submits are made: without it a durable
    transition is an ordinary one (unit tests, the CLI's reads)."""

    def __init__(self, client: redis.Redis, durable: DurableWrites | None = None) -> None:
        self.redis = client
        self.durable = durable
        self._transition = client.register_script(lua_script("transition.lua"))
        self._reserve = client.register_script(lua_script("reserve.lua"))
        self._settle = client.register_script(lua_script("settle.lua"))
        self._unreserve = client.register_script(lua_script("unreserve.lua"))
        self._claim = client.register_script(lua_script("claim.lua"))
        self._release_claim = client.register_script(lua_script("release_claim.lua"))

    def ping(self) -> None:
        """Check that Redis answers (LedgerError if not)."""
        self._call(self.redis.ping)

    # ------------------------------------------------------------ batches

    def create_batch(
        self,
        batch_id: str,
        record: Mapping[str, object],
        items: list[dict[str, object]],
        *,
        budget_usd: Decimal | None,
    ) -> bool:
        """Write a batch and its items (state pending) in one transaction. False (and nothing
        written) when a batch with this id exists already: a start retried after a crash."""
        try:
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.watch(keys.batch(batch_id))  # type: ignore[no-untyped-call]
                if pipe.exists(keys.batch(batch_id)):
                    return False
                pipe.multi()
                pipe.hset(
                    keys.batch(batch_id),
                    mapping={
                        **{k: encode_value(v) for k, v in record.items()},
                        "id": batch_id,
                        "state": BatchState.RUNNING.value,
                        "item_count": str(len(items)),
                        "budget_scope": batch_id,
                    },
                )
                budget: dict[Any, Any] = {"reserved_micros": "0", "spent_micros": "0"}
                if budget_usd is not None:
                    budget["limit_micros"] = str(to_micros(budget_usd))
                pipe.hset(keys.budget(batch_id), mapping=budget)
                if items:
                    pipe.rpush(keys.batch_items(batch_id), *[str(i["id"]) for i in items])
                for item in items:
                    fields: dict[Any, Any] = {k: encode_value(v) for k, v in item.items()}
                    fields["state"] = ItemState.PENDING.value
                    pipe.hset(keys.item(batch_id, str(item["id"])), mapping=fields)
                pipe.zadd(keys.BATCH_INDEX, {batch_id: float(str(record.get("created_at", 0)))})
                pipe.execute()
                return True
        except redis.WatchError:
            return False
        except redis.RedisError as err:
            raise LedgerError(f"could not write batch {batch_id}: {type(err).__name__}") from err

    def batch(self, batch_id: str) -> dict[str, str]:
        """The batch record ({} when there is none)."""
        return dict(self._call(lambda: self.redis.hgetall(keys.batch(batch_id))))

    def update_batch(self, batch_id: str, fields: Mapping[str, object]) -> None:
        """Set fields of the batch record."""
        self._call(
            lambda: self.redis.hset(
                keys.batch(batch_id), mapping={k: encode_value(v) for k, v in fields.items()}
            )
        )

    def item_ids(self, batch_id: str) -> list[str]:
        """The batch's item ids in manifest order."""
        return list(self._call(lambda: self.redis.lrange(keys.batch_items(batch_id), 0, -1)))

    def item(self, batch_id: str, item_id: str) -> dict[str, str]:
        """One item's record ({} when there is none)."""
        return dict(self._call(lambda: self.redis.hgetall(keys.item(batch_id, item_id))))

    def items(self, batch_id: str) -> list[dict[str, str]]:
        """Every item record of the batch, in manifest order."""
        ids = self.item_ids(batch_id)

        def read() -> list[dict[str, str]]:
            with self.redis.pipeline(transaction=False) as pipe:
                for item_id in ids:
                    pipe.hgetall(keys.item(batch_id, item_id))
                return list(pipe.execute())

        return list(self._call(read))

    def done_count(self, batch_id: str) -> int:
        """How many items are in a final state."""
        return int(self._call(lambda: self.redis.scard(keys.batch_done(batch_id))))

    def batch_ids(self, limit: int = 50) -> list[str]:
        """The most recent batches first."""
        return list(self._call(lambda: self.redis.zrevrange(keys.BATCH_INDEX, 0, limit - 1)))

    def acquire_finalizer(self, batch_id: str, guard_s: int) -> bool:
        """Become the one process that writes the batch's report, for `guard_s` seconds: a
        finalizer that dies holding the guard is replaced once it lapses."""
        return bool(
            self._call(
                lambda: self.redis.set(keys.batch_finalizing(batch_id), "1", nx=True, ex=guard_s)
            )
        )

    def finalizer_guard_left_s(self, batch_id: str) -> float:
        """Seconds until the finalizer's guard lapses (0 when nobody holds it)."""
        left_ms = int(self._call(lambda: self.redis.pttl(keys.batch_finalizing(batch_id))))
        return max(0.0, left_ms / 1000)

    def release_finalizer(self, batch_id: str) -> None:
        """Let another finalizer run (after a retry re-opened the batch)."""
        self._call(lambda: self.redis.delete(keys.batch_finalizing(batch_id)))

    # ------------------------------------------------------------ items

    def transition(
        self,
        batch_id: str,
        item_id: str,
        allowed: Iterable[ItemState],
        to: ItemState,
        fields: Mapping[str, object] | None = None,
        *,
        when: Mapping[str, object] | None = None,
        durable: bool = False,
    ) -> Transition:
        """Move an item to `to` if its state is one of `allowed` and each field named in `when`
        still holds that value, writing `fields` with it.

        `when` fences a step to the attempt it examined (see `Item.fence`): the state alone
        cannot tell `submitting` of this attempt from `submitting` of the next one, so a stale
        step could otherwise undo a newer attempt's intent and have the pair posted twice.

        `durable` returns only once the write (and every write acknowledged before it) is as
        safe as the ledger's guarantee makes it: the wait goes on the same connection, right
        behind the script (`pipeline.durability`). DurabilityError when it was not: the
        change may have happened, but nothing may be paid on it.
        """
        args = [
            json.dumps([s.value for s in allowed]),
            to.value,
            json.dumps({k: encode_value(v) for k, v in (fields or {}).items()}),
            "1" if to in FINAL_STATES else "0",
            item_id,
            json.dumps({k: encode_value(v) for k, v in (when or {}).items()}),
        ]
        script_keys = [
            keys.item(batch_id, item_id),
            keys.batch_done(batch_id),
            keys.batch(batch_id),
        ]
        if durable and self.durable is not None:
            result = self._call(lambda: self._durably(script_keys, args))
        else:
            result = self._call(lambda: self._transition(keys=script_keys, args=args))
        ok, state, done, total = result
        return Transition(bool(ok), str(state), int(done), int(total))

    def update_item(
        self,
        batch_id: str,
        item_id: str,
        state: ItemState,
        fields: Mapping[str, object],
        *,
        when: Mapping[str, object] | None = None,
    ) -> bool:
        """Write fields only while the item is still in `state` (and matches `when`). False if
        it moved on."""
        return self.transition(batch_id, item_id, [state], state, fields, when=when).ok

    def count(self, batch_id: str, item_id: str, field: str, by: int = 1) -> int:
        """Add to a counter of the item (polls, errors)."""
        return int(self._call(lambda: self.redis.hincrby(keys.item(batch_id, item_id), field, by)))

    # ------------------------------------------------------------ money

    def reserve(
        self, scope: str | Sequence[str], batch_id: str, item_id: str, amount_usd: Decimal
    ) -> bool:
        """Reserve an item's estimated cost in one budget or several at once (a batch's and
        its schedule's nightly one): all or none. True when reserved (or already held)."""
        scopes = [scope] if isinstance(scope, str) else list(scope)
        return bool(
            self._call(
                lambda: self._reserve(
                    keys=[*map(keys.budget, scopes), keys.item(batch_id, item_id)],
                    args=[to_micros(amount_usd), " ".join(scopes)],
                )
            )
        )

    def settle(self, scope: str, batch_id: str, item_id: str, final_usd: Decimal) -> bool:
        """Replace the item's reservation by its final cost (once; later calls do nothing),
        in every budget it reserved in (`scope` when it reserved in none)."""
        item_key = keys.item(batch_id, item_id)
        reserved_in = self._call(lambda: self.redis.hget(item_key, "reserved_in")) or ""
        scopes = reserved_in.split() or [scope]
        return bool(
            self._call(
                lambda: self._settle(
                    keys=[*map(keys.budget, scopes), item_key], args=[to_micros(final_usd)]
                )
            )
        )

    def unreserve(self, batch_id: str, item_id: str) -> bool:
        """Give an unsettled item's reservation back to every budget it was made in (the
        item waits instead of running). True when there was one."""
        item_key = keys.item(batch_id, item_id)
        reserved_in = self._call(lambda: self.redis.hget(item_key, "reserved_in")) or ""
        budgets = [keys.budget(scope) for scope in reserved_in.split()]
        return bool(self._call(lambda: self._unreserve(keys=[*budgets, item_key], args=[])))

    def ensure_budget_limit(self, scope: str, limit_usd: Decimal) -> None:
        """Give a budget its limit unless it has one (a nightly budget's first use)."""
        key = keys.budget(scope)
        self._call(lambda: self.redis.hsetnx(key, "limit_micros", str(to_micros(limit_usd))))

    def set_budget_limit(self, scope: str, limit_usd: Decimal | None) -> None:
        """Change a budget's limit (None: no limit)."""
        key = keys.budget(scope)
        if limit_usd is None:
            self._call(lambda: self.redis.hdel(key, "limit_micros"))
        else:
            self._call(lambda: self.redis.hset(key, "limit_micros", str(to_micros(limit_usd))))

    def budget(self, scope: str) -> dict[str, Decimal | None]:
        """limit (None: no limit), reserved and spent, in USD."""
        raw = self._call(lambda: self.redis.hgetall(keys.budget(scope)))
        limit = raw.get("limit_micros")
        return {
            "limit_usd": from_micros(int(limit)) if limit else None,
            "reserved_usd": from_micros(int(raw.get("reserved_micros") or 0)),
            "spent_usd": from_micros(int(raw.get("spent_micros") or 0)),
        }

    # ------------------------------------------------------------ content identity

    def completed_pairs(self, identities: Sequence[str]) -> set[str]:
        """Which of these pairs (content identities) are paid for, their output kept."""

        def read() -> list[Any]:
            with self.redis.pipeline() as pipe:
                for identity in identities:
                    pipe.hget(keys.content(identity), "state")
                return list(pipe.execute())

        states = self._call(read) if identities else []
        return {i for i, state in zip(identities, states, strict=True) if state == "completed"}

    def claim(self, identity: str, owner: str, *, force: bool = False) -> Claim:
        """Decide who pays for a pair: this `owner` ("batch:item"), or reuse, or wait."""
        kind, current, output_key = self._call(
            lambda: self._claim(
                keys=[keys.content(identity)],
                args=[owner, "1" if force else "0", keys.CLAIM_TTL_S],
            )
        )
        return Claim(str(kind), str(current or ""), str(output_key or ""))

    def expect(self, steps: Iterable[Next], now: float) -> None:
        """Record, per item, the step a message was just sent for and when it is due: the
        sweeper re-sends it if it never runs (a message the broker lost)."""
        expected = [n for n in steps if n.item_id is not None and n.step not in BATCH_STEPS]
        if not expected:
            return

        def write() -> None:
            with self.redis.pipeline(transaction=False) as pipe:
                for step in expected:
                    pipe.hset(
                        keys.item(step.batch_id, str(step.item_id)),
                        mapping={
                            "next_step": step.step,
                            "next_due_at": repr(now + step.countdown_s),
                        },
                    )
                pipe.execute()

        self._call(write)

    def index_prediction(self, prediction_id: str, member: str) -> None:
        """Remember which item (`<batch>:<item>`) a prediction belongs to (for webhooks)."""
        self._call(
            lambda: self.redis.set(keys.prediction(prediction_id), member, ex=keys.CLAIM_TTL_S)
        )

    def item_of_prediction(self, prediction_id: str) -> str | None:
        """The `<batch>:<item>` a prediction was made for, or None if not ours."""
        value = self._call(lambda: self.redis.get(keys.prediction(prediction_id)))
        return str(value) if value else None

    def claim_prediction(self, prediction_id: str, member: str) -> bool:
        """Attribute a prediction to an item unless another item has it: True when it is now
        (or already was) this item's. Reconcile adopts through this, so two items never
        both take one prediction."""
        key = keys.prediction(prediction_id)
        if self._call(lambda: self.redis.set(key, member, nx=True, ex=keys.CLAIM_TTL_S)):
            return True
        return self.item_of_prediction(prediction_id) == member

    def attributed(self, prediction_ids: Sequence[str]) -> set[str]:
        """Which of these predictions belong to some lipdub item."""
        return set(self.owners(prediction_ids))

    def owners(self, prediction_ids: Sequence[str]) -> dict[str, str]:
        """The item (`<batch>:<item>`) each of these predictions was made for, where known."""
        if not prediction_ids:
            return {}
        found = self._call(lambda: self.redis.mget([keys.prediction(p) for p in prediction_ids]))
        return {p: str(owner) for p, owner in zip(prediction_ids, found, strict=True) if owner}

    def record_clock(self, lo_s: float, hi_s: float) -> None:
        """Keep one answered submit's bounds on (provider clock - ours), the last
        `keys.CLOCK_SAMPLES` of them."""

        def write() -> None:
            with self.redis.pipeline() as pipe:
                pipe.lpush(keys.CLOCK, f"{lo_s!r} {hi_s!r}")
                pipe.ltrim(keys.CLOCK, 0, keys.CLOCK_SAMPLES - 1)
                pipe.expire(keys.CLOCK, keys.CLOCK_TTL_S)
                pipe.execute()

        self._call(write)

    def clock_bounds(self) -> list[tuple[float, float]]:
        """The kept bounds on (provider clock - ours), newest first."""
        found = self._call(lambda: self.redis.lrange(keys.CLOCK, 0, -1))
        bounds = []
        for entry in found:
            lo, _, hi = str(entry).partition(" ")
            bounds.append((float(lo), float(hi)))
        return bounds

    def register_submit(self, member: str, intent_at: float) -> None:
        """Note a POST about to be sent whose prediction is not known yet (reconcile tells
        lost submits apart by the time they were on their way)."""

        def write() -> None:
            with self.redis.pipeline() as pipe:
                pipe.zadd(keys.UNSETTLED_SUBMITS, {member: intent_at})
                pipe.expire(keys.UNSETTLED_SUBMITS, keys.CLAIM_TTL_S)
                pipe.execute()

        self._call(write)

    def settle_submit(self, member: str) -> None:
        """The submit's prediction is known (or none was made)."""
        self._call(lambda: self.redis.zrem(keys.UNSETTLED_SUBMITS, member))

    def unsettled_submits(self, since: float, until: float) -> list[str]:
        """Members (`<batch>:<item>`) whose submit, sent between `since` and `until` (epoch
        s), has no known prediction."""
        found = self._call(lambda: self.redis.zrangebyscore(keys.UNSETTLED_SUBMITS, since, until))
        return [str(m) for m in found]

    def observe(self, prediction_id: str, fields: Mapping[str, object]) -> None:
        """Remember what was seen of a prediction no item claims (yet): `inputs` from a
        webhook delivery, `output_s` from a probe of its output."""
        key = keys.observed(prediction_id)

        def write() -> None:
            with self.redis.pipeline() as pipe:
                pipe.hset(key, mapping={k: encode_value(v) for k, v in fields.items()})
                pipe.expire(key, keys.CLAIM_TTL_S)
                pipe.execute()

        self._call(write)

    def observations(self, prediction_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """What was observed of each of these predictions (those with nothing are left out)."""

        def read() -> list[Any]:
            with self.redis.pipeline() as pipe:
                for prediction_id in prediction_ids:
                    pipe.hgetall(keys.observed(prediction_id))
                return list(pipe.execute())

        found = self._call(read) if prediction_ids else []
        return {p: dict(v) for p, v in zip(prediction_ids, found, strict=True) if v}

    def first_delivery(self, webhook_id: str, timestamp_s: str) -> bool:
        """True the first time a delivery (its id and timestamp) is taken; False for a replay."""
        key = keys.webhook_seen(webhook_id, timestamp_s)
        return bool(
            self._call(lambda: self.redis.set(key, "1", nx=True, ex=keys.WEBHOOK_SEEN_TTL_S))
        )

    def forget_delivery(self, webhook_id: str, timestamp_s: str) -> None:
        """A taken delivery could not be acted on: let the provider's retry of it in."""
        self._call(lambda: self.redis.delete(keys.webhook_seen(webhook_id, timestamp_s)))

    def complete_content(self, identity: str, owner: str, output_key: str, ttl_s: int) -> None:
        """Remember that this pair is paid for and where its output is."""
        self._call(
            lambda: self.redis.hset(
                keys.content(identity),
                mapping={"state": "completed", "owner": owner, "output_key": output_key},
            )
        )
        self._call(lambda: self.redis.expire(keys.content(identity), ttl_s))

    def release_claim(self, identity: str, owner: str) -> None:
        """Give up an unfinished claim (the item failed), so another item may pay."""
        self._call(lambda: self._release_claim(keys=[keys.content(identity)], args=[owner]))

    def forget_content(self, identity: str) -> None:
        """Drop a completed pair whose output has gone missing."""
        self._call(lambda: self.redis.delete(keys.content(identity)))

    # ------------------------------------------------------------ plumbing

    def durability_refusal(self) -> str | None:
        """Why this ledger cannot make a submit's intent durable, or None when it can (or
        makes no durable writes). Redis trouble raises LedgerError."""
        if self.durable is None:
            return None
        try:
            self._call(self.durable.guarantee)
        except DurabilityError as err:
            return str(err)
        return None

    def _durably(self, script_keys: list[str], args: list[str]) -> Any:
        assert self.durable is not None
        guarantee = self.durable.guarantee()
        if guarantee.wait is None:
            return self._transition(keys=script_keys, args=args)
        # One connection, the wait right behind the write; no MULTI (the wait would not block).
        pipe = self.redis.pipeline(transaction=False)
        self._transition(keys=script_keys, args=args, client=pipe)
        pipe.execute_command(*guarantee.wait)  # type: ignore[no-untyped-call]
        try:
            result, reply = pipe.execute()
        except redis.ResponseError:
            self.durable.forget()  # e.g. AOF turned off since: ask the server again next time
            raise
        if not guarantee.satisfied(reply):
            self.durable.forget()
            raise DurabilityError(
                f"the write was not made durable in time ({guarantee.wait[0]} answered {reply}); "
                f"{guarantee.summary.split(':')[0]} needs {guarantee.needs}"
            )
        return result

    def _call(self, action: Any) -> Any:
        try:
            return action()
        except redis.RedisError as err:
            raise LedgerError(f"the ledger (Redis) failed: {type(err).__name__}: {err}") from err
