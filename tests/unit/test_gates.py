"""The shared gates on a real redis-server: spacing of starts, slots, cool-down."""

from __future__ import annotations

import random
import threading
import time

import pytest
import redis

from pipeline import keys
from pipeline.gates import Gates
from pipeline.settings import ProviderSettings


@pytest.fixture
def make_gates(redis_url):
    clients = []

    def make(**provider):
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        clients.append(client)
        return Gates(client, redis_url, ProviderSettings(**provider), slot_lease_s=60)

    yield make
    for client in clients:
        client.close()


def test_window_pacing_allows_a_window_of_starts_then_reserves_later_ones(make_gates):
    # Given 3 starts per 2 s window (+ 0.5 s margin), seen by two workers' gate objects
    one = make_gates(starts_per_minute=3, rate_window_s=2.0, start_margin_s=0.5)
    two = make_gates(starts_per_minute=3, rate_window_s=2.0, start_margin_s=0.5)
    # Then three starts are due now, from either
    assert one.reserve_start("a:1").passed
    assert two.reserve_start("b:1").passed and one.reserve_start("c:1").passed
    # and the fourth and later are reserved one window after the start they replace
    fourth = two.reserve_start("d:1")
    assert not fourth.passed and 2.3 < fourth.wait_s <= 2.5
    assert 2.3 < one.reserve_start("e:1").wait_s <= 2.5
    assert 2.3 < one.reserve_start("f:1").wait_s <= 2.5
    assert 4.8 < one.reserve_start("g:1").wait_s <= 5.0


def test_a_reservation_is_kept_for_its_name(make_gates):
    gates = make_gates(starts_per_minute=1, rate_window_s=2.0, start_margin_s=0.0)
    assert gates.reserve_start("a:1").passed
    later = gates.reserve_start("b:1")
    # asking again (a redelivered task) gets the same time, and takes no other start
    again = gates.reserve_start("b:1")
    assert abs(again.wait_s - later.wait_s) < 0.05
    assert gates.reserve_start("c:1").wait_s > later.wait_s + 1.9
    # a new attempt of an item is a new reservation
    assert gates.reserve_start("a:2").wait_s > 5.9


def test_a_start_is_timed_again_from_its_answer_and_the_next_window_follows_it(make_gates):
    # Given 2 starts per 2 s window and no margin (window pacing's default)
    gates = make_gates(starts_per_minute=2, rate_window_s=2.0)
    log = gates.redis
    assert gates.reserve_start("a:1").passed and gates.reserve_start("b:1").passed
    # and a third reserved while both POSTs are on their way: one window after the first
    third = gates.reserve_start("c:1")
    assert not third.passed
    assert log.zscore(keys.START_LOG, "c:1") == log.zscore(keys.START_LOG, "a:1") + 2.0
    # When both POSTs are answered a while later
    time.sleep(0.3)
    assert gates.anchor_start("a:1") and gates.anchor_start("b:1")
    answered = log.zscore(keys.START_LOG, "a:1")
    assert answered < log.zscore(keys.START_LOG, "b:1")
    # Then the third, asked again (as it is at its time), is one window after the first answer
    assert not gates.reserve_start("c:1").passed
    assert log.zscore(keys.START_LOG, "c:1") == answered + 2.0
    # and a start is never moved earlier, nor one that was never reserved written
    assert not gates.anchor_start("nobody:1")
    assert log.zscore(keys.START_LOG, "nobody:1") is None


def test_an_answer_that_reorders_the_starts_keeps_every_window(make_gates):
    # Given 2 starts per 2 s window: a, b now; c, d a window later
    gates = make_gates(starts_per_minute=2, rate_window_s=2.0)
    log = gates.redis
    for name in ("a:1", "b:1", "c:1", "d:1"):
        gates.reserve_start(name)
    # When b is answered late, then a later still (their order flips)
    time.sleep(0.2)
    gates.anchor_start("b:1")
    time.sleep(0.2)
    gates.anchor_start("a:1")
    for name in ("c:1", "d:1"):
        gates.reserve_start(name)
    # Then each of the later starts keeps a window after the one two places before it
    starts = sorted(float(s) for _, s in log.zrange(keys.START_LOG, 0, -1, withscores=True))
    assert starts[2] >= starts[0] + 2.0 and starts[3] >= starts[1] + 2.0


def _redis_now(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return float(seconds) + micros / 1_000_000


def _sleep_until(client: redis.Redis, at: float) -> None:
    time.sleep(max(0.0, at - _redis_now(client)))


def test_a_start_answered_after_a_later_reservation_still_shares_its_window(make_gates):
    # The 429s of issue 21's bench: a POST answered after the time planned for a later
    # reservation moved past it in the plan, and the later one, counting only the starts
    # placed before it, went while the provider counted one start too many.
    # Given 2 starts per 3 s window
    gates = make_gates(starts_per_minute=2, rate_window_s=3.0)
    log = gates.redis
    t0 = _redis_now(log)
    assert gates.reserve_start("a:1").passed
    gates.anchor_start("a:1")
    _sleep_until(log, t0 + 0.5)
    assert gates.reserve_start("b:1").passed
    # c is planned a window after a (3.0), d a window after b as reserved (3.5)
    assert not gates.reserve_start("c:1").passed and not gates.reserve_start("d:1").passed
    # b's POST is answered late (1.0): it leaves the window at 4.0, not 3.5
    _sleep_until(log, t0 + 1.0)
    gates.anchor_start("b:1")
    _sleep_until(log, float(log.zscore(keys.START_LOG, "c:1")))
    assert gates.reserve_start("c:1").passed
    # c's POST is answered after d's planned time, moving c past d in the plan
    planned_d = float(log.zscore(keys.START_LOG, "d:1"))
    _sleep_until(log, planned_d + 0.05)
    gates.anchor_start("c:1")
    assert float(log.zscore(keys.START_LOG, "c:1")) > planned_d
    # Then d, due by the plan, waits until b (answered at 1.0) has left: b and c are in its window
    made_b = float(log.zscore(keys.START_LOG, "b:1"))
    due = gates.reserve_start("d:1")
    assert not due.passed
    assert abs(_redis_now(log) + due.wait_s - (made_b + 3.0)) < 0.05
    _sleep_until(log, made_b + 3.0)
    assert gates.reserve_start("d:1").passed


def test_starts_answered_at_random_never_exceed_the_limit_as_the_provider_counts(make_gates):
    # Given 6 starts per 1 s window, 42 starts whose POSTs take 0-0.7 s (each counted by the
    # provider from its arrival, then from its answer)
    window_s, limit, starts = 1.0, 6, 42
    gates = make_gates(starts_per_minute=limit, rate_window_s=window_s)
    rng = random.Random(21)
    latencies = [rng.uniform(0.0, 0.7) for _ in range(starts)]
    made: list[tuple[float, float]] = []
    lock = threading.Lock()

    def start(n: int) -> None:
        name = f"x{n}:1"
        while not (answer := gates.reserve_start(name)).passed:
            time.sleep(answer.wait_s)
        # sent: when the gate let it go (its order among the starts); answered: just
        # before the answer is recorded (the provider answered no later)
        sent = float(gates.redis.zscore(keys.START_LOG, name))
        time.sleep(latencies[n])
        answered = _redis_now(gates.redis)
        gates.anchor_start(name)
        with lock:
            made.append((sent, answered))

    threads = [threading.Thread(target=start, args=(n,)) for n in range(starts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then at each start's arrival, fewer than `limit` others were counted in the window
    for sent, _ in made:
        counted = [
            1
            for other_sent, answered in made
            if other_sent < sent and (answered if answered < sent else other_sent) > sent - window_s
        ]
        assert len(counted) < limit


def test_the_plan_is_kept_while_reservations_are_ahead(make_gates):
    # A plan that reaches further than its key lived lost every reservation in it
    gates = make_gates(starts_per_minute=1, rate_window_s=20.0)
    for n in range(10):
        gates.reserve_start(f"x{n}:1")
    furthest = gates.redis.zrange(keys.START_LOG, -1, -1, withscores=True)[0][1]
    assert furthest - _redis_now(gates.redis) > 170
    assert gates.redis.pttl(keys.START_LOG) / 1000 > furthest - _redis_now(gates.redis) + 40


def test_even_pacing_is_not_timed_from_answers(make_gates):
    # Even pacing spaces planned starts: timing each from its answer would make every start
    # wait for the POST before it. Its margin is 1 s unless set.
    gates = make_gates(starts_per_minute=2, rate_window_s=2.0, start_pacing="even")
    assert gates.reserve_start("a:1").passed
    assert not gates.anchor_start("a:1")
    assert 1.3 < gates.reserve_start("b:1").wait_s <= 1.5
    assert ProviderSettings(start_pacing="even").start_window_s == 61.0
    assert ProviderSettings().start_window_s == 60.0
    assert ProviderSettings(start_margin_s=0.5).start_window_s == 60.5


def test_even_pacing_spaces_every_start(make_gates):
    # 2 starts per (2 s + 2 s): one every 2 s, even the second
    gates = make_gates(
        starts_per_minute=2, rate_window_s=2.0, start_margin_s=2.0, start_pacing="even"
    )
    assert gates.reserve_start("a:1").passed
    assert 1.8 < gates.reserve_start("b:1").wait_s <= 2.0
    assert 3.8 < gates.reserve_start("c:1").wait_s <= 4.0


def test_even_pacing_spaces_a_start_from_the_one_made_before_it_however_late(make_gates):
    # A bucket of one start refills from when it was emptied: a start that went late moves
    # the next one as late. Given one start a second (2 per 2 s, no margin)
    gates = make_gates(
        starts_per_minute=2, rate_window_s=2.0, start_margin_s=0.0, start_pacing="even"
    )
    log = gates.redis
    assert gates.reserve_start("a:1").passed
    assert not gates.reserve_start("b:1").passed and not gates.reserve_start("c:1").passed
    # When b comes back 0.3 s after its planned time
    _sleep_until(log, float(log.zscore(keys.START_LOG, "b:1")) + 0.3)
    assert gates.reserve_start("b:1").passed
    went = _redis_now(log)
    # Then c, at its planned time, waits a full second after b went
    _sleep_until(log, float(log.zscore(keys.START_LOG, "c:1")))
    late = gates.reserve_start("c:1")
    assert not late.passed
    assert abs(_redis_now(log) + late.wait_s - (went + 1.0)) < 0.05


def test_reserved_starts_never_exceed_the_limit_in_any_window(make_gates):
    # Given many reservations at once, 5 per 1 s window
    gates = make_gates(starts_per_minute=5, rate_window_s=1.0, start_margin_s=0.0)
    # (each start is the moment it was asked plus its wait: a loaded machine's pauses between
    # asks must not read as starts closer together than they are)
    starts = sorted(
        time.monotonic() + max(0.0, gates.reserve_start(f"x{n}:1").wait_s) for n in range(23)
    )
    # Then no window of 1 s (less a hair for the clock) holds more than 5
    for i, start in enumerate(starts):
        assert sum(1 for s in starts[i:] if s < start + 0.99) <= 5


def test_slots_never_exceed_the_limit_and_are_idempotent(make_gates):
    # Given 2 predictions processing at once and 1 more queued ahead at the provider
    gates = make_gates(max_concurrent=2, queue_ahead=1)
    # Then each slot taken says how many are held with it
    assert gates.acquire_slot("b:1").held == 1
    assert gates.acquire_slot("b:1").held == 1, "holding a slot twice takes one slot"
    assert gates.acquire_slot("b:2").held == 2
    assert gates.acquire_slot("b:3").held == 3, "the third waits in the provider's queue"
    refused = gates.acquire_slot("b:4")
    assert not refused.passed and refused.wait_s > 0 and refused.held == 0
    assert gates.in_flight() == 3
    assert gates.release_slot(turn_of="b:3") == [], "b:3 posted: no slot is free yet"
    assert gates.release_slot("b:1") == ["b:4"], "the waiter is woken"
    assert gates.acquire_slot("b:4").passed


def test_by_default_as_many_are_queued_ahead_as_the_account_processes(make_gates):
    assert ProviderSettings(max_concurrent=3).in_flight_max == 6
    assert ProviderSettings(max_concurrent=3, queue_ahead=0).in_flight_max == 3
    gates = make_gates(max_concurrent=1)
    assert gates.acquire_slot("b:1").passed and gates.acquire_slot("b:2").passed
    assert not gates.acquire_slot("b:3").passed


def test_freed_slots_wake_the_oldest_waiters_once(make_gates):
    gates = make_gates(max_concurrent=2, queue_ahead=0)
    assert gates.acquire_slot("b:1").passed and gates.acquire_slot("b:2").passed
    for waiter in ("b:3", "b:4", "b:5"):
        assert not gates.acquire_slot(waiter).passed
    assert not gates.acquire_slot("b:3").passed, "asking again keeps its place"
    # one slot freed: the oldest waiter only, and it leaves the queue
    assert gates.release_slot("b:1") == ["b:3"]
    assert gates.acquire_slot("b:3").passed
    # each slot freed wakes the next, in order; then nobody is waiting
    assert gates.release_slot("b:2") == ["b:4"]
    assert gates.release_slot("b:3") == ["b:5"]
    assert gates.release_slot() == []
    assert gates.in_flight() == 0


def test_posts_to_the_providers_queue_go_one_at_a_time_first_in_line_first(make_gates):
    # Given 2 processing at once and 2 queued ahead at the provider
    gates = make_gates(max_concurrent=2, queue_ahead=2)
    # The provider starts the first two at once: they go together, no turn
    assert gates.acquire_slot("b:1", place=1.0).held == 1
    assert gates.acquire_slot("b:2", place=2.0).held == 2
    # The third goes to the provider's queue: it posts holding the turn
    assert gates.acquire_slot("b:5", place=5.0).held == 3
    # meanwhile two more wait in line, whatever order they came in
    assert not gates.acquire_slot("b:4", place=4.0).passed
    assert not gates.acquire_slot("b:3", place=3.0).passed
    # Then b:5's answer in, the first in line (not the first to ask) is woken for the turn
    assert gates.release_slot(turn_of="b:5") == ["b:3"]
    refused = gates.acquire_slot("b:4", place=4.0)
    assert not refused.passed and refused.wake == (), "b:3 holds the turn: b:4 waits"
    assert gates.acquire_slot("b:3", place=3.0).held == 4
    # and with b:3's answer in no slot is free: nobody is woken, nobody holds the turn
    assert gates.release_slot(turn_of="b:3") == []
    assert gates.redis.get(keys.SLOT_TURN) is None
    # An end frees one: b:4 is next in line
    assert gates.release_slot("b:1") == ["b:4"]
    assert gates.acquire_slot("b:4", place=4.0).held == 4


def test_places_a_microsecond_apart_keep_their_order(make_gates):
    # Places are epoch seconds plus a fraction (`send_order.place_in_line`: manifest rows
    # 1e-6 s apart), which the scripts must keep whole; the names sort the other way, so a
    # place rounded to its neighbour's would wake the wrong one
    from pipeline.send_order import place_in_line

    def place(row: int) -> float:
        return place_in_line(1_796_690_964.482843, 1.0, row, "manifest")

    name = {1: "b:z", 2: "b:y", 3: "b:x"}
    gates = make_gates(max_concurrent=1, queue_ahead=1)
    assert gates.acquire_slot("b:0").passed and gates.acquire_slot("b:1").passed
    gates.release_slot(turn_of="b:1")
    for row in (3, 2, 1):
        assert not gates.acquire_slot(name[row], place=place(row)).passed
    assert gates.release_slot("b:0") == [name[1]]
    assert gates.acquire_slot(name[1], place=place(1)).held == 2
    assert gates.release_slot(turn_of=name[1]) == []
    assert gates.release_slot("b:1") == [name[2]]


def test_a_newcomer_behind_the_first_in_line_wakes_it_and_waits(make_gates):
    gates = make_gates(max_concurrent=1, queue_ahead=2)
    assert gates.acquire_slot("b:1", place=1.0).held == 1
    assert gates.acquire_slot("b:2", place=2.0).held == 2
    assert not gates.acquire_slot("b:3", place=3.0).passed  # b:2 holds the turn
    assert gates.release_slot(turn_of="b:2") == ["b:3"]
    # b:3 was woken, and its wake-up lost: its turn lapses only with its lease; a newcomer
    # later in line that finds the turn free...
    gates.redis.delete(keys.SLOT_TURN)
    gates.redis.zadd(keys.SLOT_WAITERS, {"b:3": 3.0})
    newcomer = gates.acquire_slot("b:9", place=9.0)
    # ... wakes the first in line instead, and waits behind it
    assert not newcomer.passed and newcomer.wake == ("b:3",)
    assert gates.acquire_slot("b:3", place=3.0).held == 3
    assert gates.redis.zrange(keys.SLOT_WAITERS, 0, -1) == ["b:9"]


def test_freed_slots_wake_those_the_provider_starts_at_once_and_one_for_its_queue(make_gates):
    gates = make_gates(max_concurrent=2, queue_ahead=2)
    for n in range(1, 5):
        assert gates.acquire_slot(f"b:{n}", place=float(n)).passed
        gates.release_slot(turn_of=f"b:{n}")  # each posted, in turn
    for n in range(5, 10):
        assert not gates.acquire_slot(f"b:{n}", place=float(n)).passed
    # Three end together (one look of the account's watch): one is below the provider's
    # concurrency, so it goes at once; one more takes the turn for the queue
    assert gates.release_slot("b:1") == ["b:5"]  # the turn: to the provider's queue
    gates.release_slot("b:2")
    assert gates.release_slot("b:3") == ["b:6"], "below max_concurrent: no turn needed"
    assert gates.acquire_slot("b:6", place=6.0).held == 2
    assert gates.acquire_slot("b:5", place=5.0).held == 3
    assert gates.release_slot(turn_of="b:5") == ["b:7"]


def test_many_free_places_in_the_providers_queue_are_filled_together(redis_url):
    # Given 2 processing at once and 8 queued ahead, at most 4 free places filled in order
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    provider = ProviderSettings(max_concurrent=2, queue_ahead=8)
    gates = Gates(client, redis_url, provider, slot_lease_s=60, ordered_queue_places=4)
    # Then while more than 4 of the queue's places are free, POSTs go together (no turn)
    for n in range(1, 7):
        assert gates.acquire_slot(f"b:{n}", place=float(n)).held == n
    assert client.get(keys.SLOT_TURN) is None
    # and with 4 left, one at a time in line
    assert gates.acquire_slot("b:7", place=7.0).held == 7
    assert client.get(keys.SLOT_TURN) == "b:7"
    for n in range(8, 12):
        assert not gates.acquire_slot(f"b:{n}", place=float(n)).passed
    assert gates.release_slot(turn_of="b:7") == ["b:8"], "the next in line takes the turn"
    # And while it holds it, an end leaving 4 places free wakes nobody; one leaving 5, all
    assert gates.release_slot("b:1") == []
    assert gates.release_slot("b:2") == ["b:9", "b:10", "b:11"]
    client.close()


def test_a_turn_holder_finding_no_slot_gives_the_turn_up(make_gates):
    gates = make_gates(max_concurrent=1, queue_ahead=1)
    assert gates.acquire_slot("b:1", place=1.0).passed
    assert gates.acquire_slot("b:2", place=2.0).passed
    gates.release_slot(turn_of="b:2")
    assert not gates.acquire_slot("b:3", place=3.0).passed
    gates.redis.set(keys.SLOT_TURN, "b:3")  # woken, then another took the freed slot
    assert not gates.acquire_slot("b:3", place=3.0).passed
    assert gates.redis.get(keys.SLOT_TURN) is None
    assert gates.release_slot("b:1") == ["b:3"], "the next freed slot wakes the line again"


def test_a_dead_turn_holder_holds_the_line_up_only_for_the_turns_lease(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    provider = ProviderSettings(max_concurrent=1, queue_ahead=2)
    gates = Gates(client, redis_url, provider, slot_lease_s=60, turn_lease_s=0.2)
    assert gates.acquire_slot("b:1", place=1.0).passed
    assert gates.acquire_slot("dead:2", place=2.0).passed  # takes the turn, never gives it up
    assert not gates.acquire_slot("b:3", place=3.0).passed
    assert gates.release_slot() == [], "the turn is held"
    time.sleep(0.3)
    assert gates.release_slot() == ["b:3"]
    client.close()


def test_an_expired_lease_frees_its_slot(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    gates = Gates(
        client, redis_url, ProviderSettings(max_concurrent=1, queue_ahead=0), slot_lease_s=0.2
    )
    assert gates.acquire_slot("crashed:1").passed
    assert not gates.acquire_slot("b:2").passed
    time.sleep(0.3)
    assert gates.acquire_slot("b:2").passed
    client.close()


def test_a_cool_down_is_shared_and_only_ever_lengthened(make_gates):
    one, two = make_gates(cooldown_default_s=3.0), make_gates()
    assert two.cooling().passed
    assert one.cool_down(None) == 3.0
    assert 2.5 < two.cooling().wait_s <= 3.0
    one.cool_down(0.5)  # a shorter Retry-After does not cut the hold-off short
    assert two.cooling().wait_s > 2.5


def test_the_poll_rate_is_shared(make_gates):
    one, two = make_gates(polls_per_second=2.0), make_gates(polls_per_second=2.0)
    assert one.take_poll().passed and two.take_poll().passed
    assert not one.take_poll().passed


def test_an_unreachable_redis_is_a_ledger_error_the_task_can_retry():
    from pipeline.errors import LedgerError
    from pipeline.local_servers import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=0.2)
    gates = Gates(client, url, ProviderSettings(), slot_lease_s=60)
    calls = (
        lambda: gates.reserve_start("b:1:1"),
        gates.cooling,
        lambda: gates.acquire_slot("b:1"),
        gates.release_slot,
    )
    for call in calls:
        with pytest.raises(LedgerError, match="Redis"):
            call()
    client.close()
