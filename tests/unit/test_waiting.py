"""Every reason an unfinished item can wait for, from an item in that state."""

from __future__ import annotations

import pytest

from pipeline.waiting import FIELDS, GateFacts, Reason, reason_of, reasons

M = "b1:i1"


@pytest.mark.parametrize(
    ("record", "gates", "reason"),
    [
        ({"state": "pending"}, GateFacts(), Reason.QUEUE),
        ({"state": "pending", "waiting_on": "b0:i9"}, GateFacts(), Reason.SAME_PAIR),
        ({"state": "pending", "video": '{"kind": "local"}'}, GateFacts(), Reason.UPLOADING),
        (
            {"state": "pending", "video": '{"kind": "local"}', "inputs_ready": "1"},
            GateFacts(),
            Reason.QUEUE,
        ),
        ({"state": "pending", "video": '{"kind": "s3"}'}, GateFacts(), Reason.QUEUE),
        (
            {"state": "pending", "upload_errors_since": "6"},
            GateFacts(),
            Reason.STORAGE,
        ),
        ({"state": "ready", "waiting_on": "window"}, GateFacts(), Reason.SCHEDULE),
        ({"state": "ready", "waiting_on": "nightly budget"}, GateFacts(), Reason.SCHEDULE),
        ({"state": "ready", "fetch_errors_since": "6"}, GateFacts(), Reason.STORAGE),
        ({"state": "ready"}, GateFacts(cooling_s=4.0), Reason.COOL_DOWN),
        ({"state": "ready"}, GateFacts(slot_waiters=frozenset({M})), Reason.SLOTS),
        ({"state": "ready"}, GateFacts(starts={M: 12.0}), Reason.START),
        ({"state": "ready"}, GateFacts(starts={"b1:other": 12.0}), Reason.QUEUE),
        ({"state": "submitting"}, GateFacts(), Reason.SUBMIT),
        ({"state": "running"}, GateFacts(), Reason.PROVIDER),
        ({"state": "collecting"}, GateFacts(), Reason.COLLECT),
        ({"state": "collecting", "collect_errors_since": "9"}, GateFacts(), Reason.STORAGE),
        ({"state": "completed"}, GateFacts(cooling_s=4.0), None),
        ({"state": "needs_attention"}, GateFacts(), None),
    ],
)
def test_each_waiting_item_says_why(record, gates, reason):
    assert reason_of(record, M, gates) is reason
    # `lipdub status` reads only FIELDS of each unfinished item: they must be enough.
    read = {name: value for name, value in record.items() if name in FIELDS}
    assert reason_of(read, M, gates) is reason


def test_items_are_grouped_with_their_counts_and_earliest_due_step():
    records = [
        {"id": "a", "state": "running", "next_due_at": "200.0"},
        {"id": "b", "state": "running", "next_due_at": "150.0"},
        {"id": "c", "state": "ready", "next_due_at": "120.0"},
        {"id": "d", "state": "completed"},
        {"id": "e", "state": "pending"},
    ]
    groups = reasons("b1", records, GateFacts(slot_waiters=frozenset({"b1:c"})))
    assert [(g.reason, g.items, g.next_due_at) for g in groups] == [
        (Reason.QUEUE, 1, None),
        (Reason.SLOTS, 1, 120.0),
        (Reason.PROVIDER, 2, 150.0),
    ]
