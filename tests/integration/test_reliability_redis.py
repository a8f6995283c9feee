"""Redis restarted mid-batch: the ledger and the queue come back from the AOF, workers
reconnect, and the batch completes with nothing lost and nothing paid twice."""

from __future__ import annotations

import pytest

from pipeline import keys
from pipeline.local_servers import RedisServer
from tests.chaos.kills import kill_settings
from tests.chaos.outcome import paid_pairs
from tests.chaos.redis_restart import run_with_redis_restarts
from tests.conftest import start_sandbox
from tests.integration.stack import (
    Stack,
    audit,
    plan,
    stack_settings,
    worker_processes,
    write_manifest,
)

pytestmark = pytest.mark.slow

ITEMS = [(f"r-{n}", 0.8 + 0.2 * (n % 3), 1.0, mode) for n, mode in enumerate(
    ["cut_off", "loop", "bounce", "silence", "remap", "cut_off", "loop", "bounce"]
)]  # fmt: skip


def test_a_restarted_redis_loses_nothing(tmp_path, s3_server, bucket):
    # Given a Redis of this test's own, with AOF on, as docker-compose runs it
    with (
        RedisServer(tmp_path / "redis", appendonly=True) as server,
        start_sandbox(tmp_path, processing_fixed_s=0.5) as sandbox,
    ):
        settings = stack_settings(
            sandbox_url=sandbox.url,
            redis_url=server.url,
            s3_url=s3_server.url,
            bucket=bucket,
            **kill_settings(),
        )
        stack = Stack(settings)
        manifest = write_manifest(tmp_path / "m", ITEMS)
        # When Redis is stopped and started again while items are in flight
        batch_id, restarts, status = run_with_redis_restarts(
            stack, server, plan(manifest, settings), tmp_path, timeout_s=90
        )
        entries = audit(sandbox.url)
        report = stack.control.report(batch_id)
        stack.close()
    # Then it really restarted mid-batch, and every item completed, each paid for once
    assert restarts == 1
    assert {k: v for k, v in status["counts"].items() if v} == {"completed": len(ITEMS)}, status
    assert sorted(paid_pairs(entries).values()) == [1] * len(ITEMS)
    assert report["state"] == "finished"


def test_steps_whose_messages_the_broker_lost_are_sent_again(tmp_path, make_stack):
    # Given a started batch whose task messages are all lost before any worker takes them
    manifest = write_manifest(tmp_path / "m", ITEMS[:3])
    with start_sandbox(tmp_path) as sandbox:
        stack = make_stack(sandbox, **kill_settings())
        batch_id = stack.control.start(plan(manifest, stack.settings))
        # (each upload went to the broker from the starting process, or waits in the feed
        # for a pump: lost from both)
        feed = keys.feed(stack.settings.worker.queue)
        waiting = stack.redis.llen(feed)
        stack.redis.delete(feed)
        assert waiting + stack.app.control.purge() == 3
        # When a worker runs: its sweeper finds the steps overdue past the time limit
        with worker_processes(stack.settings, tmp_path, concurrency=2):
            status = stack.wait(batch_id, timeout_s=60)
        entries = audit(sandbox.url)
    # Then every item completed anyway, each paid once, and the worker said what it re-sent
    assert {k: v for k, v in status["counts"].items() if v} == {"completed": 3}, status
    assert sorted(paid_pairs(entries).values()) == [1, 1, 1]
    assert "sent 3 step(s) again whose message was lost" in (tmp_path / "worker-0.log").read_text()
