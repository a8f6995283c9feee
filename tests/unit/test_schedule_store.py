"""The schedule state's atomic decisions, on a real Redis: one winner, every time."""

from __future__ import annotations

import threading
import time

import redis

from pipeline.schedules.lock import SchedulerLock
from pipeline.schedules.store import ScheduleStore


def race(count: int, action) -> list[object]:
    """Run `action(n)` in `count` threads released together; their results."""
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count

    def run(n: int) -> None:
        barrier.wait()
        results[n] = action(n)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


def test_one_of_sixteen_racing_ticks_handles_a_fire_time(redis_url):
    stores = [ScheduleStore(client(redis_url)) for _ in range(16)]
    wins = race(16, lambda n: stores[n].claim_fire("nightly", 1000.0))
    assert wins.count(True) == 1
    assert stores[0].last_handled_s("nightly") == 1000.0
    assert not stores[0].claim_fire("nightly", 999.0), "an older fire time is never handled"
    assert stores[0].claim_fire("nightly", 1060.0)


def test_one_of_sixteen_racing_runs_claims_a_manifest_until_its_lease_lapses(redis_url):
    stores = [ScheduleStore(client(redis_url)) for _ in range(16)]

    def claim(n: int, now_s: float = 100.0) -> bool:
        return stores[n].claim_pickup(
            "s", "a.csv@t", token=str(n), now_s=now_s, lease_s=60, manifest="a.csv"
        )

    assert race(16, claim).count(True) == 1
    assert not claim(0, now_s=159.0), "held while the lease runs"
    assert claim(1, now_s=161.0), "a lapsed claim (its run died) is taken over"
    stores[1].finish_pickup("s", "a.csv@t", "started", {"batch_id": "b1"})
    assert not claim(2, now_s=10_000.0), "a started pickup is never claimed again"
    assert stores[2].pickup("s", "a.csv@t")["batch_id"] == "b1"


def test_a_parked_item_is_handed_to_one_waker_once_it_is_due(redis_url):
    store = ScheduleStore(client(redis_url))
    store.park("s", "b1:i1", until_s=100.0)
    store.park("s", "b1:i2", until_s=200.0)
    assert store.pop_parked("s", 99.0) == []
    others = [ScheduleStore(client(redis_url)) for _ in range(8)]
    taken = race(8, lambda n: others[n].pop_parked("s", 150.0))
    assert sorted(m for t in taken for m in t) == ["b1:i1"]  # type: ignore[attr-defined]
    assert store.parked_count("s") == 1


def test_a_notice_is_posted_once(redis_url):
    store = ScheduleStore(client(redis_url))
    assert store.post_notice("e1", "s", "first")
    assert not store.post_notice("e1", "s", "second")
    assert store.notice("e1")["text"] == "first"


def test_one_scheduler_holds_the_lock_and_a_standby_takes_over_when_it_stops(redis_url):
    locks = [SchedulerLock(client(redis_url), ttl_s=0.5, key="t:beat") for _ in range(4)]
    held = race(4, lambda n: locks[n].hold())
    assert held.count(True) == 1
    active = locks[held.index(True)]
    standby = next(lock for lock in locks if lock is not active)
    assert active.hold(), "the holder renews"
    assert not standby.hold()
    # The holder stops renewing (killed): its lock lapses and a standby takes over.
    time.sleep(0.6)
    assert standby.hold()
    assert not active.hold()
    # A clean stop hands over at once.
    standby.release()
    assert active.hold()
