"""Compacted items, packed per batch (`pipeline.retention`).

A compacted item keeps a few fields (its pair's identity, its prediction ids, its output key,
length and cost: about 250 bytes of text). Kept as a hash of its own, Redis spends about 430
bytes on it (the key, its expiry, the hash's header); kept as a part of one value per hundred
items of its batch, compressed (the field names and the output keys' common prefix repeat;
what does not compress is the identity's and the prediction id's hex), about 120. So a
batch's compacted items live in one hash, `lipdub:batch:<b>:kept`: field `chunks` says how
many parts there are, and each part (named by its number) holds the items whose id hashes to
it, as zlib-compressed JSON in base85 (the ledger's client decodes every answer as text).

The hash lapses with the longest-lived of its items (each as long as its pair's claim, at
least until the provider's history of the batch lapses): an item whose own time is over
before the batch is compacted is left out; one whose time ends sooner than its batch mates'
stays readable until theirs ends, which only keeps the bytes Redis holds anyway.
"""

from __future__ import annotations

import base64
import json
import math
import zlib
from collections.abc import Mapping
from typing import Any

from pipeline import keys
from pipeline.ledger.base import LedgerStore
from pipeline.states import ItemState

CHUNK_ITEMS = 100
"""Items per packed part: enough for the repeated text to compress, few enough that reading
one item (a later item checking a reused output's length) unpacks only a few kilobytes."""
CHUNKS_FIELD = "chunks"
COMPACTED_AT = "compacted_at"
"""The batch field saying when its items were compacted (epoch s)."""
LAPSED = "lapsed"
"""The field marking what the readers of items give for a compacted item whose packed fields
have lapsed (`lapsed_record`)."""


def part_of(item_id: str, parts: int) -> str:
    """The part (a field of the batch's packed hash) holding this item.

    >>> part_of("row00001", 1), part_of("row00001", 7) == part_of("row00001", 7)
    ('0', True)
    """
    return str(zlib.crc32(item_id.encode()) % parts)


def pack(records: Mapping[str, Mapping[str, str]]) -> str:
    """Item id -> kept fields, as one compact text value.

    >>> unpack(pack({"a": {"state": "completed"}}))
    {'a': {'state': 'completed'}}
    """
    text = json.dumps(records, separators=(",", ":"), sort_keys=True)
    return base64.b85encode(zlib.compress(text.encode(), 9)).decode("ascii")


def lapsed_record(item_id: str) -> dict[str, str]:
    """What is known of a compacted batch's item that has no record left: its packed fields
    lapsed with its pair's claim (or it was left out of them, its time over already). Only
    completed items are compacted, and a compacted item never moves, so it is completed; its
    row is in the reports its batch wrote before.

    >>> lapsed_record("ep1.de")
    {'id': 'ep1.de', 'state': 'completed', 'lapsed': '1'}
    """
    return {"id": item_id, "state": ItemState.COMPLETED.value, LAPSED: "1"}


def unpack(value: str) -> dict[str, dict[str, str]]:
    """What `pack` packed."""
    found: dict[str, dict[str, str]] = json.loads(zlib.decompress(base64.b85decode(value)))
    return found


class CompactedItems(LedgerStore):
    """A compacted batch's completed items, packed (see the module's docstring)."""

    def keep_compacted(
        self, batch_id: str, records: Mapping[str, Mapping[str, str]], until: float | None
    ) -> None:
        """Hold `records` (item id -> kept fields) as the batch's packed items, replacing any
        packed before, in one transaction; the hash lapses at `until` (epoch s; None: never).
        """
        parts = max(1, math.ceil(len(records) / CHUNK_ITEMS))
        grouped: dict[str, dict[str, Mapping[str, str]]] = {}
        for item_id, record in records.items():
            grouped.setdefault(part_of(item_id, parts), {})[item_id] = record
        mapping: dict[Any, Any] = {
            CHUNKS_FIELD: str(parts),
            **{n: pack(r) for n, r in grouped.items()},
        }
        key = keys.batch_kept(batch_id)

        def write() -> None:
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                if records:
                    pipe.hset(key, mapping=mapping)
                    if until is not None:
                        pipe.expireat(key, math.ceil(until))
                pipe.execute()

        self._call(write)

    def compacted_item(self, batch_id: str, item_id: str) -> dict[str, str]:
        """One compacted item's kept fields ({} when the batch holds none for it)."""
        key = keys.batch_kept(batch_id)
        parts = self._call(lambda: self.redis.hget(key, CHUNKS_FIELD))
        if not parts:
            return {}
        value = self._call(lambda: self.redis.hget(key, part_of(item_id, int(parts))))
        return unpack(value).get(item_id, {}) if value else {}

    def compacted_items(self, batch_id: str) -> dict[str, dict[str, str]]:
        """Every compacted item of the batch: item id -> kept fields."""
        found = self._call(lambda: self.redis.hgetall(keys.batch_kept(batch_id)))
        items: dict[str, dict[str, str]] = {}
        for name, value in found.items():
            if name != CHUNKS_FIELD:
                items.update(unpack(value))
        return items
