"""Batch control on the real parts: re-runs, budgets, cancel, failures, deadlines, retries."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import httpx
import pytest

from pipeline.errors import BudgetExceeded
from pipeline.media import MediaInspector
from pipeline.planning import plan_manifest
from pipeline.remote import RemoteProber
from tests.conftest import start_sandbox
from tests.fault_seeds import first_seed, submit_key
from tests.integration.stack import (
    FOUR_CLIPS,
    accepted_submits,
    budget_for_two,
    in_process_worker,
    plan,
    write_manifest,
)

pytestmark = pytest.mark.slow


def _s3_recording(s3_url: str) -> list[dict]:
    text = httpx.get(f"{s3_url}/moto-api/recorder/download-recording", timeout=10).text
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_a_rerun_submits_nothing_and_uploads_nothing(tmp_path, make_stack, s3_server):
    # Given a batch that finished
    manifest = write_manifest(tmp_path / "m", FOUR_CLIPS)
    with start_sandbox(tmp_path) as sandbox:
        stack = make_stack(sandbox)
        with in_process_worker(stack):
            first = stack.control.start(plan(manifest, stack.settings))
            stack.wait(first)
            paid = len(accepted_submits(sandbox.url))
            # When the same manifest runs again, with S3's requests recorded
            httpx.post(f"{s3_server.url}/moto-api/recorder/reset-recording", timeout=5)
            httpx.post(f"{s3_server.url}/moto-api/recorder/start-recording", timeout=5)
            second = stack.control.start(plan(manifest, stack.settings))
            status = stack.wait(second)
            httpx.post(f"{s3_server.url}/moto-api/recorder/stop-recording", timeout=5)
        again = len(accepted_submits(sandbox.url))
    # Then every item completed from the earlier outputs: no submit, no bytes uploaded
    assert paid == 4
    assert again == 4, "the re-run submitted"
    assert status["counts"]["completed"] == 4
    assert Decimal(status["spent_usd"]) == 0
    writes = [
        r
        for r in _s3_recording(s3_server.url)
        if r["method"] in ("PUT", "POST") and "X-Amz-Copy-Source" not in r["headers"]
    ]
    assert [w for w in writes if "/media/sha256/" in w["url"] or "?uploads" in w["url"]] == []
    assert all(f"/reports/{second}/" in w["url"] for w in writes), writes
    report = stack.control.report(second)
    assert {i["reused_from"].split(":")[0] for i in report["items_detail"]} == {first}
    assert stack.keys(f"outputs/{second}/") == [f"outputs/{second}/clip-{n}.mp4" for n in range(4)]


def test_budget_refuses_the_batch_or_skips_what_does_not_fit_then_retry(tmp_path, make_stack):
    manifest = write_manifest(tmp_path / "m", FOUR_CLIPS)
    with start_sandbox(tmp_path) as sandbox:
        stack = make_stack(sandbox, provider={"max_concurrent": 1})
        batch_plan, prices, budget = budget_for_two(manifest, stack.settings)
        # A budget under the estimate refuses the whole batch before any spend
        with pytest.raises(BudgetExceeded, match="over the budget"):
            stack.control.start(batch_plan, budget_usd=budget)
        with in_process_worker(stack):
            # With partial_budget, items run while the budget holds; the rest are skipped
            batch_id = stack.control.start(batch_plan, budget_usd=budget, partial_budget=True)
            status = stack.wait(batch_id)
            assert status["counts"]["completed"] == 2
            assert status["counts"]["skipped"] == 2
            assert Decimal(status["spent_usd"]) <= budget
            skipped = [
                i for i in stack.control.report(batch_id)["items_detail"] if i["state"] == "skipped"
            ]
            assert all("over the budget" in i["error"] and i["hint"] for i in skipped)
            assert len(accepted_submits(sandbox.url)) == 2
            # Retrying with a larger budget finishes only what was skipped
            retried = stack.control.retry_failed(batch_id, budget_usd=sum(prices))
            assert sorted(retried) == sorted(i["id"] for i in skipped)
            status = stack.wait(batch_id)
        assert status["counts"]["completed"] == 4
        assert len(accepted_submits(sandbox.url)) == 4
        assert Decimal(status["spent_usd"]) == sum(prices)
        assert Decimal(status["reserved_usd"]) == 0


def test_cancel_stops_new_submits_and_still_collects_those_in_flight(tmp_path, make_stack):
    items = [(f"c-{n}", 1.0, 1.0, "cut_off") for n in range(6)]
    manifest = write_manifest(tmp_path / "m", items)
    # Given starts spaced 1.5 s apart and a slow provider
    with start_sandbox(tmp_path, processing_fixed_s=1.0) as sandbox:
        stack = make_stack(sandbox, provider={"starts_per_minute": 1, "rate_window_s": 1.5})
        with in_process_worker(stack):
            batch_id = stack.control.start(plan(manifest, stack.settings))
            deadline = time.monotonic() + 20
            while not accepted_submits(sandbox.url) and time.monotonic() < deadline:
                time.sleep(0.05)
            # When the batch is cancelled after its first submit
            stack.control.cancel(batch_id)
            submitted_at_cancel = len(accepted_submits(sandbox.url))
            status = stack.wait(batch_id)
        paid = len(accepted_submits(sandbox.url))
    # Then what was submitted completed, and nothing more was submitted
    assert paid <= submitted_at_cancel + 1  # one submit may have been past its gates already
    assert status["counts"]["completed"] == paid
    assert status["counts"]["cancelled"] == 6 - paid
    assert status["cancelled"] is True


def test_failing_items_do_not_stop_the_batch_and_twins_are_paid_once(tmp_path, make_stack, media):
    # Given a batch where one video has no face, and one row repeats another's pair
    items = [(f"ok-{n}", 1.0 + n * 0.2, 1.0, "loop") for n in range(3)]
    manifest = write_manifest(tmp_path / "m", items)
    (tmp_path / "m" / "noface.mp4").write_bytes(media["video_noface"].read_bytes())
    (tmp_path / "m" / "noface.wav").write_bytes(media["audio_0_6s"].read_bytes())
    with manifest.open("a") as out:
        out.write("noface,noface.mp4,noface.wav,cut_off,de\n")
        out.write("twin,ok-0.mp4,ok-0.wav,loop,fr\n")
    with start_sandbox(tmp_path) as sandbox:
        stack = make_stack(sandbox)
        with in_process_worker(stack):
            batch_id = stack.control.start(plan(manifest, stack.settings))
            status = stack.wait(batch_id)
        submits = accepted_submits(sandbox.url)
    # Then the others complete; the faceless one fails once, with the provider's reason
    assert status["counts"]["completed"] == 4 and status["counts"]["failed"] == 1
    report = {i["id"]: i for i in stack.control.report(batch_id)["items_detail"]}
    failed = report["noface"]
    assert failed["state"] == "failed" and "face" in failed["error"].lower()
    assert failed["error_kind"] == "input" and failed["attempts"] == 1
    # and of the two rows with one pair, one paid and the other took its output instead of
    # paying again (either may claim the pair first: they are prepared side by side)
    [taker] = [i for i in ("ok-0", "twin") if report[i]["reused_from"]]
    [payer] = {"ok-0", "twin"} - {taker}
    assert report[taker]["reused_from"] == f"{batch_id}:{payer}"
    assert report[taker]["output_key"] == f"outputs/{batch_id}/{taker}.mp4"
    assert len(submits) == 4


def test_transient_failures_retry_within_bounds_and_input_errors_do_not(tmp_path, make_stack):
    # Given a provider that fails every task, with transient and input errors
    items = [(f"f-{n}", 1.0 + n * 0.1, 1.0, "cut_off") for n in range(6)]
    manifest = write_manifest(tmp_path / "m", items)
    firsts = [
        submit_key(tmp_path / f"m/{i}.mp4", tmp_path / f"m/{i}.wav", m, 0) for i, *_, m in items
    ]
    seed = first_seed(
        lambda faults: {faults.task_error(key)[1] >= 5000 for key in firsts} == {False, True},
        task_failure_rate=1.0,
    )
    with start_sandbox(tmp_path, faults={"task_failure_rate": 1.0, "seed": seed}) as sandbox:
        stack = make_stack(sandbox, worker={"max_attempts": 2})
        with in_process_worker(stack):
            batch_id = stack.control.start(plan(manifest, stack.settings))
            status = stack.wait(batch_id)
        submits = accepted_submits(sandbox.url)
    report = stack.control.report(batch_id)["items_detail"]
    # Then every item ends failed with a reason; only transient errors were tried again
    assert status["counts"]["failed"] == 6
    kinds = {i["error_kind"] for i in report}
    assert kinds == {"input", "transient"}, "the seed must give both kinds of error"
    for item in report:
        expected = 2 if item["error_kind"] == "transient" else len(item["prediction_ids"])
        assert item["attempts"] == expected <= 2
        assert item["hint"]
    assert len(submits) == sum(i["attempts"] for i in report)


def test_an_item_past_its_deadline_fails_timeout_and_keeps_its_prediction(tmp_path, make_stack):
    manifest = write_manifest(tmp_path / "m", FOUR_CLIPS[:1])
    with start_sandbox(tmp_path, faults={"never_finish_rate": 1.0}) as sandbox:
        stack = make_stack(sandbox, polling={"item_deadline_s": 1.5})
        with in_process_worker(stack):
            batch_id = stack.control.start(plan(manifest, stack.settings))
            stack.wait(batch_id)
            item = stack.control.report(batch_id)["items_detail"][0]
            assert item["state"] == "failed" and item["error_kind"] == "timeout"
            assert item["prediction_id"] and item["prediction_id"] in item["error"]
            # A re-run does not pay for the pair while that prediction may still finish
            rerun = stack.control.start(plan(manifest, stack.settings))
            assert stack.wait(rerun)["counts"]["needs_attention"] == 1
            held = stack.control.report(rerun)["items_detail"][0]
            assert f"{batch_id}:clip-0" in held["error"] and "force" in held["hint"]
            # Retrying polls the same prediction again instead of paying for a new one
            assert stack.control.retry_failed(batch_id) == ["clip-0"]
            assert stack.control.status(batch_id)["counts"]["running"] == 1
            stack.wait(batch_id)
        assert len(accepted_submits(sandbox.url)) == 1


def test_s3_inputs_are_used_in_place(tmp_path, make_stack, media):
    # Given a manifest whose inputs are already in a bucket
    with start_sandbox(tmp_path) as sandbox:
        stack = make_stack(sandbox)
        bucket = stack.settings.storage.bucket
        stack.s3.upload_file(str(media["video_2s"]), bucket, "catalog/ep.mp4")
        stack.s3.upload_file(str(media["audio_mp3"]), bucket, "catalog/ep-de.mp3")
        manifest = tmp_path / "s3.csv"
        manifest.write_text(
            f"id,video,audio,sync_mode\nep,s3://{bucket}/catalog/ep.mp4,s3://{bucket}/catalog/ep-de.mp3,loop\n"
        )
        batch_plan = plan_manifest(
            manifest,
            media=stack.settings.media,
            price=stack.settings.price,
            inspector=MediaInspector(),
            remote=RemoteProber(stack.s3),
        )
        with in_process_worker(stack):
            batch_id = stack.control.start(batch_plan)
            status = stack.wait(batch_id)
    # Then nothing was copied into media/, and the output is there
    assert status["counts"]["completed"] == 1
    assert stack.keys("media/") == []
    assert stack.keys(f"outputs/{batch_id}/") == [f"outputs/{batch_id}/ep.mp4"]
