"""Content claims: who pays for a pair (video, audio, sync_mode, model), and its output once
paid, so that a pair is paid for once across batches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline import keys
from pipeline.ledger.base import LedgerStore


@dataclass(frozen=True)
class Claim:
    """Who pays for a pair: `own` (this item), `reuse` (done: copy `output_key`) or `wait`."""

    kind: str
    owner: str
    output_key: str = ""


class ContentClaims(LedgerStore):
    """Claims on pairs, and the completed pairs' outputs."""

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

    def complete_content(self, identity: str, owner: str, output_key: str, ttl_s: int) -> None:
        """Remember that this pair is paid for and where its output is."""
        self._call(
            lambda: self.redis.hset(
                keys.content(identity),
                mapping={"state": "completed", "owner": owner, "output_key": output_key},
            )
        )
        self._call(lambda: self.redis.expire(keys.content(identity), ttl_s))

    def claim_left_s(self, identity: str, owner: str) -> float | None:
        """How much longer the pair's completed claim held by `owner` is remembered (s): 0 when
        another item holds it or it has lapsed; None when it has no expiry."""

        def read() -> list[Any]:
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.hget(keys.content(identity), "owner")
                pipe.ttl(keys.content(identity))
                return list(pipe.execute())

        held_by, ttl_s = self._call(read)
        if held_by != owner or ttl_s == -2:
            return 0.0
        return None if ttl_s == -1 else float(ttl_s)

    def release_claim(self, identity: str, owner: str) -> None:
        """Give up an unfinished claim (the item failed), so another item may pay."""
        self._call(lambda: self._release_claim(keys=[keys.content(identity)], args=[owner]))

    def forget_content(self, identity: str) -> None:
        """Drop a completed pair whose output has gone missing."""
        self._call(lambda: self.redis.delete(keys.content(identity)))
