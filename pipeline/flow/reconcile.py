"""Settle a submit whose outcome is unknown, through the provider's list call. Never re-post
on a guess.

The list is searched for predictions of the model created around the intent (±300 s). Those
any lipdub item already has are not this one's. Of the rest, one whose inputs are ours is
adopted (the item was paid for; it goes on to polling). The inputs come from wherever a
source shows them: the list (WaveSpeed's does not), a webhook delivery the receiver kept for
a prediction it did not know, the result call (undocumented; asked once a run).

When none is left at all for `reconcile_grace_s` after the POST could still be on its way,
the POST created nothing, and the item may be submitted again. When predictions are left
whose inputs nobody can see, `attribution` tells the lost submits apart by when each
prediction was created and how long its output lasts, and adopts only a unique match; it
waits while that evidence may still come (an open POST, an unfinished prediction), for
`reconcile_max_wait_s`. Otherwise the item ends `needs_attention` with the few candidates
that made it ambiguous as evidence: a person decides.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from pipeline import backoff, keys
from pipeline.errors import MediaError, ProviderAuthError, ProviderError, ProviderRateLimited
from pipeline.flow.attribution import (
    Candidate,
    ClockOffset,
    Submit,
    Verdict,
    attribute,
    fits,
)
from pipeline.flow.common import fail, free_slot, load, resume
from pipeline.flow.submit import accepted, strip_query
from pipeline.media import probe
from pipeline.provider.client import LIST_PAGE_SIZE_MAX
from pipeline.provider.models import Prediction
from pipeline.records import Item
from pipeline.runtime import Runtime
from pipeline.states import ErrorKind, ItemState
from pipeline.steps import Next

WINDOW_MARGIN_S = 300.0
"""Clock skew allowed between us and the provider when searching the list."""
MAX_LIST_FAILURES = 10
MAX_EVIDENCE = 50
MAX_LIST_PAGES = 50


def reconcile(rt: Runtime, batch_id: str, item_id: str) -> list[Next]:
    """Run the reconcile step of one item in `submitting`."""
    item = load(rt, batch_id, item_id)
    if item is None:
        return []
    if item.state is not ItemState.SUBMITTING:
        return resume(rt, item, ItemState.SUBMITTING)
    intent_at = item.record.intent_at or 0.0
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
            wait_s = backoff.RECONCILE_LIST.delay_s(max(failures, 1))
        if failures >= MAX_LIST_FAILURES:
            return _unresolved(rt, item, f"the list call failed {failures} times: {err}", [])
        return [Next("reconcile", batch_id, item_id, rt.countdown(wait_s), f"the list call: {err}")]
    # An earlier attempt's prediction (failed, so this item submits again) has the same inputs:
    # adopting it would take the old failure for the new submit's outcome and pay again.
    earlier = set(item.record.prediction_ids)
    candidates = [p for p in candidates if p.id not in earlier]
    if len(candidates) >= MAX_LIST_PAGES * LIST_PAGE_SIZE_MAX:
        # The window holds more than we read: absence proves nothing.
        return _unresolved(
            rt, item, f"the list holds more than the {len(candidates)} predictions read", []
        )
    owners = rt.ledger.owners([p.id for p in candidates])
    # The index names this item for a prediction it does not have: its POST was answered and
    # the id indexed, but the item's own record of it was lost (a worker or Redis host died
    # in between). That is this submit's prediction.
    indexed = [p for p in candidates if owners.get(p.id) == item.member]
    if indexed:
        return _adopt(rt, item, indexed)
    # Every prediction another lipdub item has is not this one's.
    free = _with_inputs(rt, [p for p in candidates if p.id not in owners])
    ours = [p for p in free if p.inputs is not None and _is_ours(p, item)]
    if ours:
        return _adopt(rt, item, ours)
    unknown = [p for p in free if p.inputs is None]
    waited_s = now - intent_at
    # Absent from the list only counts once the POST cannot still be on its way.
    grace_s = rt.settings.polling.reconcile_grace_s + rt.settings.provider.submit_timeout_s
    if not unknown:
        if waited_s < grace_s:
            return _again(rt, item, max(1.0, grace_s / 3))
        return _not_created(rt, item, waited_s)
    return _attribute(rt, item, unknown, waited_s >= grace_s)


def _attribute(rt: Runtime, item: Item, unknown: list[Prediction], grace_over: bool) -> list[Next]:
    """Predictions whose inputs nobody can see are in the window: tell them apart by when
    they were created and how long their outputs last (`attribution`)."""
    now = rt.clock()
    offset = ClockOffset.measured(
        rt.ledger.clock_bounds(), fallback_s=rt.settings.provider.clock_skew_s
    )
    submits = _unsettled(rt, item, now)
    for measured in (False, True):
        observed = rt.ledger.observations([p.id for p in unknown])
        candidates = [
            Candidate(p.id, p.created_at.timestamp(), _output_s(observed.get(p.id)))
            for p in unknown
            if p.created_at is not None
        ]
        found = attribute(item.member, submits, candidates, offset=offset, now=now)
        if found.verdict is Verdict.ADOPT:
            assert found.prediction_id is not None
            return _adopt(rt, item, [p for p in unknown if p.id == found.prediction_id])
        if found.verdict is not Verdict.AMBIGUOUS or measured:
            break
        group = [p for p in unknown if p.id in found.group]
        if not _measure(rt, group, observed):
            break
    waited_s = now - (item.record.outcome_unknown_at or item.record.intent_at or 0.0)
    patient = waited_s < rt.settings.polling.reconcile_max_wait_s
    if found.verdict is Verdict.NONE:
        # None was created while our POST was on its way. Predictions nobody accounts for
        # (another client of the key, or a clock further off than measured) make that
        # a guess: then a person decides rather than lipdub paying twice.
        strangers = [
            p
            for p in unknown
            if p.created_at is None
            or not any(
                fits(Candidate(p.id, p.created_at.timestamp(), None), s, offset=offset, now=now)
                for s in submits
                if s.member != item.member
            )
        ]
        if not grace_over:
            return _again(rt, item, 5.0)
        if not strangers:
            return _not_created(rt, item, now - (item.record.intent_at or 0.0))
        return _unresolved(
            rt,
            item,
            f"no prediction was created while the submit was on its way, but "
            f"{len(strangers)} prediction(s) of the model around it belong to no lipdub item",
            strangers,
        )
    group = [p for p in unknown if p.id in found.group]
    unfinished = any(not p.terminal for p in group)
    if patient and (found.verdict is Verdict.WAIT or unfinished):
        return _again(rt, item, 10.0)
    return _unresolved(
        rt,
        item,
        f"{len(group)} prediction(s) of the model were created while this and "
        f"{len(submits) - 1} other lost submit(s) were on their way, and their inputs "
        "cannot be seen",
        group,
    )


MAX_RESULT_LOOKUPS = 10
MAX_OUTPUT_PROBES = 8


def _with_inputs(rt: Runtime, predictions: list[Prediction]) -> list[Prediction]:
    """The predictions, with their inputs wherever some source shows them: the list itself,
    a webhook delivery the receiver kept, or the result call (undocumented whether it shows
    them: asked once per run, and no more when it does not)."""
    observed = rt.ledger.observations([p.id for p in predictions if p.inputs is None])
    shown: list[Prediction] = []
    lookups = 0
    for prediction in predictions:
        inputs = prediction.inputs
        if inputs is None and prediction.id in observed:
            raw = observed[prediction.id].get("inputs")
            inputs = json.loads(raw) if raw else None
        if inputs is None and 0 <= lookups < MAX_RESULT_LOOKUPS:
            try:
                inputs = rt.provider.get_result(prediction.id).inputs
            except ProviderError:
                inputs = None
            lookups = lookups + 1 if inputs is not None else -1
        shown.append(replace(prediction, inputs=inputs) if inputs is not None else prediction)
    return shown


def _measure(rt: Runtime, group: list[Prediction], observed: dict[str, dict[str, str]]) -> bool:
    """Probe the outputs of the group's completed predictions not measured yet (bounded),
    keeping each duration. True when anything new was measured."""
    measured = False
    todo = [p for p in group if p.outputs and "output_s" not in observed.get(p.id, {})]
    for prediction in todo[:MAX_OUTPUT_PROBES]:
        try:
            info = probe(prediction.outputs[0], timeout_s=rt.settings.media.probe_timeout_s)
        except MediaError:
            continue
        rt.ledger.observe(prediction.id, {"output_s": info.duration_s})
        measured = True
    return measured


def _output_s(observed: dict[str, str] | None) -> float | None:
    value = (observed or {}).get("output_s")
    return float(value) if value else None


def _unsettled(rt: Runtime, item: Item, now: float) -> list[Submit]:
    """This submit and every other whose prediction is not known, sent around it; entries
    whose item has moved on are dropped from the registry on the way."""
    provider = rt.settings.provider
    post_s = provider.submit_timeout_s + provider.connect_timeout_s
    intent_at = item.record.intent_at or 0.0
    margin_s = WINDOW_MARGIN_S + post_s
    members = set(rt.ledger.unsettled_submits(intent_at - margin_s, now + margin_s))
    members.add(item.member)
    submits = []
    for member in sorted(members):
        batch_id, item_id = keys.slot_member_ids(member)
        record = rt.ledger.item(batch_id, item_id) if member != item.member else item.record.raw
        state = record.get("state")
        lost = state == ItemState.NEEDS_ATTENTION and (
            record.get("error_kind") == ErrorKind.UNRESOLVED_SUBMIT
        )
        if state != ItemState.SUBMITTING and not lost:
            rt.ledger.settle_submit(member)
            continue
        sent_from = float(record.get("intent_at") or 0)
        until = record.get("created_by") or record.get("outcome_unknown_at")
        sent_until: float | None
        if until:
            sent_until = float(until)
        elif sent_from + post_s <= now:
            sent_until = sent_from + post_s  # over by now, answered or not (a worker died)
        else:
            # Still open: its answer may yet come (ours: it did not, or we would not be here).
            sent_until = now if member == item.member else None
        submits.append(
            Submit(member, sent_from, sent_until, float(record.get("expected_output_s") or 0))
        )
    return submits


def _adopt(rt: Runtime, item: Item, ours: list[Prediction]) -> list[Next]:
    """Take the earliest of these predictions as the submit's (the rest are recorded as
    duplicates the provider made), unless another item claimed it first."""
    ours.sort(key=lambda p: p.created_at or datetime.min.replace(tzinfo=UTC))
    if not rt.ledger.claim_prediction(ours[0].id, item.member):
        return _again(rt, item, 5.0)
    extra = [p.id for p in ours[1:]]
    if extra:
        rt.ledger.update_item(
            item.batch_id,
            item.id,
            ItemState.SUBMITTING,
            {"duplicate_predictions": extra},
            when=item.fence,
        )
    return accepted(rt, item, ours[0].id, reconciled=True)


def _again(rt: Runtime, item: Item, wait_s: float) -> list[Next]:
    why = "the lost submit's prediction to show (or its window to close)"
    return [Next("reconcile", item.batch_id, item.id, rt.countdown(wait_s), why)]


def _not_created(rt: Runtime, item: Item, waited_s: float) -> list[Next]:
    """The POST created nothing: the item may be submitted again."""
    # Only for the attempt this step read: a duplicate of this step that read the same attempt
    # must not send the item back to `ready` once the next attempt has recorded its intent.
    moved = rt.ledger.transition(
        item.batch_id,
        item.id,
        [ItemState.SUBMITTING],
        ItemState.READY,
        {
            "last_submit_error": f"not created: the list call showed no such prediction for {waited_s:.0f} s"
        },
        when=item.fence,
    )
    if not moved.ok:
        return []
    rt.ledger.settle_submit(item.member)
    return [*free_slot(rt, item), Next("submit", item.batch_id, item.id)]


def _is_ours(prediction: Prediction, item: Item) -> bool:
    inputs: dict[str, Any] = prediction.inputs or {}
    return (
        strip_query(str(inputs.get("video", ""))) == item.record.video_match
        and strip_query(str(inputs.get("audio", ""))) == item.record.audio_match
        and str(inputs.get("sync_mode", "cut_off")) == item.record.sync_mode
    )


def _unresolved(rt: Runtime, item: Item, why: str, candidates: list[Prediction]) -> list[Next]:
    rt.ledger.forget_unknown_submit(item.member)  # a person's now; the queue ahead goes on
    evidence = {
        "intent_at": item.record.intent_at or 0.0,
        "outcome_unknown": item.record.outcome_unknown,
        "candidates": [
            {
                "id": p.id,
                "status": p.status,
                "created_at": p.created_at.isoformat() if p.created_at else None,
            }
            for p in candidates[:MAX_EVIDENCE]
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
