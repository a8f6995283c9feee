"""Steps kept for later in Redis, and the steps being run, on the suite's real redis-server
(the scripts run on Redis's clock, so the waits here are real and short)."""

from __future__ import annotations

import json
import time

import pytest
import redis

from pipeline import keys
from pipeline.due import DueSteps, Lease, RunningSteps
from pipeline.steps import Next


@pytest.fixture
def client(redis_url):
    made = redis.Redis.from_url(redis_url, decode_responses=True)
    yield made
    made.close()


def test_the_pump_is_told_when_the_next_step_falls_due(client):
    # So that it wakes for it instead of at its next regular look
    due = DueSteps(client, "lipdub")
    assert due.next_due_in_s() is None
    due.schedule([Next("submit", "b", "j", 60.0), Next("poll", "b", "i", 0.5)])
    ahead = due.next_due_in_s()
    assert ahead is not None and 0.0 < ahead <= 0.5
    time.sleep(max(0.0, ahead) + 0.01)
    assert due.next_due_in_s() <= 0.0
    [(member, _)] = due.take()
    due.sent([member])
    assert 59.0 < due.next_due_in_s() <= 60.0


def test_a_step_is_taken_only_once_its_countdown_is_over(client):
    due = DueSteps(client, "lipdub")
    due.schedule([Next("poll", "b", "i", 0.3), Next("submit", "b", "j", 60.0)])
    assert due.take() == []
    time.sleep(0.35)
    [(member, step)] = due.take()
    assert step == Next("poll", "b", "i")
    # And it is no longer due for anyone, but leased to the pump that took it until sent
    assert due.take() == [] and due.count() == 1
    assert due.waiting([Next("poll", "b", "i"), Next("submit", "b", "j")]) == {
        Next("poll", "b", "i"),
        Next("submit", "b", "j"),
    }
    due.sent([member])
    assert due.waiting([Next("poll", "b", "i")]) == set()


def test_of_two_copies_of_a_step_the_earlier_stays(client):
    due = DueSteps(client, "lipdub")
    due.schedule([Next("poll", "b", "i", 60.0)])
    due.schedule([Next("poll", "b", "i", 0.0)])
    due.schedule([Next("poll", "b", "i", 90.0)])
    assert [step for _, step in due.take()] == [Next("poll", "b", "i")]
    assert due.count() == 0


def test_steps_a_pump_took_and_never_sent_are_taken_again_after_the_lease(client):
    due = DueSteps(client, "lipdub")
    due.schedule([Next("collect", "b", "i", 0.0)])
    [(member, _)] = due.take()
    # When the pump dies before sending: its lease on the step runs out (made short here)
    client.zadd(keys.due_sending("lipdub"), {member: 0})
    # Then another pump takes it again
    assert [step for _, step in due.take()] == [Next("collect", "b", "i")]


def test_an_upload_a_pump_took_from_the_feed_and_never_sent_is_taken_again(client):
    # Given two uploads in the feed, and a pump that took the first
    due = DueSteps(client, "lipdub")
    due.feed([Next("prepare", "b", "i"), Next("prepare", "b", "j")])
    [(member, step)] = due.take_fed(1)
    assert step == Next("prepare", "b", "i") and due.fed_waiting() == 1
    # Then until it is sent, it is kept (leased to that pump: the sweep does not call it lost)
    assert due.waiting([step]) == {step}
    assert due.take() == []
    # When the pump dies before sending it: its lease runs out (made short here)
    client.zadd(keys.due_sending("lipdub"), {member: 0})
    # Then another pump takes it again; and once sent, it is kept no more
    [(again, step_again)] = due.take()
    assert step_again == step
    due.sent([again])
    assert due.waiting([step]) == set() and due.take() == []
    assert [s for _, s in due.take_fed(5)] == [Next("prepare", "b", "j")]
    assert due.take_fed(5) == []


def test_a_batch_step_keeps_its_missing_item(client):
    due = DueSteps(client, "lipdub")
    due.schedule([Next("finalize", "b", None, 0.0)])
    assert [step for _, step in due.take()] == [Next("finalize", "b")]


def test_running_steps_are_recorded_per_message_until_they_end(client):
    running = RunningSteps(client)
    running.start("t1", "w1@h", Next("prepare", "b", "i"), 100.0, "lipdub")
    running.start("t2", "w2@h", Next("finalize", "b"), 101.0, "lipdub")
    assert sorted((lease.worker, lease.step, lease.started_at) for lease in running.all()) == [
        ("w1@h", Next("prepare", "b", "i"), 100.0),
        ("w2@h", Next("finalize", "b"), 101.0),
    ]
    running.end("t1")
    [left] = running.all()
    assert left.worker == "w2@h"
    # And a dead worker's entry is claimed by one sweeper only
    assert running.claim(left) and not running.claim(left)
    assert running.all() == [] and client.hlen(keys.RUNNING_STEPS) == 0


def test_a_running_record_keeps_its_message_tag_and_older_records_still_read(client):
    running = RunningSteps(client)
    running.start("t1", "w@h", Next("poll", "b", "i"), 100.0, "lipdub", "tag-1")
    # (a record an older lipdub wrote: no tag)
    client.zadd(keys.RUNNING, {"t0": 99.0})
    client.hset(keys.RUNNING_STEPS, "t0", json.dumps(["w@h", "poll", "b", "j", "lipdub"]))
    assert running.all() == [
        Lease("w@h", Next("poll", "b", "j"), 99.0, "t0", "lipdub", ""),
        Lease("w@h", Next("poll", "b", "i"), 100.0, "t1", "lipdub", "tag-1"),
    ]
