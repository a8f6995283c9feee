"""Storage faults: S3 down for a while then back, and errors on upload and on collect.
Retries are bounded and end in a clear failure; a half-written object is never taken for
an output; nothing is paid twice."""

from __future__ import annotations

import re

import pytest

from tests.chaos.outcome import charged_pairs, paid_pairs, sandbox_witness
from tests.chaos.s3_proxy import FaultyS3Proxy
from tests.chaos.storage_faults import media_key_of, outage_when_in_flight, storage_settings
from tests.conftest import start_sandbox
from tests.integration.stack import audit, plan, worker_processes, write_manifest

pytestmark = pytest.mark.slow

MODES = ("cut_off", "loop", "bounce", "silence", "remap")
ITEMS = [(f"s-{n}", 0.6 + 0.04 * n, 0.8, MODES[n % 5]) for n in range(10)]


def _nonzero(counts):
    return {k: v for k, v in counts.items() if v}


def test_s3_down_for_a_while_then_back_loses_nothing(tmp_path, make_stack, s3_server):
    manifest = write_manifest(tmp_path / "m", ITEMS)
    with (
        FaultyS3Proxy(s3_server.url) as proxy,
        start_sandbox(tmp_path, processing_fixed_s=0.4) as sandbox,
    ):
        stack = make_stack(sandbox, **storage_settings(proxy, retry_for_s=30.0))
        with worker_processes(stack.settings, tmp_path, concurrency=2):
            batch_id = stack.control.start(plan(manifest, stack.settings))
            # When S3 goes away for 3 s while items wait and others are at the provider
            at_outage = outage_when_in_flight(stack, proxy, batch_id, down_s=3.0)
            status = stack.wait(batch_id, timeout_s=90)
        witness = sandbox_witness(sandbox.url)
    # Then the outage hit a live batch, and every item still completed, each paid once (a
    # task whose inputs the provider could not fetch meanwhile failed, with code 1402)
    assert at_outage.get("pending"), at_outage
    assert _nonzero(status["counts"]) == {"completed": len(ITEMS)}, status
    charged = charged_pairs(witness["audit"], witness["tasks"])
    assert sorted(charged.values()) == [1] * len(ITEMS)


def test_inputs_the_provider_cannot_fetch_for_a_while_are_retried_until_s3_answers(
    tmp_path, make_stack, s3_server
):
    # Given S3 that answers the provider's downloads of our inputs 503 for a while: WaveSpeed
    # then creates the task and fails it with code 1402 (docs/error-codes)
    manifest = write_manifest(tmp_path / "m", ITEMS[:3])
    with FaultyS3Proxy(s3_server.url) as proxy, start_sandbox(tmp_path) as sandbox:
        stack = make_stack(sandbox, **storage_settings(proxy, retry_for_s=60.0))
        bucket = stack.settings.storage.bucket
        refused = proxy.fail("GET", rf"^/{bucket}/media/", times=4, status=503)
        with worker_processes(stack.settings, tmp_path, concurrency=2):
            batch_id = stack.control.start(plan(manifest, stack.settings))
            status = stack.wait(batch_id, timeout_s=120)
        witness = sandbox_witness(sandbox.url)
        report = stack.control.report(batch_id)["items_detail"]
    # Then tasks failed with 1402, and the items were submitted again until S3 answered:
    # every item completed, none charged twice, each failed prediction on its item's record
    assert refused.hits == 4
    unfetched = sorted(t["prediction_id"] for t in witness["tasks"] if t["code"] == 1402)
    assert unfetched, "no download failed: the fault missed the provider's fetches"
    assert _nonzero(status["counts"]) == {"completed": 3}, status
    assert sorted(charged_pairs(witness["audit"], witness["tasks"]).values()) == [1, 1, 1]
    recorded = sorted(f["prediction_id"] for item in report for f in item["failed_predictions"])
    assert recorded == unfetched
    assert {f["code"] for item in report for f in item["failed_predictions"]} == {1402}


def test_upload_and_collect_errors_are_bounded_then_clear_and_never_paid_twice(
    tmp_path, make_stack, s3_server
):
    manifest = write_manifest(tmp_path / "m", ITEMS[:4])
    with FaultyS3Proxy(s3_server.url) as proxy, start_sandbox(tmp_path) as sandbox:
        stack = make_stack(sandbox, **storage_settings(proxy))
        bucket = stack.settings.storage.bucket
        # Given S3 that answers some writes SlowDown (botocore retries those), refuses every
        # upload of one item's video, and every write of another item's output
        flaky = proxy.fail("PUT", rf"^/{bucket}/media/", times=3)
        video_key = media_key_of(tmp_path / "m" / "s-1.mp4")
        refused_upload = proxy.fail("*", rf"^/{bucket}/{re.escape(video_key)}$", status=500)
        refused_output = proxy.fail(
            "*", rf"^/{bucket}/outputs/[^/]+/s-2\.mp4$", status=500, code="InternalError"
        )
        with worker_processes(stack.settings, tmp_path, concurrency=2):
            # When the batch is started: its local files are put in the bucket from here
            batch_id = stack.control.start(plan(manifest, stack.settings))
            status = stack.wait(batch_id, timeout_s=90)
            report = {i["id"]: i for i in stack.control.report(batch_id)["items_detail"]}
            # Then the flaky writes were absorbed, and the two refused items failed clearly
            # while the others went on
            assert flaky.hits == 3 and refused_upload.hits and refused_output.hits
            assert _nonzero(status["counts"]) == {"completed": 2, "failed": 2}, status
            upload = report["s-1"]
            assert upload["error_kind"] == "storage" and "s-1.mp4" in upload["error"]
            assert not upload["prediction_id"], "an item whose input never arrived is not submitted"
            collect = report["s-2"]
            assert collect["error_kind"] == "output" and "could not be stored" in collect["error"]
            # And nothing half-written was taken for s-2's output
            assert not collect["output_key"]
            assert stack.keys(f"outputs/{batch_id}/") == [
                f"outputs/{batch_id}/s-0.mp4",
                f"outputs/{batch_id}/s-3.mp4",
            ]
            # When S3 is healthy again and the failed items are retried from the machine
            # that has the files (s-1's video is put in the bucket by the retry)
            proxy.clear()
            assert sorted(stack.control.retry_failed(batch_id)) == ["s-1", "s-2"]
            status = stack.wait(batch_id, timeout_s=60)
        entries = audit(sandbox.url)
    # Then both complete: s-2 collected its paid prediction again, nothing was paid twice
    assert _nonzero(status["counts"]) == {"completed": 4}, status
    assert sorted(paid_pairs(entries).values()) == [1, 1, 1, 1]
    again = {i["id"]: i for i in stack.control.report(batch_id)["items_detail"]}
    assert again["s-2"]["prediction_id"] == collect["prediction_id"]


def test_an_output_that_cannot_be_read_back_for_a_while_is_collected_again(
    tmp_path, make_stack, s3_server
):
    # Given S3 that fails the first reads of the copied output (the probe), as in an outage
    manifest = write_manifest(tmp_path / "m", ITEMS[:1])
    with FaultyS3Proxy(s3_server.url) as proxy, start_sandbox(tmp_path) as sandbox:
        stack = make_stack(sandbox, **storage_settings(proxy))
        bucket = stack.settings.storage.bucket
        unreadable = proxy.fail("GET", rf"^/{bucket}/outputs/", times=2, status=503)
        with worker_processes(stack.settings, tmp_path, concurrency=2):
            batch_id = stack.control.start(plan(manifest, stack.settings))
            status = stack.wait(batch_id, timeout_s=60)
        entries = audit(sandbox.url)
    # Then it was copied and probed again, not failed as a broken output, and paid once
    assert unreadable.hits == 2
    assert _nonzero(status["counts"]) == {"completed": 1}, status
    assert sorted(paid_pairs(entries).values()) == [1]


def test_a_file_s3_refuses_for_a_while_is_sent_again_by_its_start(tmp_path, make_stack, s3_server):
    # Given S3 refusing one file's upload more times than botocore's default tries (a
    # worker's client; the starting process's tries more, wiring.STARTER_S3_ATTEMPTS)
    manifest = write_manifest(tmp_path / "m", ITEMS[:2])
    with FaultyS3Proxy(s3_server.url) as proxy, start_sandbox(tmp_path) as sandbox:
        stack = make_stack(sandbox, **storage_settings(proxy))
        bucket = stack.settings.storage.bucket
        video_key = media_key_of(tmp_path / "m" / "s-0.mp4")
        refused = proxy.fail("PUT", rf"^/{bucket}/{re.escape(video_key)}$", times=6)
        with worker_processes(stack.settings, tmp_path, concurrency=2):
            # When the batch is started
            batch_id = stack.control.start(plan(manifest, stack.settings))
            status = stack.wait(batch_id, timeout_s=90)
    # Then the start sent it again after a while and every item completed
    assert refused.hits == 6
    assert _nonzero(status["counts"]) == {"completed": 2}, status
