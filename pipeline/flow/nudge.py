"""Bring looks forward when a finished prediction shows that others should be done too.

A prediction's looks are planned when it is submitted, from what was known then. When one is
found finished later than its first look aimed (a scout while nothing was learned, or a
provider slower than it had been), the line learned with it may say that other running
predictions of the same sync mode are done already: their next looks are brought forward to
when the line says so, never sooner than the floor after their last look. The due set keeps
the earlier of two times for a step, so a look already sooner stays, and a look brought
forward replaces the later one instead of adding a second.

Only such a late finish reads the running predictions (at most the account's concurrency
of them, in one round trip): a provider whose times are learned costs nothing here.
"""

from __future__ import annotations

import json

from pipeline import keys
from pipeline.flow.poll_timing import first_poll_delay_s
from pipeline.runtime import Runtime
from pipeline.states import ItemState
from pipeline.steps import Next

FIELDS = ("state", "sync_mode", "video", "submitted_at", "last_unfinished_at", "queued")


def nudged_polls(rt: Runtime, sync_mode: str, *, besides: str = "") -> list[Next]:
    """The looks at running predictions of `sync_mode` (other than the item `besides`)
    that the line learned now puts sooner: each a poll at its new time."""
    polling = rt.settings.polling
    line = rt.times.line(rt.settings.provider.model_path, sync_mode)
    if line is None:
        return []
    members = [keys.slot_member_ids(m) for m in rt.gates.holders() if m != besides]
    now = rt.clock()
    steps: list[Next] = []
    for (batch_id, item_id), fields in zip(
        members, rt.ledger.fields_of(members, FIELDS), strict=True
    ):
        if (
            fields.get("state") != ItemState.RUNNING.value
            or fields.get("sync_mode") != sync_mode
            or not fields.get("submitted_at")
        ):
            continue
        submitted_at = float(fields["submitted_at"])
        video_s = float((json.loads(fields.get("video") or "{}")).get("duration_s") or 0.0)
        looked_at = float(fields.get("last_unfinished_at") or submitted_at)
        look_at = max(
            submitted_at
            + first_poll_delay_s(polling, video_s, line, queued=fields.get("queued") == "1"),
            looked_at + polling.first_poll_min_s,
        )
        steps.append(Next("poll", batch_id, item_id, rt.countdown(look_at - now), extra=True))
    return steps
