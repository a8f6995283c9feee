"""Batches and items: their records, their state moves, the steps expected of them."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import redis

from pipeline import keys
from pipeline.errors import LedgerError
from pipeline.ledger.budgets import to_micros
from pipeline.ledger.kept import COMPACTED_AT, CompactedItems, lapsed_record
from pipeline.records import BatchRecord, encode_value
from pipeline.states import FINAL_STATES, BatchState, ItemState, check_moves
from pipeline.steps import BATCH_STEPS, Next

DONE_COMPACTED = "done_compacted"
"""The batch field counting its compacted items, which are done but out of its done set."""


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


class BatchRecords(CompactedItems):
    """Batch and item records; every item state change is one Lua script (`transition`).

    The readers of items find a compacted batch's completed items where compaction packed
    them (`pipeline.ledger.kept`), so what they return does not depend on where it is kept."""

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
                        # Items per state, kept by every transition (transition.lua).
                        f"n:{ItemState.PENDING.value}": str(len(items)),
                        "items_estimate_usd": str(
                            sum((Decimal(str(i.get("price_usd") or 0)) for i in items), Decimal(0))
                        ),
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

    def batch(self, batch_id: str) -> BatchRecord | None:
        """The batch's record, or None when there is no such batch."""
        raw = dict(self._call(lambda: self.redis.hgetall(keys.batch(batch_id))))
        return BatchRecord.decode(raw) if raw else None

    def set_batch_notify(self, batch_id: str, urls: list[str]) -> None:
        """Where the batch's own notices go (secrets: kept apart from its record)."""
        value = json.dumps(urls)
        self._call(lambda: self.redis.set(keys.batch_notify(batch_id), value, ex=keys.CLAIM_TTL_S))

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
        record = dict(self._call(lambda: self.redis.hgetall(keys.item(batch_id, item_id))))
        if "state" in record:
            return record
        return self.compacted_item(batch_id, item_id) or record

    def items(self, batch_id: str) -> list[dict[str, str]]:
        """Every item record of the batch, in manifest order: a compacted item's kept fields,
        and for one whose kept fields have lapsed what is known of it (`kept.lapsed_record`),
        so that every item has a state."""
        ids = self.item_ids(batch_id)

        def read() -> list[dict[str, str]]:
            with self.redis.pipeline(transaction=False) as pipe:
                for item_id in ids:
                    pipe.hgetall(keys.item(batch_id, item_id))
                return list(pipe.execute())

        records: list[dict[str, str]] = list(self._call(read))
        if any("state" not in r for r in records):
            _fill(ids, records, self.compacted_items(batch_id))
            self._fill_lapsed(batch_id, ids, records)
        return records

    def iter_items(
        self, batch_id: str, *, fields: Sequence[str] | None = None, chunk: int = 500
    ) -> Iterator[dict[str, str]]:
        """Every item record of the batch in manifest order, read `chunk` at a time (memory
        flat in the batch's size); only `fields` of each when given. A compacted item whose
        packed fields have lapsed is `kept.lapsed_record` (as in `items`)."""
        count = int(self._call(lambda: self.redis.llen(keys.batch_items(batch_id))))
        packed: dict[str, dict[str, str]] | None = None  # a compacted batch's, read once
        read_fields = _with_state(fields or ())  # an item with no state has no record here
        for start in range(0, count, chunk):
            ids = self._call(
                lambda s=start: self.redis.lrange(keys.batch_items(batch_id), s, s + chunk - 1)
            )

            def read(ids: list[str] = ids) -> list[dict[str, str]]:
                with self.redis.pipeline(transaction=False) as pipe:
                    for item_id in ids:
                        key = keys.item(batch_id, item_id)
                        if fields is None:
                            pipe.hgetall(key)
                        else:
                            pipe.hmget(key, list(read_fields))
                    answers = pipe.execute()
                if fields is None:
                    return list(answers)
                return [_named(read_fields, values) for values in answers]

            records = self._call(read)
            if any("state" not in r for r in records):
                packed = self.compacted_items(batch_id) if packed is None else packed
                _fill(ids, records, packed)
                self._fill_lapsed(batch_id, ids, records)
            yield from records if fields is None else (_only(r, fields) for r in records)

    def _fill_lapsed(
        self, batch_id: str, ids: Sequence[str], records: list[dict[str, str]]
    ) -> None:
        """Give the items of a compacted batch that have no record left (neither their own nor
        a packed one) `kept.lapsed_record`, in place. In a batch not compacted, an item with
        no record is left as it is: it has not been written yet, or was lost."""
        if all("state" in r for r in records):
            return
        if not self._call(lambda: self.redis.hget(keys.batch(batch_id), COMPACTED_AT)):
            return
        for n, record in enumerate(records):
            if "state" not in record:
                records[n] = lapsed_record(ids[n])

    def fields_of(
        self, members: Sequence[tuple[str, str]], fields: Sequence[str]
    ) -> list[dict[str, str]]:
        """`fields` of each (batch id, item id), in one round trip ({} for an item gone)."""
        read_fields = _with_state(fields)

        def read() -> list[list[str | None]]:
            with self.redis.pipeline(transaction=False) as pipe:
                for batch_id, item_id in members:
                    pipe.hmget(keys.item(batch_id, item_id), list(read_fields))
                return list(pipe.execute())

        records = [_named(read_fields, values) for values in self._call(read)]
        for n, record in enumerate(records):
            if "state" not in record:
                record = self.compacted_item(*members[n]) or record
            records[n] = _only(record, fields)
        return records

    def unfinished_items(
        self,
        batch_id: str,
        fields: Sequence[str],
        *,
        limit: int | None = None,
        chunk: int = 1000,
    ) -> list[dict[str, str]]:
        """`fields` (and the id) of the items not yet final, in manifest order: the first
        `limit` of them when given. Nothing but two reads once every item is final, so a
        finished batch costs the same at any size; the ids are read a chunk at a time and
        only the unfinished ones' fields are read."""
        total = int(self._call(lambda: self.redis.llen(keys.batch_items(batch_id))))
        if self.done_count(batch_id) >= total:
            return []
        read_fields = _with_state(fields)
        found: list[dict[str, str]] = []
        for start in range(0, total, chunk):

            def unfinished(start: int = start) -> list[dict[str, str]]:
                listed = self.redis.lrange(keys.batch_items(batch_id), start, start + chunk - 1)
                done = self.redis.smismember(keys.batch_done(batch_id), listed) if listed else []
                ids = [str(i) for i, final in zip(listed, done, strict=True) if not final]
                with self.redis.pipeline(transaction=False) as pipe:
                    for item_id in ids:
                        pipe.hmget(keys.item(batch_id, item_id), read_fields)
                    answers = pipe.execute()
                # An item with no record of its own was compacted (`pipeline.retention`):
                # done, though no longer in the done set.
                records = [_named(read_fields, values) for values in answers]
                return [
                    {**_only(record, fields), "id": item_id}
                    for item_id, record in zip(ids, records, strict=True)
                    if "state" in record and not ItemState(record["state"]).final
                ]

            found += self._call(unfinished)
            if limit is not None and len(found) >= limit:
                return found[:limit]
        return found

    def done_count(self, batch_id: str) -> int:
        """How many items are in a final state: the done set's, and the compacted ones the
        batch counts instead (`forget_compacted`)."""

        def read() -> list[Any]:
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.scard(keys.batch_done(batch_id))
                pipe.hget(keys.batch(batch_id), DONE_COMPACTED)
                return list(pipe.execute())

        in_set, compacted = self._call(read)
        return int(in_set) + int(compacted or 0)

    def forget_compacted(self, batch_id: str, item_ids: Sequence[str]) -> int:
        """Delete these (completed, compacted) items' own records and move them from the
        batch's done set to its `done_compacted` count, atomically per call: a compacted item
        never moves again, so its id need not be kept in a set (about 40 bytes an item for
        as long as the batch is kept). Safe to repeat. Returns how many left the done set."""
        if not item_ids:
            return 0
        script_keys = [
            keys.batch_done(batch_id),
            keys.batch(batch_id),
            *[keys.item(batch_id, i) for i in item_ids],
        ]
        return int(
            self._call(
                lambda: self._forget_compacted(keys=script_keys, args=[DONE_COMPACTED, *item_ids])
            )
        )

    def batch_ids(self, limit: int | None = 50) -> list[str]:
        """The most recent batches first (all of them with `limit=None`)."""
        end = -1 if limit is None else limit - 1
        return list(self._call(lambda: self.redis.zrevrange(keys.BATCH_INDEX, 0, end)))

    def compacted_batches_between(self, since: float, until: float) -> list[str]:
        """The compacted batches whose time overlaps `since`..`until` (epoch s): created
        before it ends, finished (or not yet) after it begins. One read of their fields, in
        one round trip, whatever the ledger's number of batches."""
        ids = [str(b) for b in self._call(lambda: self.redis.zrangebyscore(
            keys.BATCH_INDEX, "-inf", until))]  # fmt: skip

        def read() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for batch_id in ids:
                pipe.hmget(keys.batch(batch_id), [COMPACTED_AT, "finished_at"])
            return list(pipe.execute())

        found = self._call(read) if ids else []
        return [
            batch_id
            for batch_id, (compacted_at, finished_at) in zip(ids, found, strict=True)
            if compacted_at and (not finished_at or float(finished_at) >= since)
        ]

    def acquire_finalizer(self, batch_id: str, guard_s: int) -> bool:
        """Become the one process that writes the batch's report, for `guard_s` seconds: a
        finalizer that dies holding the guard is replaced once it lapses."""
        return bool(
            self._call(
                lambda: self.redis.set(keys.batch_finalizing(batch_id), "1", nx=True, ex=guard_s)
            )
        )

    def renew_finalizer(self, batch_id: str, guard_s: int) -> None:
        """The finalizer is still at work: its guard lasts `guard_s` more seconds."""
        self._call(lambda: self.redis.expire(keys.batch_finalizing(batch_id), guard_s))

    def finalizer_guard_left_s(self, batch_id: str) -> float:
        """Seconds until the finalizer's guard lapses (0 when nobody holds it)."""
        left_ms = int(self._call(lambda: self.redis.pttl(keys.batch_finalizing(batch_id))))
        return max(0.0, left_ms / 1000)

    def release_finalizer(self, batch_id: str) -> None:
        """Let another finalizer run (after a retry re-opened the batch)."""
        self._call(lambda: self.redis.delete(keys.batch_finalizing(batch_id)))

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
        allowed = list(allowed)
        check_moves(allowed, to)
        args = [
            json.dumps([s.value for s in allowed]),
            to.value,
            json.dumps({k: encode_value(v) for k, v in (fields or {}).items()}),
            "1" if to in FINAL_STATES else "0",
            item_id,
            json.dumps({k: encode_value(v) for k, v in (when or {}).items()}),
            DONE_COMPACTED,
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
        """Add to a counter of the item (polls, errors), and to the batch's total of it
        (`total:<field>`, read by the metrics without reading the items)."""

        def write() -> int:
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.hincrby(keys.item(batch_id, item_id), field, by)
                pipe.hincrby(keys.batch(batch_id), f"total:{field}", by)
                value, _ = pipe.execute()
            return int(value)

        return int(self._call(write))

    def add_to_batch(self, batch_id: str, amounts: Mapping[str, float]) -> None:
        """Add to running totals of the batch record (`total:<name>`)."""

        def write() -> None:
            with self.redis.pipeline(transaction=False) as pipe:
                for name, amount in amounts.items():
                    pipe.hincrbyfloat(keys.batch(batch_id), f"total:{name}", amount)
                pipe.execute()

        self._call(write)

    def expect(self, steps: Iterable[Next], now: float) -> None:
        """Record, per item, the step a message was just sent for and when it is due: the
        sweeper re-sends it if it never runs (a message the broker lost). An `extra` look is
        not recorded: the item's own schedule stands."""
        expected = [
            n for n in steps if n.item_id is not None and n.step not in BATCH_STEPS and not n.extra
        ]
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


def _with_state(fields: Sequence[str]) -> list[str]:
    """`fields` and `state` (what tells an item with no record of its own apart)."""
    return [*fields, "state"] if "state" not in fields else list(fields)


def _named(fields: Sequence[str], values: Sequence[str | None]) -> dict[str, str]:
    """An HMGET's answer as a record (the fields it found)."""
    return {f: v for f, v in zip(fields, values, strict=True) if v is not None}


def _fill(
    ids: Sequence[str], records: list[dict[str, str]], packed: Mapping[str, Mapping[str, str]]
) -> None:
    """Take the records of `ids` that have no state of their own (gone, or packed with their
    compacted batch) from the batch's compacted items (`packed`), in place.

    >>> records = [{"state": "failed"}, {}]
    >>> _fill(["a", "b"], records, {"b": {"state": "completed", "row": "2"}})
    >>> records
    [{'state': 'failed'}, {'state': 'completed', 'row': '2'}]
    """
    for n, record in enumerate(records):
        kept = packed.get(ids[n])
        if kept and "state" not in record:
            records[n] = dict(kept)


def _only(record: Mapping[str, str], fields: Sequence[str]) -> dict[str, str]:
    """Those of `fields` the record has."""
    return {f: record[f] for f in fields if f in record}
