"""How the chaos scenarios count money paid twice: tasks for a pair beyond the first that were,
or may yet be, charged. A retry after a failed (uncharged) task is not a duplicate."""

from __future__ import annotations

from tests.chaos.outcome import duplicate_submissions, judge


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
