"""The steps of an item's life, each a function `(runtime, batch_id, item_id) -> [Next]`.

Every step reads the item from the ledger, acts only if the item is in the state the step
expects (so a step run twice does nothing the second time), records the outcome with one
atomic transition, and returns what should run next, with a countdown instead of a sleep.
`workers/` turns each step into a Celery task and each `Next` into a scheduled task.
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.flow.collect import collect
from pipeline.flow.finalize import finalize
from pipeline.flow.poll import poll
from pipeline.flow.prepare import prepare
from pipeline.flow.reconcile import reconcile
from pipeline.flow.submit import submit
from pipeline.flow.watch import watch
from pipeline.runtime import Runtime
from pipeline.schedules.conclude import conclude
from pipeline.schedules.notices import notify
from pipeline.steps import ITEM_STEP_NAMES, STEP_NAMES, Next

ItemStep = Callable[[Runtime, str, str], list[Next]]

ITEM_STEPS: dict[str, ItemStep] = {
    "prepare": prepare,
    "submit": submit,
    "reconcile": reconcile,
    "poll": poll,
    "collect": collect,
}

STEPS = STEP_NAMES
"""Every step's name; a task is registered for each."""
assert tuple(ITEM_STEPS) == ITEM_STEP_NAMES, "pipeline.steps names the steps this module runs"


def run_step(rt: Runtime, step: str, batch_id: str, item_id: str | None) -> list[Next]:
    """Run one step by name: an item step, `finalize` or `conclude` for the batch,
    `notify` (its `batch_id` is the notice's source: a schedule's name or `batch:<id>`; its
    `item_id` the notice's event), or `watch` for the account."""
    if step == "finalize":
        return finalize(rt, batch_id)
    if step == "conclude":
        return conclude(rt, batch_id)
    if step == "notify":
        return notify(rt, batch_id, item_id or "")
    if step == "watch":
        return watch(rt)
    if item_id is None:
        raise ValueError(f"step {step!r} needs an item id")
    return ITEM_STEPS[step](rt, batch_id, item_id)


__all__ = ["ITEM_STEPS", "STEPS", "Next", "run_step"]
