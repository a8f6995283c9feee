"""The ledger: Redis as the system of record for batches and items.

Every state change is one Lua script (compare the state, write the fields, keep the set of
finished items) so two workers handling the same item can never both win a transition: the
loser sees the state it lost to and does nothing. Values are stored as strings
(`pipeline.records`); money is kept as integer micro-USD so reservations can be added
atomically. One class, `Ledger`, made of its concerns, each in its own module:

    base.py      the client, the scripts (pipeline/lua), durable writes, Redis errors
    batches.py   batch and item records, state moves, expected steps
    budgets.py   reservations and spend
    claims.py    who pays for a pair, and its output once paid
    index.py     which item a prediction was made for, and reconcile's evidence
"""

from __future__ import annotations

from pipeline.ledger.batches import BatchRecords, Transition
from pipeline.ledger.budgets import Budgets, from_micros, to_micros
from pipeline.ledger.claims import Claim, ContentClaims
from pipeline.ledger.index import PredictionIndex

__all__ = ["Claim", "Ledger", "Transition", "from_micros", "to_micros"]


class Ledger(BatchRecords, Budgets, ContentClaims, PredictionIndex):
    """Batches and items in Redis. Give it a `redis.Redis` made with `decode_responses=True`,
    and `durable` (the settings' guarantee) where submits are made: without it a durable
    transition is an ordinary one (unit tests, the CLI's reads)."""
