"""How the chaos scenarios count money paid twice: tasks for a pair beyond the first that were,
or may yet be, charged. A retry after a failed (uncharged) task is not a duplicate."""

from __future__ import annotations

from decimal import Decimal

from tests.chaos.outcome import books_off_usd, duplicate_submissions, judge


def _accepted(pid: str, video: str = "v", outcome: str = "accepted") -> dict:
    return {"prediction_id": pid, "video_sha256": video, "audio_sha256": "a",
            "sync_mode": "loop", "outcome": outcome}  # fmt: skip


def test_a_retry_after_a_failed_task_is_not_a_duplicate():
    audit = [_accepted("p1"), _accepted("p2"), {"outcome": "rate_limited"}]
    tasks = [
        {"prediction_id": "p1", "status": "failed"},
        {"prediction_id": "p2", "status": "completed"},
    ]
    assert duplicate_submissions(audit, tasks) == 0


def test_two_live_tasks_for_one_pair_are_a_duplicate_whatever_the_answer_was():
    audit = [_accepted("p1", outcome="accepted_dropped"), _accepted("p2"), _accepted("p3", "w")]
    tasks = [
        {"prediction_id": "p1", "status": "processing"},
        {"prediction_id": "p2", "status": "completed"},
    ]
    assert duplicate_submissions(audit, tasks) == 1


def test_items_not_final_count_as_lost():
    report = {"items_detail": [
        {"state": "completed"}, {"state": "failed", "error_kind": "input"}, {"state": "running"},
    ]}  # fmt: skip
    outcome = judge("s", "f", report, {"audit": [], "tasks": []}, 4, 1.0)
    assert (outcome.completed, outcome.lost) == (1, 2)
    assert outcome.failed == {"failed/input": 1, "running/-": 1}


def test_books_meet_the_bill_with_ended_unbooked_charges_and_not_pending_ones():
    # A report: $1.00 spent, $0.40 unattributed, one timed-out item's prediction that ended
    # and was charged $0.27, another's still running (pending at its $0.54 estimate)
    audit = {
        "unattributed_usd": "0.40",
        "unbooked_usd": "0.81",
        "unbooked": [
            {"id": "p1", "pending": False, "cost_usd": "0.27"},
            {"id": "p2", "pending": True, "cost_usd": "0.54"},
        ],
    }
    report = {"spent_usd": "1.00", "audit": audit}
    # The bill holds what was charged so far: the books meet it
    assert books_off_usd(report, {"bill": {"billed_usd": "1.67"}}) == Decimal(0)
    # and a charge the books miss shows
    assert books_off_usd(report, {"bill": {"billed_usd": "1.94"}}) == Decimal("0.27")
