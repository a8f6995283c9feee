"""Live workers are known: each `celery`/`lipdub worker` process beats in Redis; `lipdub
workers` lists them with the settings that must agree; `lipdub status` says when none is
alive, or when they disagree. On the real parts: Redis, worker processes, the CLI."""

from __future__ import annotations

import json
import sys
import time

import pytest
import redis

from pipeline.due import RunningSteps
from pipeline.heartbeat import LIVE_S, Heartbeats
from pipeline.steps import Next
from tests.integration.stack import Stack, plan, worker_processes, write_manifest
from workers.supervise import RestartPolicy, supervise

pytestmark = pytest.mark.slow


def _live(cli, count: int, timeout_s: float = 60.0) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while True:
        listed = json.loads(cli("workers", "--json").stdout)
        if len(listed) == count:
            return listed
        assert time.monotonic() < deadline, listed
        time.sleep(0.2)


def test_workers_beat_and_status_says_when_none_is_alive(cli, settings, tmp_path):
    # A running batch whose steps wait in a queue no worker here takes: it stays running
    unserved = settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"queue": "nobody-listens"})}
    )
    stack = Stack(unserved)
    manifest = write_manifest(tmp_path / "m", [("w0", 1, 1, "loop")])
    batch_id = stack.control.start(plan(manifest, unserved))
    # With no worker: the status of the running batch says so first
    idle = cli("status", batch_id)
    assert idle.returncode == 0
    assert idle.stderr.startswith("No worker is alive"), idle.stderr
    # and the item says what it waits for
    assert "waiting for our queue (a worker to take its next step): 1" in idle.stdout
    shown = json.loads(cli("status", batch_id, "--json").stdout)
    [group] = shown["waiting"]
    assert (group["reason"], group["items"]) == ("queue", 1)
    assert (shown["waiting_read"], shown["unfinished"]) == (1, 1)
    one = cli("status", batch_id, "--item", "w0")
    assert one.returncode == 0 and "waiting for our queue" in one.stdout
    assert "planned and queued" in one.stdout
    missing = cli("status", batch_id, "--item", "nope")
    assert missing.returncode == 2 and "no item 'nope'" in missing.stderr
    assert json.loads(cli("status", batch_id, "--json").stdout)["workers"]["alive"] == 0
    # Reading the ledger is all `status` and `batches` do: they load no Celery, boto3 or PyAV
    for command in (("status", batch_id), ("batches",)):
        traced = cli(*command, PYTHONPROFILEIMPORTTIME="1")
        assert traced.returncode == 0, traced.stderr
        loaded = {line.rsplit("|", 1)[-1].strip() for line in traced.stderr.splitlines()}
        assert "redis" in loaded, "the import trace is read"
        assert loaded.isdisjoint({"celery", "boto3", "botocore", "av", "httpx", "jinja2"}), command
    # Two workers that disagree on the account's limits
    other = settings.model_copy(
        update={"provider": settings.provider.model_copy(update={"starts_per_minute": 7})}
    )
    with (
        worker_processes(settings, tmp_path, concurrency=1, name="a"),
        worker_processes(other, tmp_path, concurrency=1, name="b"),
    ):
        listed = _live(cli, 2)
        assert {w["settings"]["starts_per_minute"] for w in listed} == {"600", "7"}
        assert all(w["settings"]["bucket"] == settings.storage.bucket for w in listed)
        # The key is a fingerprint, never the key itself
        assert all(w["settings"]["key"] and "sk-" not in json.dumps(w) for w in listed)
        table = cli("workers")
        assert "starts_per_minute" in table.stdout.splitlines()[1]  # a column of its own
        assert f"bucket={settings.storage.bucket}" in table.stdout
        assert "disagree on: starts_per_minute" in table.stderr
        warned = cli("status", batch_id)
        assert "disagree on starts_per_minute" in warned.stderr
    # Stopped workers say so: none is listed
    _live(cli, 0, timeout_s=10)
    stack.close()


def test_a_dead_workers_beat_lapses(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    from pipeline.heartbeat import Beat

    beats = Heartbeats(client)
    beats.beat(Beat("w@h", "h", 1, "0.1.0", 100.0, 100.0, {"bucket": "b"}))
    assert [b.name for b in beats.alive(now=100.0 + LIVE_S - 1)] == ["w@h"]
    assert beats.alive(now=100.0 + LIVE_S + 1) == []
    client.close()


def test_the_supervisor_gives_up_on_a_worker_that_keeps_dying_at_once():
    # A child that dies at once, every time (as a worker with a broken install would)
    started = time.monotonic()
    code = supervise(
        [sys.executable, "-c", "import sys; sys.exit(4)"],
        policy=RestartPolicy(first_s=0.01, max_s=0.01, give_up_after=3),
    )
    # Then the supervisor exits with its code after three tries, instead of looping forever
    assert code == 4
    assert time.monotonic() - started < 30


def test_a_worker_with_an_unknown_pool_is_refused_at_once(cli):
    refused = cli("worker", "--pool", "gevent", timeout=60)
    assert refused.returncode == 2 and "gevent" in refused.stderr


def test_the_bucket_command_checks_and_creates_the_bucket(cli):
    env = {"LIPDUB_STORAGE__BUCKET": f"fresh-{int(time.time() * 1000)}"}
    missing = cli("bucket", **env)
    assert missing.returncode != 0 and "does not exist" in missing.stderr, missing.stderr
    created = cli("bucket", "--create", **env)
    assert created.returncode == 0 and "is there" in created.stdout
    assert cli("bucket", **env).returncode == 0


def test_the_health_check_of_a_worker_container_reads_its_own_heartbeat(cli, settings, tmp_path):
    assert cli("workers", "--here").returncode != 0  # no worker on this host yet
    with worker_processes(settings, tmp_path, concurrency=1, name="here"):
        _live(cli, 1)
        assert cli("workers", "--here").returncode == 0


def test_the_gates_snapshot_reads_slot_waiters_starts_and_the_cool_down(settings):
    from pipeline.gates import Gates
    from pipeline.waiting import GateFacts

    client = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    one_slot = settings.provider.model_copy(
        update={"max_concurrent": 1, "queue_ahead": 0, "starts_per_minute": 1}
    )
    gates = Gates(client, settings.redis.url, one_slot, slot_lease_s=600)
    assert gates.acquire_slot("b1:x").passed
    assert not gates.acquire_slot("b1:y").passed  # waits for the one slot
    assert gates.reserve_start("b1:x:1").passed
    assert not gates.reserve_start("b1:z:1").passed  # the next minute's start
    gates.cool_down(30.0)
    facts = GateFacts.read(client)
    assert facts.slot_waiters == {"b1:y"}
    assert set(facts.starts) == {"b1:z"} and 0 < facts.starts["b1:z"] <= 61
    assert 0 < facts.cooling_s <= 30
    client.close()


def test_a_worker_log_says_what_a_rescheduled_step_waits_for(cli, settings, tmp_path):
    from pipeline.gates import Gates

    stack = Stack(settings)
    # Given a 429 cool-down on when the item reaches its submit
    Gates(stack.redis, settings.redis.url, settings.provider, slot_lease_s=60).cool_down(3.0)
    manifest = write_manifest(tmp_path / "m", [("c0", 1.0, 1.0, "loop")])
    with worker_processes(settings, tmp_path, concurrency=1, name="why"):
        batch_id = stack.control.start(plan(manifest, settings))
        stack.wait(batch_id)
    log = (tmp_path / "why-0.log").read_text()
    assert f"submit {batch_id}/c0 -> submit+" in log
    assert "(waiting for the 429 cool-down)" in log
    # And the item's history reads in the order it lived
    item = json.loads(cli("status", batch_id, "--item", "c0", "--json").stdout)
    said = [moment["what"] for moment in item["history"]]
    assert said[0] == "planned and queued" and said[-1] == "ended"
    assert said.index("submit intent recorded (POST sent next)") < said.index(
        "prediction known: at the provider"
    )
    assert item["state"] == "completed" and item["waiting_for"] is None
    stack.close()


def test_a_live_worker_forgets_a_running_record_of_a_message_it_no_longer_holds(settings, tmp_path):
    # Given a live worker, and a record that it runs a step whose message it does not hold
    # (received just before the broker's connection broke: Celery dropped it)
    client = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    running = RunningSteps(client)
    with worker_processes(settings, tmp_path, concurrency=1, name="holder"):
        deadline = time.monotonic() + 30
        while not (alive := Heartbeats(client).alive(time.time())):
            assert time.monotonic() < deadline, "the worker never beat"
            time.sleep(0.2)
        [beat] = alive
        # (older than a beat, younger than the time limit: nothing else would drop it)
        running.start("lost-task", beat.name, Next("submit", "b", "i"), time.time() - 15, "lipdub")
        # When its heartbeat comes round
        deadline = time.monotonic() + 30
        while running.all():
            assert time.monotonic() < deadline, "the record stayed"
            time.sleep(0.5)
    # Then the record is gone (the lost-message sweep can send the step again) and it said so
    assert (
        "forgot 1 step(s) this worker no longer holds: submit b/i"
        in (tmp_path / "holder-0.log").read_text()
    )
    client.close()
