"""The account's limits hold across real worker processes, and ambiguous submits are settled
through the list call without paying twice."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import start_sandbox
from tests.fault_seeds import first_seed, submit_key
from tests.integration.stack import (
    accepted_submits,
    in_process_worker,
    plan,
    worker_processes,
    write_manifest,
)

pytestmark = pytest.mark.slow


def _stats(sandbox_url: str) -> dict[str, int]:
    return dict(httpx.get(f"{sandbox_url}/_sandbox/stats", timeout=5).json())


def test_limits_hold_across_two_worker_processes(tmp_path, make_stack):
    # Given a provider allowing 3 starts per 2 s window and 10 tasks at once,
    # and our account limits: the same starts, and 3 predictions in flight
    items = [(f"g-{n}", 1.0 + n * 0.1, 1.0, "cut_off") for n in range(9)]
    manifest = write_manifest(tmp_path / "m", items)
    with start_sandbox(
        tmp_path, starts_per_minute=3, rate_window_s=2.0, max_concurrent=10, processing_fixed_s=1.0
    ) as sandbox:
        stack = make_stack(
            sandbox,
            provider={
                "starts_per_minute": 3,
                "rate_window_s": 2.0,
                "start_margin_s": 0.2,
                "max_concurrent": 3,
                "queue_ahead": 0,
            },
        )
        # When two real prefork worker processes (2 children each) run the batch
        with worker_processes(stack.settings, tmp_path, count=2, concurrency=2):
            batch_id = stack.control.start(plan(manifest, stack.settings))
            status = stack.wait(batch_id, timeout_s=90)
        stats = _stats(sandbox.url)
        submits = accepted_submits(sandbox.url)
    # Then every item completed, the provider never refused a start, no window held more
    # starts than allowed, and never more than 3 predictions were in flight
    assert status["counts"]["completed"] == 9, status
    assert len(submits) == 9
    assert stats.get("rate_limited", 0) == 0
    assert stats["max_starts_in_window"] <= 3
    assert stats["peak_in_flight"] <= 3
    assert stats["peak_in_flight"] >= 2, "the test did not exercise concurrency"


def test_the_next_window_is_timed_from_the_answers_of_slow_submits(tmp_path, make_stack):
    # Given a provider allowing 2 starts per 3 s window that answers each submit 1 s after
    # it arrives and times the start's window from that answer (the sandbox's default),
    items = [(f"w-{n}", 1.0 + n * 0.1, 1.0, "cut_off") for n in range(6)]
    manifest = write_manifest(tmp_path / "m", items)
    with start_sandbox(
        tmp_path,
        starts_per_minute=2,
        rate_window_s=3.0,
        max_concurrent=10,
        faults={"slow_rate": 1.0, "slow_s": 1.0},
    ) as sandbox:
        # and our account's limits as a user sets them: the starts, with no margin (the default)
        stack = make_stack(
            sandbox,
            provider={
                "starts_per_minute": 2,
                "rate_window_s": 3.0,
                "start_margin_s": None,
                "max_concurrent": 6,
            },
        )
        assert stack.settings.provider.start_window_s == 3.0
        # When a worker runs the batch (three windows of starts)
        with in_process_worker(stack):
            batch_id = stack.control.start(plan(manifest, stack.settings))
            status = stack.wait(batch_id, timeout_s=90)
        stats = _stats(sandbox.url)
    # Then every item completed, and the provider never refused a start: each window was
    # timed from the answers of the starts before it, not from when they were planned
    assert status["counts"]["completed"] == 6, status
    assert stats.get("rate_limited", 0) == 0
    assert stats["max_starts_in_window"] == 2


def test_dropped_submits_are_adopted_from_a_list_that_shows_inputs(tmp_path, make_stack):
    # Given a provider that creates each task and then drops the connection
    items = [(f"d-{n}", 1.0 + n * 0.1, 1.0, "bounce") for n in range(3)]
    manifest = write_manifest(tmp_path / "m", items)
    # (a kinder provider than WaveSpeed: its list shows each prediction's inputs)
    with start_sandbox(
        tmp_path, list_includes_inputs=True, faults={"submit_drop_rate": 1.0}
    ) as sandbox:
        stack = make_stack(sandbox)
        with in_process_worker(stack):
            batch_id = stack.control.start(plan(manifest, stack.settings))
            status = stack.wait(batch_id)
        submits = accepted_submits(sandbox.url)
    # Then each item was submitted once, found in the list, and completed
    assert status["counts"]["completed"] == 3
    assert len(submits) == 3
    assert {s["outcome"] for s in submits} == {"accepted_dropped"}
    report = stack.control.report(batch_id)["items_detail"]
    assert all(i["reconciled"] for i in report)
    assert sorted(i["prediction_id"] for i in report) == sorted(s["prediction_id"] for s in submits)


def test_dropped_submits_are_told_apart_without_inputs_by_time_and_duration(tmp_path, make_stack):
    # Given a provider that drops every submit's answer and whose list hides the inputs (as
    # WaveSpeed's does), and three items whose outputs last 1.0, 1.3 and 1.6 s
    items = [(f"t-{n}", 1.0 + n * 0.3, 3.0, "cut_off") for n in range(3)]
    manifest = write_manifest(tmp_path / "m", items)
    with start_sandbox(tmp_path, faults={"submit_drop_rate": 1.0}) as sandbox:
        stack = make_stack(sandbox)
        with in_process_worker(stack):
            batch_id = stack.control.start(plan(manifest, stack.settings))
            status = stack.wait(batch_id)
        submits = accepted_submits(sandbox.url)
    # Then each was posted once, its prediction adopted without a person, and completed
    assert status["counts"]["completed"] == 3, status
    assert len(submits) == 3
    report = stack.control.report(batch_id)["items_detail"]
    assert all(i["reconciled"] for i in report)
    assert sorted(i["prediction_id"] for i in report) == sorted(s["prediction_id"] for s in submits)


def test_lost_submits_nothing_tells_apart_need_attention_and_are_never_reposted(
    tmp_path, make_stack
):
    # Given two lost submits sent moments apart whose outputs last the same (bounce: the
    # audio's 1.0 s), and a list that hides the inputs
    items = [("blind-a", 1.0, 1.0, "bounce"), ("blind-b", 1.1, 1.0, "bounce")]
    manifest = write_manifest(tmp_path / "m", items)
    with start_sandbox(tmp_path, faults={"submit_drop_rate": 1.0}) as sandbox:
        stack = make_stack(sandbox)
        with in_process_worker(stack):
            batch_id = stack.control.start(plan(manifest, stack.settings))
            status = stack.wait(batch_id)
            # retry_failed leaves them alone unless asked explicitly
            assert stack.control.retry_failed(batch_id) == []
        submits = accepted_submits(sandbox.url)
    # Then a person decides, shown the two predictions that could be either
    assert status["counts"]["needs_attention"] == 2, status
    assert len(submits) == 2
    made = sorted(s["prediction_id"] for s in submits)
    for item in stack.control.report(batch_id)["items_detail"]:
        assert item["error_kind"] == "unresolved_submit"
        assert sorted(c["id"] for c in item["evidence"]["candidates"]) == made
        assert "does not re-post" in item["hint"]


def test_a_submit_that_created_nothing_is_posted_again_after_the_list_says_so(tmp_path, make_stack):
    # Given a provider whose first submit of the pair answers 500 without creating a task,
    # and whose second is accepted
    manifest = write_manifest(tmp_path / "m", [("again", 1.0, 1.0, "remap")])
    first, second = (
        submit_key(tmp_path / "m/again.mp4", tmp_path / "m/again.wav", "remap", n) for n in (0, 1)
    )
    seed = first_seed(
        lambda faults: (
            faults.hits("submit_error", first) and not faults.hits("submit_error", second)
        ),
        submit_error_rate=0.5,
    )
    with start_sandbox(tmp_path, faults={"submit_error_rate": 0.5, "seed": seed}) as sandbox:
        stack = make_stack(sandbox, provider={"submit_timeout_s": 1.0})
        with in_process_worker(stack):
            batch_id = stack.control.start(plan(manifest, stack.settings))
            status = stack.wait(batch_id)
        entries = httpx.get(f"{sandbox.url}/_sandbox/audit", timeout=5).json()
    outcomes = [e["outcome"] for e in entries]
    # Then it completed with exactly one task created, after the refused attempt
    assert status["counts"]["completed"] == 1
    assert outcomes == ["error_not_created", "accepted"], entries


def test_a_freed_slot_wakes_the_next_item_at_once(tmp_path, make_stack, sandbox):
    # Given one slot and one queued ahead (the default) for four items, and a safety-net
    # recheck (the longest countdown) of 100 s
    items = [(f"s-{n}", 0.6 + n * 0.08, 0.6, "cut_off") for n in range(4)]  # four distinct pairs
    manifest = write_manifest(tmp_path / "m", items)
    stack = make_stack(
        sandbox,
        provider={"max_concurrent": 1},
        worker={"max_countdown_s": 100.0, "visibility_timeout_s": 300},
    )
    with in_process_worker(stack):
        batch_id = stack.control.start(plan(manifest, stack.settings))
        # Then all four complete long before any waiter's recheck would have come due:
        # each item that frees the slot wakes the next one waiting for it
        status = stack.wait(batch_id, timeout_s=60)
    assert status["counts"]["completed"] == 4
    report = stack.control.report(batch_id)
    starts = sorted(i["phases"]["provider"]["start"] for i in report["items_detail"])
    assert starts[-1] - starts[0] < 50, starts
    # and never more than the slot and the one queued ahead of it (the default) were sent
    assert _stats(sandbox.url)["peak_in_flight"] == 2


def test_the_providers_queue_holds_the_next_item_so_no_slot_idles(tmp_path, make_stack):
    # Given an account that processes 2 predictions at once and queues the ones sent beyond
    # (as WaveSpeed documents), lipdub's default queue ahead (as many as the slots), and six
    # items of about 3 s each (time enough for lipdub to see an end and send the next)
    items = [(f"q-{n}", 0.6 + n * 0.08, 0.6, "cut_off") for n in range(6)]
    manifest = write_manifest(tmp_path / "m", items)
    with start_sandbox(tmp_path, max_concurrent=2, processing_fixed_s=3.0) as sandbox:
        stack = make_stack(sandbox, provider={"max_concurrent": 2})
        with in_process_worker(stack):
            batch_id = stack.control.start(plan(manifest, stack.settings))
            status = stack.wait(batch_id, timeout_s=60)
        stats = _stats(sandbox.url)
        tasks = httpx.get(f"{sandbox.url}/_sandbox/tasks", timeout=5).json()
    assert status["counts"]["completed"] == 6, status
    # Then lipdub kept 2 processing and 2 waiting in the provider's queue
    assert (stats["peak_in_flight"], stats["peak_processing"]) == (4, 2)
    # and each prediction after the first two started the moment another ended: no slot
    # waited for lipdub to see an end and send the next (that takes a look and a POST)
    ends = sorted(t["finished_at"] for t in tasks)
    starts = sorted(t["started_at"] for t in tasks)[2:]
    idle_s = [round(start - max(e for e in ends if e <= start + 0.05), 3) for start in starts]
    assert max(idle_s) < 0.2, idle_s
