"""The order a batch's items reach the provider in (`pipeline.send_order`): the longest videos
first by default, the manifest's order when asked; on the real parts (Redis, S3, the sandbox
over HTTP; one worker's steps on the test's clock)."""

from __future__ import annotations

import pytest

from pipeline import keys
from pipeline.flow import run_step
from tests.conftest import start_sandbox
from tests.integration.stack import accepted_submits, plan, stack_settings, write_manifest
from tests.integration.test_durability import Steps

pytestmark = pytest.mark.slow

# Rows listed short, long, middle, short: video seconds 1.0, 3.0, 2.0, 1.0.
ROWS = [("short", 1.0, 0.6, "cut_off"), ("long", 3.0, 0.7, "cut_off"),
        ("middle", 2.0, 0.8, "cut_off"), ("short2", 1.0, 0.9, "cut_off")]  # fmt: skip


@pytest.mark.parametrize(
    ("send_order", "expected"),
    [
        ("longest_first", ["long", "middle", "short", "short2"]),
        ("manifest", ["short", "long", "middle", "short2"]),
    ],
)
def test_items_reach_the_provider_longest_first_unless_the_manifests_order_is_asked_for(
    tmp_path, redis_url, s3_server, bucket, send_order, expected
):
    # Given a manifest whose longest clip is its second row (files put in the bucket one at
    # a time, so that each item is sent the moment its own files are there)
    with start_sandbox(tmp_path, processing_fixed_s=0.1) as sandbox:
        settings = stack_settings(
            sandbox_url=sandbox.url, redis_url=redis_url, s3_url=s3_server.url, bucket=bucket,
            batch={"send_order": send_order}, storage={"upload_files_at_once": 1},
            media={"cache_dir": tmp_path / "cache"},
        )  # fmt: skip
        s = Steps(settings)
        # When the batch runs
        batch_id = s.control.start(plan(write_manifest(tmp_path / "m", ROWS), settings))
        s.loop.run()
        records = s.rt.ledger.items(batch_id)
        submits = accepted_submits(sandbox.url)
        report = s.control.report(batch_id)
        s.close()
    assert {r["state"] for r in records} == {"completed"}
    # Then the provider got them in the send order
    prediction_of = {r["prediction_id"]: r["id"] for r in records}
    assert [prediction_of[e["prediction_id"]] for e in submits] == expected
    # And the report lists them by row either way
    assert [i["id"] for i in report["items_detail"]] == [row[0] for row in ROWS]


# Six rows, listed shortest first: video seconds 1.0 to 3.5.
LINE = [(f"v{n}", 1.0 + 0.5 * n, 0.6, "cut_off") for n in range(6)]


def test_items_waiting_for_a_slot_reach_the_providers_queue_in_line_whatever_runs_first(
    tmp_path, redis_url, s3_server, bucket
):
    # Given an account that processes 2 at once and queues 2 more (lipdub's queue ahead),
    # and six items: two wait in lipdub's line for a slot
    with start_sandbox(tmp_path, processing_fixed_s=0.2, max_concurrent=2) as sandbox:
        settings = stack_settings(
            sandbox_url=sandbox.url, redis_url=redis_url, s3_url=s3_server.url, bucket=bucket,
            provider={"max_concurrent": 2, "queue_ahead": 2},
            media={"cache_dir": tmp_path / "cache"},
        )  # fmt: skip
        s = Steps(settings)
        video_s = {row[0]: row[1] for row in LINE}
        batch_id = s.control.start(plan(write_manifest(tmp_path / "m", LINE), settings))
        # When the submit steps due are run together, shortest video first: the worst order
        # (workers racing to POST, whichever is answered first is queued first by the provider)
        for _ in range(1_000):
            s.loop.run(stop=lambda: s.loop.due("submit") and not s.loop.due("prepare"))
            due_now = sorted(s.loop.take_due("submit"), key=lambda step: video_s[str(step.item_id)])
            if not due_now:
                break
            for step in due_now:
                following = run_step(s.rt, "submit", batch_id, str(step.item_id))
                s.rt.ledger.expect(following, s.clock())
                for nxt in following:
                    s.loop.send(nxt)
        records = s.rt.ledger.items(batch_id)
        turn = s.rt.ledger.redis.get(keys.SLOT_TURN)
        waiting = s.rt.ledger.redis.zcard(keys.SLOT_WAITERS)
        submitted = accepted_submits(sandbox.url)
        s.close()
    assert {r["state"] for r in records} == {"completed"}
    prediction_of = {r["prediction_id"]: r["id"] for r in records}
    order = [prediction_of[e["prediction_id"]] for e in submitted]
    # Then the four sent at the start went as they came (nothing was waiting), and the two
    # that waited for a slot reached the provider first in line first (the longer video
    # first), though the shorter one's step would have run first: one POST at a time
    assert order[:4] == ["v0", "v1", "v2", "v3"]
    assert order[4:] == ["v5", "v4"]
    # And nobody is left holding the turn or waiting
    assert turn is None and waiting == 0
