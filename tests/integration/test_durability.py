"""Durable intent: nothing is paid for on an intent a Redis host crash could lose.

On the real parts: Valkey/Redis servers of the test's own (with AOF, without, with a
replica), `lipdub worker` as a process, the pipeline's own steps against the sandbox over
HTTP. The host crash itself (an AOF cut back after a SIGKILL) is `make chaos`'s scenario.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import redis

from pipeline.batches import BatchControl
from pipeline.durability import DurableWrites
from pipeline.errors import DurabilityError
from pipeline.flow import run_step
from pipeline.ledger import Ledger
from pipeline.local_servers import RedisServer
from pipeline.runtime import Runtime
from pipeline.settings import LedgerSettings, Settings
from pipeline.steps import Next
from tests.conftest import start_sandbox
from tests.integration.stack import (
    ROOT,
    accepted_submits,
    plan,
    settings_env,
    stack_settings,
    write_manifest,
)
from tests.integration.stepping import StepLoop, TestClock

ITEMS = [("d0", 1.0, 1.0, "cut_off"), ("d1", 1.2, 1.2, "cut_off")]


def waits_sent(url: str, command: str) -> int:
    """How many times the server has run `command` (INFO commandstats)."""
    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats").get(f"cmdstat_{command}", {})
        return int(stats.get("calls", 0))
    finally:
        client.close()


class Steps:
    """One worker's runtime stepping a batch on the test's clock."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.clock = TestClock(time.time())
        self.rt = Runtime.from_settings(settings, clock=self.clock)
        self.rt.storage.ensure_bucket()
        self.loop = StepLoop(self.rt, self.clock)
        self.control = BatchControl(
            self.rt.ledger, self.loop, settings, clock=self.clock, storage=self.rt.storage
        )

    def states(self, batch_id: str) -> dict[str, str]:
        return {r["id"]: r["state"] for r in self.rt.ledger.items(batch_id)}

    def close(self) -> None:
        self.rt.close()


@contextlib.contextmanager
def stepped_stack(tmp_path: Path, redis_url: str, s3_url: str, bucket: str) -> Iterator[Steps]:
    """One worker's steps on the real parts (Redis, S3, a sandbox taking 0.1 s per task)
    with the test stack's settings; its clients closed on the way out."""
    with start_sandbox(tmp_path, processing_fixed_s=0.1) as sandbox:
        settings = stack_settings(
            sandbox_url=sandbox.url, redis_url=redis_url, s3_url=s3_url, bucket=bucket,
            media={"cache_dir": tmp_path / "cache"},
        )  # fmt: skip
        s = Steps(settings)
        try:
            yield s
        finally:
            s.close()


@pytest.fixture
def steps(tmp_path, s3_server, bucket) -> Iterator:
    made: list[Steps] = []
    sandboxes = []

    def make(
        redis_url: str, sandbox_options: dict[str, object] | None = None, **ledger: object
    ) -> tuple[Steps, str]:
        sandbox = start_sandbox(
            tmp_path / f"sandbox{len(sandboxes)}",
            **{"processing_fixed_s": 0.2, **(sandbox_options or {})},
        )
        sandbox.__enter__()
        sandboxes.append(sandbox)
        settings = stack_settings(
            sandbox_url=sandbox.url,
            redis_url=redis_url,
            s3_url=s3_server.url,
            bucket=bucket,
            ledger=dict(ledger),
            media={"cache_dir": tmp_path / "cache"},
        )
        made.append(Steps(settings))
        return made[-1], sandbox.url

    yield make
    for s in made:
        s.close()
    for sandbox in sandboxes:
        sandbox.__exit__(None, None, None)


def test_on_an_everysec_redis_no_paid_work_is_done_unless_durability_is_none(tmp_path, steps):
    # Given a Redis with AOF fsynced every second (a host crash loses up to a second)
    with RedisServer(tmp_path / "everysec", appendfsync="everysec") as server:
        manifest = write_manifest(tmp_path / "m", ITEMS[:1])
        s, sandbox_url = steps(server.url)
        batch_id = s.control.start(plan(manifest, s.settings))
        # When its item reaches its submit, with the default durability: nothing is posted
        s.loop.run(stop=lambda: bool(s.loop.ran and s.loop.ran[-1].step == "submit"))
        assert accepted_submits(sandbox_url) == []
        assert s.states(batch_id) == {"d0": "ready"}
        # And with durability none, the same server gets the work, and no wait is sent
        none, none_sandbox = steps(server.url, durability="none")
        other = write_manifest(tmp_path / "other", ITEMS[1:])
        batch_id = none.control.start(plan(other, none.settings))
        none.loop.run()
        assert none.states(batch_id) == {"d1": "completed"}
        assert len(accepted_submits(none_sandbox)) == 1
        assert waits_sent(server.url, "waitaof") == waits_sent(server.url, "wait") == 0


def test_with_appendfsync_always_the_intent_needs_no_wait(tmp_path, redis_url, steps):
    # Given the suite's Redis (AOF, appendfsync always: every answered write is on disk)
    s, sandbox_url = steps(redis_url)
    batch_id = s.control.start(plan(write_manifest(tmp_path / "m", ITEMS), s.settings))
    s.loop.run()
    assert set(s.states(batch_id).values()) == {"completed"}
    assert len(accepted_submits(sandbox_url)) == 2
    assert waits_sent(redis_url, "waitaof") == waits_sent(redis_url, "wait") == 0


def test_a_redis_without_aof_or_replica_gets_no_paid_work(tmp_path, steps):
    with RedisServer(tmp_path / "volatile", appendonly=False) as volatile:
        s, sandbox_url = steps(volatile.url)
        batch_id = s.control.start(plan(write_manifest(tmp_path / "m", ITEMS[:1]), s.settings))
        # When the item reaches its submit
        s.loop.run(stop=lambda: bool(s.loop.ran and s.loop.ran[-1].step == "submit"))
        # Then nothing was posted, the item is still ready, and its submit comes back later
        assert accepted_submits(sandbox_url) == []
        assert s.states(batch_id) == {"d0": "ready"}
        [again] = s.loop.pending()
        assert (again.step, again.countdown_s) == ("submit", 20.0)  # the countdown's cap


def test_a_replica_that_does_not_answer_stops_the_post_until_it_does(tmp_path, steps):
    # Given a primary without AOF and one replica: auto durability waits for the replica
    with (
        RedisServer(tmp_path / "primary", appendonly=False) as primary,
        RedisServer(tmp_path / "replica", appendonly=False, replica_of=primary.port) as replica,
    ):
        client = redis.Redis.from_url(primary.url)
        deadline = time.monotonic() + 10
        while client.info("replication").get("slave0", {}).get("state") != "online":
            assert time.monotonic() < deadline, "the replica never finished its first sync"
            time.sleep(0.05)
        client.close()
        s, sandbox_url = steps(primary.url, durable_timeout_s=0.5)
        batch_id = s.control.start(plan(write_manifest(tmp_path / "m", ITEMS[:1]), s.settings))
        assert replica.process is not None
        # When the replica stops answering just as the item's submit runs
        s.loop.run(stop=lambda: any(step.step == "submit" for step in s.loop.pending()))
        [submit] = s.loop.take("submit")
        os.kill(replica.process.pid, signal.SIGSTOP)
        try:
            with pytest.raises(DurabilityError, match="WAIT"):
                run_step(s.rt, "submit", batch_id, "d0")
            # Then nothing was posted
            assert accepted_submits(sandbox_url) == []
        finally:
            os.kill(replica.process.pid, signal.SIGCONT)
        # And once it answers again, the step's next run (Celery retries it) reconciles the
        # unposted intent, and the pair is paid for once
        s.loop.send(submit)
        s.loop.run()
        assert s.states(batch_id) == {"d0": "completed"}
        assert len(accepted_submits(sandbox_url)) == 1
        assert waits_sent(primary.url, "wait") >= 2


def _worker_settings(redis_url: str, s3_url: str, bucket: str, **ledger: str) -> Settings:
    """A worker's settings on `redis_url` (no provider is reached: it never gets that far)."""
    return stack_settings(
        sandbox_url="http://127.0.0.1:9",
        redis_url=redis_url,
        s3_url=s3_url,
        bucket=bucket,
        ledger=dict(ledger),
    )


def _worker(settings: Settings, *args: str, **extra_env: str) -> subprocess.Popen[str]:
    env = {**os.environ, **settings_env(settings), **extra_env}
    return subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "worker", "--concurrency=1", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("supervised", [True, False], ids=["supervised", "unsupervised"])
def test_a_worker_refuses_to_start_on_a_redis_that_cannot_keep_an_intent(
    tmp_path: Path, s3_server, bucket, supervised: bool
):
    with RedisServer(tmp_path / "volatile", appendonly=False) as volatile:
        settings = _worker_settings(volatile.url, s3_server.url, bucket)
        proc = _worker(settings, *([] if supervised else ["--no-supervise"]))
        try:
            _, stderr = proc.communicate(timeout=60)
        finally:
            proc.kill()
    # Exit 3 (a setting), no restart, one line naming the setting and the way out
    assert proc.returncode == 3
    lines = [line for line in stderr.splitlines() if line.startswith("lipdub:")]
    assert len(lines) == 1, stderr
    assert "LIPDUB_LEDGER__DURABILITY=none" in lines[0]
    assert "AOF is off" in lines[0] and "0 replica(s) online" in lines[0]


def test_with_durability_none_the_worker_starts_and_says_what_it_costs(
    tmp_path: Path, s3_server, bucket
):
    with RedisServer(tmp_path / "volatile", appendonly=False) as volatile:
        settings = _worker_settings(volatile.url, s3_server.url, bucket, durability="none")
        proc = _worker(settings, "--no-supervise")
        try:
            assert proc.stderr is not None
            seen = []
            for line in proc.stderr:
                seen.append(line)
                if "ready." in line:  # Celery's own "celery@host ready."
                    break
            said = "".join(seen)
            assert "durability none" in said and "pay for those pairs again" in said, said
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)


def test_a_redis_whose_fsync_is_relaxed_under_a_running_worker_is_refused_at_the_recheck(
    tmp_path,
):
    with RedisServer(tmp_path / "r") as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        now = [0.0]
        ledger = Ledger(client, DurableWrites(client, LedgerSettings(), clock=lambda: now[0]))
        assert ledger.durability_refusal() is None  # appendfsync always
        # When an operator relaxes it, the worker goes on trusting it until the recheck
        client.config_set("appendfsync", "everysec")
        assert ledger.durability_refusal() is None
        now[0] += DurableWrites.RECHECK_S
        # Then it refuses, saying why, until it is set back
        assert "appendfsync is everysec" in (ledger.durability_refusal() or "")
        client.config_set("appendfsync", "always")
        assert ledger.durability_refusal() is None
        client.close()


def test_a_submit_answered_while_redis_is_down_keeps_its_prediction(tmp_path, steps):
    # Given an item about to submit, on a Redis of the test's own, and a POST that takes 1.5 s
    with RedisServer(tmp_path / "restarting") as server:
        s, sandbox_url = steps(server.url, {"faults": {"slow_rate": 1.0, "slow_s": 1.5}})
        batch_id = s.control.start(plan(write_manifest(tmp_path / "m", ITEMS[:1]), s.settings))
        s.loop.run(stop=lambda: any(step.step == "submit" for step in s.loop.pending()))
        [submit] = s.loop.take("submit")
        watcher = redis.Redis.from_url(server.url, decode_responses=True)
        result: list[list[Next]] = []
        step = threading.Thread(
            target=lambda: result.append(run_step(s.rt, "submit", batch_id, submit.item_id))
        )
        # When Redis stops once the intent is written (the POST is on its way), and comes back
        # only after the POST was answered
        step.start()
        while watcher.hget(f"lipdub:item:{batch_id}:d0", "state") != "submitting":
            time.sleep(0.01)
        watcher.close()
        server.stop()
        time.sleep(2.5)
        server.start()
        step.join(timeout=60)
        # Then the step kept the answer until it could write it: the item runs its prediction
        [item] = s.rt.ledger.items(batch_id)
        [paid] = accepted_submits(sandbox_url)
        assert (item["state"], item["prediction_id"]) == ("running", paid["prediction_id"])
        assert [n.step for n in result[0]] == ["poll", "watch"]  # (and the account's watch)
        # And it completes from there, paid once
        s.loop.send(result[0][0])
        s.loop.run()
        assert s.states(batch_id) == {"d0": "completed"}
        assert len(accepted_submits(sandbox_url)) == 1


def _lose_the_answer(s: Steps, batch_id: str, item_id: str) -> str:
    """Emulate a host crash that kept the prediction index but lost the item's record of the
    answer: the item is back to its intent (`submitting`, no prediction). Its prediction id."""
    client = s.rt.ledger.redis
    key = f"lipdub:item:{batch_id}:{item_id}"
    prediction_id = str(client.hget(key, "prediction_id"))
    client.hset(key, mapping={"state": "submitting", "prediction_id": "", "prediction_ids": "[]"})
    return prediction_id


def test_a_lost_record_of_an_answer_is_found_again_by_the_prediction_index(
    tmp_path, redis_url, steps
):
    s, sandbox_url = steps(redis_url)
    batch_id = s.control.start(plan(write_manifest(tmp_path / "m", ITEMS[:1]), s.settings))
    # Given an item whose POST was answered, then whose record of the answer was lost
    s.loop.run(stop=lambda: any(step.step == "poll" for step in s.loop.pending()))
    s.loop.take("poll")
    prediction_id = _lose_the_answer(s, batch_id, "d0")
    # When its submit runs again (a redelivery, as after any crash)
    s.loop.send(Next("submit", batch_id, "d0"))
    s.loop.run()
    # Then it adopts the prediction the index names, without paying again
    [item] = s.rt.ledger.items(batch_id)
    assert (item["state"], item["prediction_id"]) == ("completed", prediction_id)
    assert len(accepted_submits(sandbox_url)) == 1


def test_the_audit_counts_a_prediction_only_an_index_entry_points_at(tmp_path, redis_url, steps):
    s, sandbox_url = steps(redis_url, durability="none")
    batch_id = s.control.start(plan(write_manifest(tmp_path / "m", ITEMS[:1]), s.settings))
    s.loop.run(stop=lambda: any(step.step == "poll" for step in s.loop.pending()))
    s.loop.take("poll")
    # Given the record of the first answer lost and, unlike above, the item posted again
    # (with durability none, the intent is lost too: nothing tells it was ever sent)
    first = _lose_the_answer(s, batch_id, "d0")
    s.rt.ledger.redis.hset(f"lipdub:item:{batch_id}:d0", "state", "ready")
    s.loop.send(Next("submit", batch_id, "d0"))
    s.loop.run()
    report = s.control.report(batch_id)
    # Then the pair was paid twice, and the audit lists the first prediction at its charge
    assert len(accepted_submits(sandbox_url)) == 2
    [item] = report["items_detail"]
    assert item["state"] == "completed" and item["prediction_id"] != first
    [lost] = report["audit"]["unattributed"]
    assert lost["id"] == first and Decimal(lost["charged_usd"]) == Decimal("0.134")
    bill = Decimal(httpx.get(f"{sandbox_url}/_sandbox/bill", timeout=5).json()["billed_usd"])
    assert Decimal(report["spent_usd"]) + Decimal(report["audit"]["unattributed_usd"]) == bill


def test_with_json_logs_every_line_a_worker_logs_is_one_json_object(
    tmp_path: Path, s3_server, bucket
):
    with RedisServer(tmp_path / "volatile", appendonly=False) as volatile:
        settings = _worker_settings(volatile.url, s3_server.url, bucket, durability="none")
        proc = _worker(settings, "--no-supervise", LIPDUB_LOG__FORMAT="json")
        records = []
        try:
            assert proc.stderr is not None
            for line in proc.stderr:
                if line.strip():
                    records.append(json.loads(line))  # a line that is not JSON fails here
                if "ready." in line:
                    break
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert any("durability none" in r["message"] for r in records)
    assert any(r["logger"].startswith("celery") for r in records)
