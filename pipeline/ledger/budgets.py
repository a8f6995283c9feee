"""Budgets: reservations and spend in integer micro-USD, added atomically across scopes.

>>> to_micros(Decimal("0.134"))
134000
>>> from_micros(134000)
Decimal('0.134')
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal

from pipeline import keys
from pipeline.ledger.base import LedgerStore

MICROS_PER_USD = 1_000_000


def to_micros(amount_usd: Decimal) -> int:
    """USD to integer micro-USD, rounded half up."""
    return int((amount_usd * MICROS_PER_USD).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def from_micros(micros: int) -> Decimal:
    """Integer micro-USD to USD."""
    return (Decimal(micros) / MICROS_PER_USD).normalize()


def unbooked_fields() -> dict[str, object]:
    """An item's budget fields as they are before its first reservation: what an item that
    is run again (retry-failed, adopt) starts from, so that its cost is booked once more by
    `settle` (its earlier reservation was settled or given back when it ended)."""
    return {"settled": False, "reserved_micros": 0, "reserved_in": ""}


class Budgets(LedgerStore):
    """A batch's budget and a schedule's nightly one: reserve, settle, give back."""

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
