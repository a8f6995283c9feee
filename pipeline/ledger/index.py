"""What reconcile, the audit and the webhook receiver know about predictions: which item each
was made for, the provider's clock, the submits whose answers may still come, what was
observed of predictions no item knew yet, and which webhook deliveries were seen."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pipeline import keys
from pipeline.ledger.base import LedgerStore
from pipeline.records import encode_value

FORGET_CHUNK = 500
"""Index entries read and deleted per command."""


class PredictionIndex(LedgerStore):
    """The prediction index and reconcile's evidence."""

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

    def forget_predictions(self, owners: Mapping[str, str]) -> int:
        """Delete the index entries of these predictions (id -> `<batch>:<item>`) that still
        name that item: a compacted batch's, once the provider's history of them has lapsed
        (`pipeline.retention`). Returns how many were deleted."""
        ids = list(owners)
        deleted = 0
        for start in range(0, len(ids), FORGET_CHUNK):
            chunk = ids[start : start + FORGET_CHUNK]
            found = self._call(lambda c=chunk: self.redis.mget([keys.prediction(p) for p in c]))
            mine = [
                keys.prediction(p)
                for p, owner in zip(chunk, found, strict=True)
                if owner is not None and str(owner) == owners[p]
            ]
            if mine:
                deleted += int(self._call(lambda m=mine: self.redis.delete(*m)))
        return deleted

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
        self._scored(keys.UNSETTLED_SUBMITS, member, intent_at, keys.CLAIM_TTL_S)

    def settle_submit(self, member: str) -> None:
        """The submit's prediction is known (or none was made)."""

        def write() -> None:
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.zrem(keys.UNSETTLED_SUBMITS, member)
                pipe.zrem(keys.UNKNOWN_SUBMITS, member)
                pipe.execute()

        self._call(write)

    def note_unknown_submit(self, member: str, at: float) -> None:
        """The submit's POST got no answer (`at`, epoch s): reconcile will look for it."""
        self._scored(keys.UNKNOWN_SUBMITS, member, at, keys.UNKNOWN_SUBMITS_TTL_S)

    def _scored(self, key: str, member: str, score: float, ttl_s: int) -> None:
        """Add to a sorted set that lapses `ttl_s` after its latest entry."""

        def write() -> None:
            with self.redis.pipeline() as pipe:
                pipe.zadd(key, {member: score})
                pipe.expire(key, ttl_s)
                pipe.execute()

        self._call(write)

    def forget_unknown_submit(self, member: str) -> None:
        """Reconcile is done with the submit (it needs a person now): stop counting it."""
        self._call(lambda: self.redis.zrem(keys.UNKNOWN_SUBMITS, member))

    def unknown_submits(self, since: float) -> int:
        """Submits whose answer was lost since `since` (epoch s) and not reconciled yet."""
        return int(self._call(lambda: self.redis.zcount(keys.UNKNOWN_SUBMITS, since, "+inf")))

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

    def first_sight(self, prediction_id: str, ttl_s: int) -> bool:
        """True the first time the account's watch reports this prediction ended (within
        `ttl_s`): its poll is asked for once, not at every look while it waits to run."""
        return bool(
            self._call(lambda: self.redis.set(keys.watched(prediction_id), 1, nx=True, ex=ttl_s))
        )

    def first_delivery(self, webhook_id: str, timestamp_s: str) -> bool:
        """True the first time a delivery (its id and timestamp) is taken; False for a replay."""
        key = keys.webhook_seen(webhook_id, timestamp_s)
        return bool(
            self._call(lambda: self.redis.set(key, "1", nx=True, ex=keys.WEBHOOK_SEEN_TTL_S))
        )

    def forget_delivery(self, webhook_id: str, timestamp_s: str) -> None:
        """A taken delivery could not be acted on: let the provider's retry of it in."""
        self._call(lambda: self.redis.delete(keys.webhook_seen(webhook_id, timestamp_s)))
