"""Watch the account's predictions with one list call, so that one that has ended is looked
at within a second or two instead of at its next scheduled poll.

Looks at one prediction come no closer than 5 s apart (the provider's guidance for video
tasks), so a prediction that ends between two of them holds its concurrency slot until the
next: with an account whose slots decide the makespan, up to 5 s per item. While any
prediction is being followed, one `watch` step for the whole account asks the list call
(`POST /api/v3/predictions`, most recent first) every `polling.watch_every_s` for the
predictions created since the oldest one followed, and asks for the poll step, now, of each
of ours among them that has ended: completed, and failed too (a failed download, code 1402,
or no face: if only completed ones were asked for, a failed prediction would hold its slot
until its own scheduled look, twice the expected processing time). The poll reads the result as any poll
does: the list only says when to look, as a webhook does, so a list that lags, fails or
leaves a task out costs only time (the scheduled looks stay the safety net).

One request per interval for the whole account, however many predictions run (up to
`WATCH_PAGES` pages of 100 when many ended at once; the ones still running are on the first
pages, at most the account's slots). The chain ends when nothing is
followed; the next accepted submit starts it again (the due set keeps one copy).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from pipeline import keys
from pipeline.errors import ProviderError, ProviderRateLimited
from pipeline.provider.models import is_terminal
from pipeline.runtime import Runtime
from pipeline.states import ItemState
from pipeline.steps import Next

log = logging.getLogger("lipdub.watch")

WATCH = "watch"
ACCOUNT = "account"
"""The watch step's batch id: there is one watch for the account (per queue), not per batch."""
WATCH_PAGES = 3
"""At most this many pages of 100 per look (the most recent completions come first)."""
AFTER_ERROR_S = 30.0
"""After a failed list call the watch waits this long (a key without list rights would
otherwise log a warning every second)."""
SEEN_TTL_S = 120
"""How long a prediction the watch has asked a poll for is not asked for again."""


def watch_step(rt: Runtime) -> list[Next]:
    """The watch, due one interval from now (none when it is turned off)."""
    every_s = rt.settings.polling.watch_every_s
    return [Next(WATCH, ACCOUNT, None, rt.countdown(every_s))] if every_s > 0 else []


def watch(rt: Runtime) -> list[Next]:
    """One look at the account's predictions: a poll now for each of ours that ended (completed
    or failed), and the next look (none when nothing is followed any more)."""
    if rt.settings.polling.watch_every_s <= 0:
        return []
    members = [keys.slot_member_ids(m) for m in rt.gates.holders()]
    if not members:
        return []
    followed: dict[str, tuple[str, str]] = {}
    oldest_s = rt.clock()
    fields = ("state", "prediction_id", "submitted_at")
    for member, record in zip(members, rt.ledger.fields_of(members, fields), strict=True):
        if record.get("state") == ItemState.RUNNING.value and record.get("prediction_id"):
            followed[record["prediction_id"]] = member
            oldest_s = min(oldest_s, float(record.get("submitted_at") or oldest_s))
    again = watch_step(rt)
    if not followed:
        return again  # slots held by submits: their predictions will be followed soon
    for gate in (rt.gates.cooling(), rt.gates.take_poll()):
        if not gate.passed:
            return [Next(WATCH, ACCOUNT, None, rt.countdown(gate.wait_s))]
    since = datetime.fromtimestamp(oldest_s - rt.settings.provider.clock_skew_s, tz=UTC)
    ended: list[Next] = []
    try:
        for prediction in rt.provider.iter_predictions(
            created_after=since,
            model=rt.settings.provider.model_path,
            max_pages=WATCH_PAGES,
        ):
            ours = followed.get(prediction.id)
            ended_now = is_terminal(prediction.status)
            if ours is not None and ended_now and rt.ledger.first_sight(prediction.id, SEEN_TTL_S):
                ended.append(Next("poll", *ours, extra=True))
    except ProviderRateLimited as err:
        return [Next(WATCH, ACCOUNT, None, rt.countdown(rt.gates.cool_down(err.retry_after_s)))]
    except ProviderError as err:
        log.warning(
            "the list call failed (%s); the scheduled looks go on, the watch looks again in %.0f s",
            type(err).__name__,
            AFTER_ERROR_S,
        )
        return [Next(WATCH, ACCOUNT, None, rt.countdown(AFTER_ERROR_S))]
    return ended + again
