"""Settle a submit whose outcome is unknown, through the provider's list call. Never re-post
on a guess.

The list is searched for predictions of the model created around the intent. One whose inputs
are ours is adopted (the item was paid for; it goes on to polling). When the list shows the
inputs and none is ours for `reconcile_grace_s`, the POST created nothing, and the item may be
submitted again. When the list hides the inputs and the window holds predictions we cannot tell
apart, the item ends `needs_attention` with the candidates as evidence: a person decides.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pipeline.errors import ProviderAuthError, ProviderError, ProviderRateLimited
from pipeline.flow.common import Item, fail, free_slot, load, resume
from pipeline.flow.submit import accepted, strip_query
from pipeline.provider.client import LIST_PAGE_SIZE_MAX
from pipeline.provider.models import Prediction
from pipeline.runtime import Next, Runtime
from pipeline.states import ErrorKind, ItemState

WINDOW_MARGIN_S = 300.0
"""Clock skew allowed between us and the provider when searching the list."""
MAX_LIST_FAILURES = 10
MAX_LIST_PAGES = 50


def reconcile(rt: Runtime, batch_id: str, item_id: str) -> list[Next]:
    """Run the reconcile step of one item in `submitting`."""
    item = load(rt, batch_id, item_id)
    if item is None:
        return []
    if item.state is not ItemState.SUBMITTING:
        return resume(rt, item, ItemState.SUBMITTING)
    intent_at = item.number("intent_at")
    now = rt.clock()
    try:
        candidates = list(
            rt.provider.iter_predictions(
                created_after=_utc(intent_at - WINDOW_MARGIN_S),
                created_before=_utc(now + WINDOW_MARGIN_S),
                model=rt.settings.provider.model_path,
                max_pages=MAX_LIST_PAGES,
            )
        )
    except ProviderAuthError as err:
        # Asking again will not help until the key is fixed, and nobody can tell whether the
        # submit created a prediction: a person must look.
        return _unresolved(
            rt,
            item,
            f"the API key was refused, so the provider's list could not be read: {err}",
            [],
        )
    except ProviderError as err:
        failures = rt.ledger.count(batch_id, item_id, "reconcile_failures")
        if isinstance(err, ProviderRateLimited):
            wait_s = rt.gates.cool_down(err.retry_after_s)
        else:
            wait_s = min(60.0, 2.0 * failures)
        if failures >= MAX_LIST_FAILURES:
            return _unresolved(rt, item, f"the list call failed {failures} times: {err}", [])
        return [Next("reconcile", batch_id, item_id, rt.countdown(wait_s))]
    # An earlier attempt's prediction (failed, so this item submits again) has the same inputs:
    # adopting it would take the old failure for the new submit's outcome and pay again.
    earlier = set(item.data("prediction_ids") or [])
    candidates = [p for p in candidates if p.id not in earlier]
    ours = [p for p in candidates if p.inputs is not None and _is_ours(p, item)]
    hidden = [p for p in candidates if p.inputs is None]
    if not ours and len(candidates) >= MAX_LIST_PAGES * LIST_PAGE_SIZE_MAX:
        # The window holds more than we read: absence proves nothing.
        return _unresolved(
            rt, item, f"the list holds more than the {len(candidates)} predictions read", []
        )
    if ours:
        ours.sort(key=lambda p: p.created_at or datetime.min.replace(tzinfo=UTC))
        extra = [p.id for p in ours[1:]]
        if extra:
            rt.ledger.update_item(
                batch_id,
                item_id,
                ItemState.SUBMITTING,
                {"duplicate_predictions": extra},
                when=item.fence,
            )
        return accepted(rt, item, ours[0].id, reconciled=True)
    if hidden:
        return _unresolved(
            rt,
            item,
            f"{len(hidden)} prediction(s) of the model were created around the submit and the "
            "list call does not show their inputs",
            hidden,
        )
    waited_s = now - intent_at
    # Absent from the list only counts once the POST cannot still be on its way.
    grace_s = rt.settings.polling.reconcile_grace_s + rt.settings.provider.submit_timeout_s
    if waited_s < grace_s:
        return [Next("reconcile", batch_id, item_id, rt.countdown(max(1.0, grace_s / 3)))]
    # Only for the attempt this step read: a duplicate of this step that read the same attempt
    # must not send the item back to `ready` once the next attempt has recorded its intent.
    moved = rt.ledger.transition(
        batch_id,
        item_id,
        [ItemState.SUBMITTING],
        ItemState.READY,
        {
            "last_submit_error": f"not created: the list call showed no such prediction for {waited_s:.0f} s"
        },
        when=item.fence,
    )
    if not moved.ok:
        return []
    return [*free_slot(rt, item), Next("submit", batch_id, item_id)]


def _is_ours(prediction: Prediction, item: Item) -> bool:
    inputs: dict[str, Any] = prediction.inputs or {}
    return (
        strip_query(str(inputs.get("video", ""))) == item.text("video_match")
        and strip_query(str(inputs.get("audio", ""))) == item.text("audio_match")
        and str(inputs.get("sync_mode", "cut_off")) == item.text("sync_mode")
    )


def _unresolved(rt: Runtime, item: Item, why: str, candidates: list[Prediction]) -> list[Next]:
    evidence = {
        "intent_at": item.number("intent_at"),
        "outcome_unknown": item.text("outcome_unknown"),
        "candidates": [
            {
                "id": p.id,
                "status": p.status,
                "created_at": p.created_at.isoformat() if p.created_at else None,
            }
            for p in candidates[:50]
        ],
    }
    return fail(
        rt,
        item,
        [ItemState.SUBMITTING],
        ErrorKind.UNRESOLVED_SUBMIT,
        f"the submit's outcome is unknown: {why}",
        "Look the candidates up in the WaveSpeed dashboard; if none is this item, retry it "
        "with include_needs_attention. lipdub does not re-post on its own: it might pay twice.",
        to=ItemState.NEEDS_ATTENTION,
        extra={"evidence": evidence},
    )


def _utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, tz=UTC)
