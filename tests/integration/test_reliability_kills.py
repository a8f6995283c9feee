"""SIGKILL a worker at every point of an item's life: the batch still completes, every item
is paid for exactly once (the sandbox's audit log says so), and its outputs and reports are
whole. Real `celery worker` subprocesses, real Redis, moto's S3 server, the sandbox."""

from __future__ import annotations

import json
import time

import pytest

from pipeline import keys
from pipeline.media import probe
from tests.chaos.crash import CRASH_POINTS, QUEUED_POST
from tests.chaos.kills import kill_settings, run_with_kills
from tests.chaos.outcome import paid_pairs
from tests.conftest import start_sandbox
from tests.integration.stack import audit, plan, worker_processes, write_manifest

pytestmark = pytest.mark.slow

ITEMS = [("k-a", 1.0, 1.4, "bounce"), ("k-b", 1.2, 0.8, "loop"), ("k-c", 0.8, 0.8, "remap")]


@pytest.mark.parametrize("point", list(CRASH_POINTS))
def test_a_worker_killed_at_any_point_loses_nothing_and_pays_once(tmp_path, make_stack, point):
    # Given a batch of three items and a worker that dies, main process and pool, at `point`
    manifest = write_manifest(tmp_path / "m", ITEMS)
    with start_sandbox(tmp_path) as sandbox:
        stack = make_stack(sandbox, **kill_settings())
        # When the batch runs until the kill, then on a healthy worker
        batch_id, kills, status = run_with_kills(
            stack, plan(manifest, stack.settings), tmp_path, [point], timeout_s=60
        )
        entries = audit(sandbox.url)
    # Then the kill happened where it was meant to, and took the whole worker down
    assert [(k.point, k.worker_gone) for k in kills] == [(point, True)]
    # And every item completed, each pair paid for exactly once
    assert {k: v for k, v in status["counts"].items() if v} == {"completed": 3}, status
    assert sorted(paid_pairs(entries).values()) == [1, 1, 1]
    report = stack.control.report(batch_id)
    # And each output is a whole video of the right length, and the reports are all there
    for item in report["items_detail"]:
        info = probe(stack.storage.presign(item["output_key"]))
        assert abs(info.duration_s - item["expected_output_s"]) < 0.05, item["id"]
    assert stack.keys(f"reports/{batch_id}/") == [
        f"reports/{batch_id}/report.{ext}" for ext in ("csv", "html", "json", "md")
    ]
    written = json.loads(stack.storage.get_bytes(f"reports/{batch_id}/report.json"))
    assert [i["state"] for i in written["items_detail"]] == ["completed"] * 3


@pytest.mark.parametrize("point", ["after_post", "collect", "finalize"])
def test_a_pool_process_killed_mid_task_is_run_again_at_once(tmp_path, make_stack, point):
    # Given a worker whose pool process (not the worker) dies at `point`, as the OOM killer does
    manifest = write_manifest(tmp_path / "m", ITEMS)
    with start_sandbox(tmp_path) as sandbox:
        stack = make_stack(sandbox, **kill_settings())
        _batch_id, kills, status = run_with_kills(
            stack, plan(manifest, stack.settings), tmp_path, [point], scope="pool", timeout_s=60
        )
        entries = audit(sandbox.url)
    # Then the worker survived, Celery ran the task again, and nothing was paid twice
    assert [(k.point, k.worker_gone) for k in kills] == [(point, False)]
    assert {k: v for k, v in status["counts"].items() if v} == {"completed": 3}, status
    assert sorted(paid_pairs(entries).values()) == [1, 1, 1]


def test_lipdub_worker_starts_its_celery_worker_again_when_it_dies(tmp_path, make_stack):
    import signal

    import psutil

    # Given `lipdub worker` (supervised) whose Celery worker is SIGKILLed before any work
    manifest = write_manifest(tmp_path / "m", ITEMS)
    with start_sandbox(tmp_path) as sandbox:
        stack = make_stack(sandbox, **kill_settings())
        with worker_processes(stack.settings, tmp_path, supervised=True) as (supervisor,):
            log = tmp_path / "worker-0.log"
            _wait_for(lambda: "ready." in log.read_text())
            (celery_main,) = psutil.Process(supervisor.pid).children()
            celery_main.send_signal(signal.SIGKILL)
            # When a batch then runs
            batch_id = stack.control.start(plan(manifest, stack.settings))
            status = stack.wait(batch_id, timeout_s=60)
            (again,) = psutil.Process(supervisor.pid).children()
        entries = audit(sandbox.url)
    # Then the supervisor started a new Celery worker, which did the work, paying once each
    assert again.pid != celery_main.pid
    assert "exited with -9; starting it again" in log.read_text()
    assert {k: v for k, v in status["counts"].items() if v} == {"completed": 3}, status
    assert sorted(paid_pairs(entries).values()) == [1, 1, 1]


def _wait_for(condition, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_worker_killed_holding_the_turn_does_not_stop_the_line(tmp_path, make_stack):
    # Given an account that processes one at a time and queues two more (lipdub's queue
    # ahead), items that take 3 s, and a worker that dies just before its second POST: the
    # one to the provider's queue, which it sends holding the turn (`pipeline.gates`)
    manifest = write_manifest(tmp_path / "m", ITEMS)
    turn_at_kill: list[str | None] = []
    with start_sandbox(tmp_path, processing_fixed_s=3.0, max_concurrent=1) as sandbox:
        stack = make_stack(
            sandbox, provider={"max_concurrent": 1, "queue_ahead": 2}, **kill_settings()
        )
        # When the batch runs until the kill, then on a healthy worker
        batch_id, kills, status = run_with_kills(
            stack,
            plan(manifest, stack.settings),
            tmp_path,
            [QUEUED_POST.name],
            timeout_s=90,
            on_kill=lambda _kill: turn_at_kill.append(stack.redis.get(keys.SLOT_TURN)),
        )
        entries = audit(sandbox.url)
        turn_after = stack.redis.get(keys.SLOT_TURN)
    # Then the worker died holding the turn, for an item of the batch whose intent was written
    assert [(k.point, k.worker_gone) for k in kills] == [(QUEUED_POST.name, True)]
    (holder,) = turn_at_kill
    assert holder is not None and holder.startswith(f"{batch_id}:")
    # And the line went on: every item completed, each pair paid for exactly once
    assert {k: v for k, v in status["counts"].items() if v} == {"completed": 3}, status
    assert sorted(paid_pairs(entries).values()) == [1, 1, 1]
    assert turn_after is None
