"""The life of an item, and what a final state means.

    pending ──prepare──> ready ──submit (intent first)──> submitting ──POST answered──> running
       │                   ^                                  │ outcome unknown: reconcile via the list
       │ pair already paid │ transient failure (attempts left) │
       │ for: copy output  └────────────────────────── running ─┤
       v                                                        v provider says completed
    completed <───────────────────────── collecting <───────────┘

Final states: completed, failed, skipped (budget), cancelled, needs_attention (a submit whose
outcome the list call could not settle: never re-posted automatically).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class ItemState(StrEnum):
    """Where an item is. The ledger moves it only along the arrows above (`MOVES`: any other
    move is refused as a programming error before Redis is asked)."""

    PENDING = "pending"
    READY = "ready"
    SUBMITTING = "submitting"
    RUNNING = "running"
    COLLECTING = "collecting"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    NEEDS_ATTENTION = "needs_attention"

    @property
    def final(self) -> bool:
        """True when nothing more happens to the item unless a user retries it."""
        return self in FINAL_STATES


FINAL_STATES = frozenset(
    {
        ItemState.COMPLETED,
        ItemState.FAILED,
        ItemState.SKIPPED,
        ItemState.CANCELLED,
        ItemState.NEEDS_ATTENTION,
    }
)
_RETRIED_TO = frozenset({ItemState.PENDING, ItemState.RUNNING, ItemState.COLLECTING})
"""Where `retry-failed` sends an item back (submit anew, poll again, collect again)."""

MOVES: dict[ItemState, frozenset[ItemState]] = {
    ItemState.PENDING: frozenset(
        {
            ItemState.READY,
            ItemState.COMPLETED,  # the pair was paid for already: its output is copied
            ItemState.FAILED,
            ItemState.CANCELLED,
            ItemState.NEEDS_ATTENTION,  # the item paying for the pair ended unsettled
        }
    ),
    ItemState.READY: frozenset(
        {ItemState.SUBMITTING, ItemState.SKIPPED, ItemState.CANCELLED, ItemState.FAILED}
    ),
    ItemState.SUBMITTING: frozenset(
        {ItemState.RUNNING, ItemState.READY, ItemState.FAILED, ItemState.NEEDS_ATTENTION}
    ),
    ItemState.RUNNING: frozenset({ItemState.COLLECTING, ItemState.READY, ItemState.FAILED}),
    ItemState.COLLECTING: frozenset({ItemState.COMPLETED, ItemState.FAILED}),
    ItemState.COMPLETED: frozenset(),
    ItemState.FAILED: _RETRIED_TO,
    ItemState.SKIPPED: _RETRIED_TO,
    ItemState.CANCELLED: _RETRIED_TO,
    ItemState.NEEDS_ATTENTION: _RETRIED_TO,  # and `lipdub adopt`: on to running
}
"""Where each state may go next (staying put, to write fields, is always allowed)."""


def check_moves(allowed: Iterable[ItemState], to: ItemState) -> None:
    """Refuse a transition whose allowed states include one that never moves to `to`.

    >>> check_moves([ItemState.READY], ItemState.SUBMITTING)
    >>> check_moves([ItemState.COMPLETED], ItemState.READY)
    Traceback (most recent call last):
    ...
    ValueError: an item never moves from completed to ready (pipeline.states.MOVES)
    """
    for state in allowed:
        if state is not to and to not in MOVES[state]:
            raise ValueError(
                f"an item never moves from {state.value} to {to.value} (pipeline.states.MOVES)"
            )


PARKED = ("window", "nightly budget")
"""`waiting_on` of an item a schedule's gate parked (`pipeline.schedules.gate`)."""
NOT_SUBMITTED = frozenset({ItemState.PENDING, ItemState.READY})
"""States in which no paid request for the current attempt has been sent."""


class BatchState(StrEnum):
    """A batch is running until every item is final, then finished (report written)."""

    RUNNING = "running"
    FINISHED = "finished"


class ErrorKind(StrEnum):
    """Why an item did not complete: decides whether a retry can help."""

    INPUT = "input"
    """The provider refused the media (no face, unreadable): fix the input."""
    TRANSIENT = "transient"
    """The provider failed for its own reasons and attempts ran out."""
    TIMEOUT = "timeout"
    """No final answer before the item's deadline; the prediction id is kept."""
    OUTPUT = "output"
    """The output is missing, unreadable or the wrong length."""
    STORAGE = "storage"
    BUDGET = "budget"
    CANCELLED = "cancelled"
    AUTH = "auth"
    UNRESOLVED_SUBMIT = "unresolved_submit"
