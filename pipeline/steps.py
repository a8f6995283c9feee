"""The steps of lipdub's work by name, and `Next`: a step to run, with its countdown.

The bottom of the import graph beside `errors` and `states`: the ledger, the flow, the
schedules and the workers all speak of steps, and none of them needs another to do so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ITEM_STEP_NAMES = ("prepare", "submit", "reconcile", "poll", "collect")
"""The steps of one item's life, in their usual order (`pipeline.flow`)."""
BATCH_STEPS = frozenset({"finalize", "conclude", "notify"})
"""Steps about a whole batch (or, for `notify`, a schedule's notice), not one item."""
ACCOUNT_STEPS = frozenset({"watch"})
"""Steps about the whole provider account (`pipeline.flow.watch`)."""
STEP_NAMES = (*ITEM_STEP_NAMES, "finalize", "conclude", "notify", "watch")
"""Every step a worker runs, each as one Celery task `lipdub.<name>`."""


@dataclass(frozen=True)
class Next:
    """A step to run next for an item (or for the batch when `item_id` is None).

    `countdown_s` is how long to wait first: the dispatcher schedules it; nobody sleeps.
    """

    step: str
    batch_id: str
    item_id: str | None = None
    countdown_s: float = 0.0
    why: str = field(default="", compare=False)
    """What the step waits for, when it is a wait (for the worker's log line)."""
    extra: bool = field(default=False, compare=False)
    """A look besides the item's own schedule (the watch saw its prediction end, a nudge):
    not recorded as the step the item expects (`Ledger.expect`), so it never hides the
    follow-up an item records as sent (`flow.common.resume`)."""
