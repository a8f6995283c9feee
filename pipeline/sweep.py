"""Find the steps whose message was lost, so that nothing stalls on a broker's slip.

Every time a step is sent for an item, the item records it (`next_step`, `next_due_at`,
`Ledger.expect`). A step still expected long after it was due was lost: Redis's transport can
drop a message that was in flight when the connection broke (popped by a worker that died
before recording it as unacknowledged). Steps are idempotent, so sending one again is safe;
the cost of a false alarm is one extra run that finds nothing to do.

"Long after" is the hard time limit past the due time (a step that started cannot still be
running then), and only while the broker's queue is empty (a message waiting behind a
backlog is late, not lost). A complete batch that was never finished gets its finalize again.
An item never sent because the start uploading its files stopped first gets its prepare step,
which fails it, saying so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pipeline.ledger import Ledger
from pipeline.states import ItemState
from pipeline.steps import Next
from pipeline.uploads import uploader_stopped

ACTIVE_BATCHES = 50
"""How many of the most recent batches are looked at."""
SWEPT_FIELDS = ("id", "state", "next_step", "next_due_at")
"""All the sweep reads of an item (a chunk at a time: a big batch's records stay in Redis)."""


def stalled_steps(ledger: Ledger, *, now: float, grace_s: float) -> list[Next]:
    """Steps to send again: expected more than `grace_s` ago and not run since."""
    found: list[Next] = []
    for batch_id in ledger.batch_ids(ACTIVE_BATCHES):
        batch = ledger.batch(batch_id)
        if batch is None or batch.finished:
            continue
        if ledger.done_count(batch_id) >= batch.item_count:
            if ledger.finalizer_guard_left_s(batch_id) == 0:
                found.append(Next("finalize", batch_id))
            continue
        start_stopped = uploader_stopped(batch.raw, now)
        for record in ledger.iter_items(batch_id, fields=SWEPT_FIELDS):
            if not record or ItemState(record["state"]).final:
                continue
            if start_stopped and not record.get("next_step"):
                # Never sent: its start stopped before its files were up. Its prepare step
                # fails it, saying so.
                found.append(Next("prepare", batch_id, record["id"]))
                continue
            due = float(record.get("next_due_at") or 0)
            if record.get("next_step") and due and now > due + grace_s:
                found.append(Next(record["next_step"], batch_id, record["id"]))
    return found


def send_again(
    ledger: Ledger, send: Callable[[Next], None], steps: Sequence[Next], now: float
) -> None:
    """Send steps again as themselves (a dead worker's, or lost ones): each is expected again
    first. A step whose first run moved its item on and died before sending the follow-up
    then sends it: `flow.common.resume` sends none while the item records it as sent."""
    ledger.expect(steps, now)
    for step in steps:
        send(step)
