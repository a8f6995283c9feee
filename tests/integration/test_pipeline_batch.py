"""Batches end to end on the real parts: Redis, Celery workers, moto's S3, the sandbox."""

from __future__ import annotations

import math
from collections import Counter
from decimal import Decimal

import pytest

from pipeline.media import probe
from pipeline.sync_modes import SyncMode, expected_output_s, within_one_frame
from tests.conftest import start_sandbox
from tests.integration.stack import (
    ALL_MODES_ITEMS,
    accepted_submits,
    in_process_worker,
    plan,
    write_manifest,
)

pytestmark = pytest.mark.slow


def test_twenty_items_over_all_modes_end_in_s3_at_the_right_duration(tmp_path, make_stack):
    # Given 20 items covering every sync mode, with audio longer and shorter than the video
    manifest = write_manifest(tmp_path / "batch", ALL_MODES_ITEMS)
    with start_sandbox(tmp_path, max_concurrent=8) as sandbox:
        stack = make_stack(sandbox)
        batch_plan = plan(manifest, stack.settings)
        # When the batch runs on an in-process Celery worker
        with in_process_worker(stack):
            batch_id = stack.control.start(batch_plan, name="all-modes")
            status = stack.wait(batch_id, timeout_s=90)
        submits = accepted_submits(sandbox.url)
        tasks = sandbox.engine.task_states()
    # Then every item completed, once each, with its output in the bucket at the mode's length
    assert status["counts"]["completed"] == 20, status
    assert len(submits) == 20
    report = stack.control.report(batch_id)
    for item in report["items_detail"]:
        video_s, audio_s = item["video_s"], item["audio_s"]
        expected = expected_output_s(SyncMode(item["sync_mode"]), video_s, audio_s)
        url = stack.storage.presign(item["output_key"])
        actual = probe(url).duration_s
        assert within_one_frame(actual, expected), (item["id"], actual, expected)
        assert item["output_key"] == f"outputs/{batch_id}/{item['id']}.mp4"
        # What the provider charged for its prediction: $0.134 per second of input video,
        # whole seconds rounded up (the sandbox's documented formula)
        charged = {t["prediction_id"]: Decimal(t["charged_usd"]) for t in tasks}
        per_second = Decimal("0.134") * max(1, math.ceil(round(video_s, 3)))
        assert Decimal(item["cost_usd"]) == charged[item["prediction_id"]] == per_second
        assert set(item["phases"]) >= {"upload", "collect"}
    assert stack.keys(f"reports/{batch_id}/") == [
        f"reports/{batch_id}/report.{ext}" for ext in ("csv", "html", "json", "md")
    ]
    spent = Decimal(status["spent_usd"])
    assert spent == sum(Decimal(i["cost_usd"]) for i in report["items_detail"])
    assert Counter(i["sync_mode"] for i in report["items_detail"]) == dict.fromkeys(
        ("cut_off", "loop", "bounce", "silence", "remap"), 4
    )


def test_ids_in_any_script_run_end_to_end(tmp_path, make_stack, sandbox):
    # Given items whose ids (and file names) are Japanese and German
    items = [("エピソード-1", 1.0, 1.0, "cut_off"), ("Überfall-07", 1.2, 1.0, "loop")]
    manifest = write_manifest(tmp_path / "m", items)
    stack = make_stack(sandbox)
    with in_process_worker(stack):
        batch_id = stack.control.start(plan(manifest, stack.settings))
        status = stack.wait(batch_id, timeout_s=60)
    # Then they complete, their outputs stored under their own names
    assert status["counts"]["completed"] == 2, status
    assert sorted(stack.keys(f"outputs/{batch_id}/")) == sorted(
        f"outputs/{batch_id}/{item_id}.mp4" for item_id, *_ in items
    )
