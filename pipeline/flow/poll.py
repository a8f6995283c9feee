"""Poll an item's prediction: a task rescheduled with a growing countdown, never a sleep.

A completed prediction goes to collection; a failed one is submitted again when the error is
the provider's own and attempts are left, else the item fails with the provider's reason. An
item still unfinished at its deadline fails `timeout` and keeps its prediction id, so retrying
it polls that prediction again instead of paying for a new one.
"""

from __future__ import annotations

import logging

from pipeline.errors import (
    LedgerError,
    PredictionNotFound,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
)
from pipeline.flow.common import (
    DOWNLOAD_FAILED_CODE,
    Failure,
    classify_failure,
    fail,
    free_slot,
    load,
    resume,
    storage_retry_in,
)
from pipeline.flow.nudge import nudged_polls
from pipeline.flow.poll_timing import next_poll_delay_s
from pipeline.provider.models import Prediction, Status
from pipeline.records import Item
from pipeline.runtime import Runtime
from pipeline.states import ErrorKind, ItemState
from pipeline.steps import Next

RUNNING = [ItemState.RUNNING]
log = logging.getLogger("lipdub.poll")


def poll(rt: Runtime, batch_id: str, item_id: str) -> list[Next]:
    """Run the poll step of one running item."""
    item = load(rt, batch_id, item_id)
    if item is None:
        return []
    if item.state is not ItemState.RUNNING:
        if item.state is ItemState.COLLECTING and item.record.collect_started_at is not None:
            # A look scheduled before the watch or a webhook had it seen: its collect is
            # under way (a worker lost with it is covered by its step lease).
            return []
        return resume(rt, item, ItemState.RUNNING)
    prediction_id = item.record.prediction_id
    deadline_at = item.record.deadline_at
    if deadline_at is not None and rt.clock() > deadline_at:
        minutes = rt.settings.polling.item_deadline_s / 60
        return fail(
            rt,
            item,
            RUNNING,
            ErrorKind.TIMEOUT,
            f"timeout: prediction {prediction_id} was not finished after {minutes:g} min",
            "Retry the failed items: lipdub polls the same prediction again (no new charge). "
            "Or raise LIPDUB_POLLING__ITEM_DEADLINE_S.",
        )
    for gate in (rt.gates.cooling(), rt.gates.take_poll()):
        if not gate.passed:
            return [Next("poll", batch_id, item_id, rt.countdown(gate.wait_s))]
    rt.ledger.count(batch_id, item_id, "polls")
    interval_s = item.record.poll_interval_s or rt.settings.polling.first_poll_min_s
    try:
        prediction = rt.provider.get_result(prediction_id)
    except ProviderRateLimited as err:
        wait_s = rt.gates.cool_down(err.retry_after_s)
        return [Next("poll", batch_id, item_id, rt.countdown(wait_s))]
    except PredictionNotFound:
        return fail(
            rt,
            item,
            RUNNING,
            ErrorKind.OUTPUT,
            f"the provider no longer knows prediction {prediction_id}",
            "Predictions are kept 7 days; retry the item to submit it again.",
        )
    except ProviderAuthError as err:
        return fail(
            rt, item, RUNNING, ErrorKind.AUTH, str(err), "Set WAVESPEED_API_KEY, then retry."
        )
    except ProviderError:
        rt.ledger.count(batch_id, item_id, "poll_errors")
        return [Next("poll", batch_id, item_id, rt.countdown(interval_s))]
    if prediction.status == Status.COMPLETED:
        return _completed(rt, item, prediction)
    if prediction.terminal:
        return _failed(rt, item, prediction)
    polling = rt.settings.polling
    submitted_at = item.record.submitted_at
    learned = (
        rt.times.line(rt.settings.provider.model_path, item.record.sync_mode)
        if polling.learn
        else None
    )
    fields: dict[str, object] = {
        "poll_interval_s": next_poll_delay_s(
            polling,
            interval_s,
            age_s=rt.clock() - submitted_at if submitted_at is not None else interval_s,
            video_s=item.record.video_s,
            learned=learned,
            scout=item.record.scout,
            first=item.record.last_unfinished_at is None,
        ),
        # Until now, at least, the provider was working on it (the report's timeline).
        "last_unfinished_at": rt.clock(),
    }
    if prediction.status == Status.PROCESSING and item.record.processing_at is None:
        fields["processing_at"] = rt.clock()
    rt.ledger.update_item(batch_id, item_id, ItemState.RUNNING, fields, when=item.fence)
    return [Next("poll", batch_id, item_id, rt.countdown(float(str(fields["poll_interval_s"]))))]


def _completed(rt: Runtime, item: Item, prediction: Prediction) -> list[Next]:
    if not prediction.outputs:
        return fail(
            rt,
            item,
            RUNNING,
            ErrorKind.OUTPUT,
            f"prediction {prediction.id} completed without an output",
            "Retry the item; report it to WaveSpeed if it happens again.",
        )
    fields: dict[str, object] = {
        "provider_done_at": rt.clock(),
        # The collect this poll sends, recorded with the move itself: another look that
        # reads the item from now on sends no second one (`flow.common.resume`).
        "next_step": "collect",
        "next_due_at": rt.clock(),
        "output_url": prediction.outputs[0],
        "inference_ms": prediction.inference_ms if prediction.inference_ms is not None else "",
    }
    if item.record.processing_at is None:
        fields["processing_at"] = rt.clock()
    moved = rt.ledger.transition(
        item.batch_id, item.id, RUNNING, ItemState.COLLECTING, fields, when=item.fence
    )
    if not moved.ok:
        return []
    if item.record.submitted_at is not None:
        took_s = rt.clock() - item.record.submitted_at
        rt.ledger.add_to_batch(item.batch_id, {"provider_s": took_s, "provider_done": 1})
    following = [*free_slot(rt, item), Next("collect", item.batch_id, item.id)]
    if prediction.inference_ms is not None:
        # The provider's own figure: what the next first polls are aimed at.
        rt.times.record(
            rt.settings.provider.model_path,
            item.record.sync_mode,
            item.record.video_s,
            prediction.inference_ms / 1000,
        )
        polling = rt.settings.polling
        unlearned = item.record.first_look in ("scout", "expected")
        if (
            polling.learn
            and not polling.watch_every_s  # (with the watch, it sees the others' ends itself)
            and unlearned
            and (item.record.scout or item.record.last_unfinished_at)
        ):
            # Seen later than a first look aimed without a line: others may be done already.
            following += _nudged(rt, item)
    return following


def _nudged(rt: Runtime, item: Item) -> list[Next]:
    """`nudged_polls`, which only speeds looks up: Redis trouble loses the nudge, not the
    completion (the looks planned before still come)."""
    try:
        return nudged_polls(rt, item.record.sync_mode, besides=item.member)
    except LedgerError as err:
        log.warning("%s/%s: no looks were brought forward: %s", item.batch_id, item.id, err)
        return []


def _failed(rt: Runtime, item: Item, prediction: Prediction) -> list[Next]:
    """A prediction ended without an output. By its code (its text only without one): the
    provider could not download our inputs → submit again while storage trouble may last
    (`storage.retry_for_s`); the provider's own trouble → submit again while attempts are
    left; the input's fault → fail for good. Every failed prediction stays in the item's
    `errors` with its code, so the report can account for it (WaveSpeed does not document
    whether a failed task is billed)."""
    error = prediction.error or f"the prediction ended {prediction.status}"
    failure = classify_failure(prediction.code, error)
    # Predictions that could not fetch our inputs were storage trouble, bounded by time:
    # they do not use up the attempts the provider's own failures have.
    unfetched = sum(1 for e in item.record.errors if e.get("code") == DOWNLOAD_FAILED_CODE)
    attempts = item.record.attempts - unfetched
    if failure is Failure.FETCH:
        countdown_s = storage_retry_in(rt, item, "fetch")
        if countdown_s is None:
            return fail(
                rt,
                item,
                RUNNING,
                ErrorKind.STORAGE,
                f"the provider could not download the inputs for longer than "
                f"{rt.settings.storage.retry_for_s:g} s; last: {error}",
                "Check that the bucket's presigned URLs are reachable from the provider "
                "(LIPDUB_STORAGE__ENDPOINT_URL), then retry the failed items.",
                extra={"errors": _history(item, prediction, error)},
            )
        return _submit_again(rt, item, prediction, error, countdown_s)
    if failure is Failure.TRANSIENT and attempts < rt.settings.worker.max_attempts:
        delay_s = rt.settings.worker.retry_delay_s * attempts
        return _submit_again(rt, item, prediction, error, delay_s)
    if failure is Failure.TRANSIENT:
        return fail(
            rt,
            item,
            RUNNING,
            ErrorKind.TRANSIENT,
            f"the provider failed the item {attempts} time(s); last: {error}",
            "The provider had trouble; retry the failed items later.",
            extra={"errors": _history(item, prediction, error)},
        )
    return fail(
        rt,
        item,
        RUNNING,
        ErrorKind.INPUT,
        error + (f" (code {prediction.code})" if prediction.code else ""),
        "Fix the input (a clearly visible face, a readable audio track) and run it again.",
        extra={"errors": _history(item, prediction, error)},
    )


def _history(item: Item, prediction: Prediction, error: str) -> list[dict[str, object]]:
    """The item's failed predictions so far, with this one."""
    history: list[dict[str, object]] = [dict(e) for e in item.record.errors]
    entry: dict[str, object] = {"prediction_id": prediction.id, "error": error}
    if prediction.code:
        entry["code"] = prediction.code
    history.append(entry)
    return history


def _submit_again(
    rt: Runtime, item: Item, prediction: Prediction, error: str, delay_s: float
) -> list[Next]:
    """Back to `ready` (this attempt's prediction failed, so a new submit pays only once
    for a result) and submit again after `delay_s`."""
    moved = rt.ledger.transition(
        item.batch_id,
        item.id,
        RUNNING,
        ItemState.READY,
        {
            "errors": _history(item, prediction, error),
            "prediction_id": "",
            "last_submit_error": error,
        },
        when=item.fence,
    )
    if not moved.ok:
        return []  # a copy of this poll already moved the item on to its next attempt
    return [*free_slot(rt, item), Next("submit", item.batch_id, item.id, rt.countdown(delay_s))]
