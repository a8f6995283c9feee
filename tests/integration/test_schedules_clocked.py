"""Scheduled batches on the real parts with the test's clock: the window, the nightly budget,
missed runs and picking each manifest up once.

Steps run in the test's thread (`tests.integration.stepping`) against a real Redis, moto's S3
and the sandbox over HTTP; the clock moves only when the test moves it, so a window closing
or a night passing takes no real time.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

from pipeline.batches import BatchControl
from pipeline.keys import slot_member
from pipeline.runtime import Runtime
from pipeline.schedules.gate import night_scope
from pipeline.schedules.notices import MAX_ATTEMPTS
from pipeline.schedules.runner import Scheduler, settings_planner
from pipeline.schedules.store import ScheduleStore
from pipeline.settings import Settings
from tests.conftest import start_sandbox
from tests.integration.listener import Listener
from tests.integration.stack import accepted_submits, plan, stack_settings, write_manifest
from tests.integration.stepping import StepLoop, TestClock, utc


@dataclass
class World:
    """One schedule's world: settings, runtime, clock, step loop, scheduler, inbox."""

    settings: Settings
    rt: Runtime
    clock: TestClock
    loop: StepLoop
    control: BatchControl
    scheduler: Scheduler
    store: ScheduleStore
    inbox: Path
    sandbox_url: str

    def items(self, batch_id: str) -> dict[str, dict[str, str]]:
        return {r["id"]: r for r in self.rt.ledger.items(batch_id)}

    def fresh_scheduler(self, **kwargs: object) -> Scheduler:
        """Another scheduler process (its own Redis connection), on the same clock."""
        rt = Runtime.from_settings(self.settings, clock=self.clock)
        control = BatchControl(
            rt.ledger, self.loop, self.settings, clock=self.clock, storage=rt.storage
        )
        planner = kwargs.get("planner") or settings_planner(self.settings)
        return Scheduler.build(
            self.settings,
            rt.schedules,
            control,
            rt.storage.s3,
            planner=planner,  # type: ignore[arg-type]
        )


@pytest.fixture
def world(tmp_path, redis_url, s3_server, bucket):
    made: list[object] = []

    def make(schedule: dict[str, object], *, start, sandbox_options=None, **sections) -> World:
        sandbox = start_sandbox(tmp_path, **(sandbox_options or {}))
        sandbox.__enter__()
        made.append(sandbox)
        inbox = tmp_path / "inbox"
        inbox.mkdir(exist_ok=True)
        spec = {"cron": "0 1 * * *", "timezone": "UTC", "inbox": str(inbox), **schedule}
        settings = stack_settings(
            sandbox_url=sandbox.url,
            redis_url=redis_url,
            s3_url=s3_server.url,
            bucket=bucket,
            schedule={"inbox_settle_s": 0, "yaml": json.dumps({"schedules": {"night": spec}})},
            media={"cache_dir": tmp_path / "cache"},
            **sections,
        )
        clock = TestClock(start.timestamp())
        rt = Runtime.from_settings(settings, clock=clock)
        rt.storage.ensure_bucket()
        loop = StepLoop(rt, clock)
        control = BatchControl(rt.ledger, loop, settings, clock=clock, storage=rt.storage)
        scheduler = Scheduler.build(settings, rt.schedules, control, rt.storage.s3)
        return World(
            settings, rt, clock, loop, control, scheduler, scheduler.store, inbox, sandbox.url
        )

    yield make
    for sandbox in made:
        sandbox.__exit__(None, None, None)  # type: ignore[attr-defined]


def drop(inbox: Path, name: str, items: list[tuple[str, float, float, str]]) -> Path:
    """Generate media in the inbox and drop a manifest named `name` for it."""
    manifest = write_manifest(inbox, items)
    return manifest.rename(inbox / name)


def test_no_submit_after_the_window_closes_collects_continue_and_the_rest_resume_next_window(
    world,
):
    # Given a window 01:00-01:30, one prediction at a time (none queued ahead), and a
    # manifest picked up at 00:50
    w = world(
        {"window": {"start": "01:00", "end": "01:30"}},
        start=utc(2026, 11, 24, 0, 50),
        sandbox_options={"processing_fixed_s": 0.3},
        provider={"max_concurrent": 1, "queue_ahead": 0},
    )
    drop(w.inbox, "catalog.csv", [(f"w{n}", 1.0, 1.0 + n / 10, "cut_off") for n in range(3)])
    outcome = w.scheduler.run("night")
    [started] = outcome.started
    batch_id = started["batch_id"]
    # When its steps run before the window opens
    w.loop.run()
    # Then everything is uploaded and nothing is submitted: the items wait for the window
    assert accepted_submits(w.sandbox_url) == []
    items = w.items(batch_id)
    assert {r["state"] for r in items.values()} == {"ready"}
    assert {r["waiting_on"] for r in items.values()} == {"window"}
    assert w.store.parked_count("night") == 3
    assert not w.rt.ledger.redis.keys("lipdub:notice:*"), "started before its window: no notice"

    # When the window is open (late in it), beat's tick wakes them; the first is submitted
    w.clock.set(utc(2026, 11, 24, 1, 29, 50))
    w.scheduler.tick()
    w.loop.run(stop=lambda: w.items(batch_id)["w0"]["state"] == "running")
    assert len(accepted_submits(w.sandbox_url)) == 1

    # When the window closes while that prediction is in flight
    w.clock.set(utc(2026, 11, 24, 1, 30, 1))
    w.loop.run()
    # Then it is still collected, and nothing else is submitted after the close
    items = w.items(batch_id)
    assert items["w0"]["state"] == "completed"
    assert len(accepted_submits(w.sandbox_url)) == 1
    assert {items["w1"]["state"], items["w2"]["state"]} == {"ready"}
    next_open = utc(2026, 11, 25, 1, 0).timestamp()
    assert float(items["w1"]["next_due_at"]) == next_open, "the sweeper's record: due then"
    notices = w.rt.ledger.redis.keys("lipdub:notice:*window*")
    assert len(notices) == 1, "the window's closing with items waiting is notified, once"
    tonight = w.rt.ledger.budget(night_scope("night", "2026-11-24"))
    assert tonight["reserved_usd"] == 0, "waiting items hold no reservation over the day"

    # When the next window opens
    w.clock.set(utc(2026, 11, 25, 1, 0, 5))
    w.scheduler.tick()
    w.loop.run()
    # Then the rest are submitted, the batch finishes, and its manifest is filed in done/
    assert len(accepted_submits(w.sandbox_url)) == 3
    status = w.control.status(batch_id)
    assert status["state"] == "finished" and status["counts"]["completed"] == 3
    assert (w.inbox / "done" / "catalog.csv").exists()
    report = json.loads((w.inbox / "done" / "catalog.report.json").read_text())
    assert report["batch_id"] == batch_id
    assert not (w.inbox / "processing" / "catalog.csv").exists()


def test_the_nightly_budget_is_shared_by_two_manifests_and_the_rest_waits_for_the_next_night(
    world, tmp_path
):
    # Given two manifests of two items each, all the same price, and a budget for three a night
    inbox = tmp_path / "inbox"
    drop(inbox, "a.csv", [(f"a{n}", 1.0, 1.0 + n / 10, "cut_off") for n in range(2)])
    drop(inbox, "b.csv", [(f"b{n}", 1.0, 1.2 + n / 10, "cut_off") for n in range(2)])
    per_item = plan(inbox / "a.csv", Settings()).items[0].price_usd
    w = world({"nightly_budget_usd": str(per_item * 3)}, start=utc(2026, 11, 24, 10, 0))
    # When the schedule picks both up and their steps run
    outcome = w.scheduler.run("night")
    assert sorted(s["manifest"] for s in outcome.started) == ["a.csv", "b.csv"]
    w.loop.run()
    # Then three items are paid for tonight, and the fourth waits for the next night
    assert len(accepted_submits(w.sandbox_url)) == 3
    tonight = w.rt.ledger.budget(night_scope("night", "2026-11-24"))
    assert tonight["spent_usd"] == per_item * 3 and tonight["reserved_usd"] == 0
    batches = {s["manifest"]: s["batch_id"] for s in outcome.started}
    records = [r for b in batches.values() for r in w.rt.ledger.items(b)]
    waiting = [r for r in records if r["state"] == "ready"]
    assert len(waiting) == 1 and waiting[0]["waiting_on"] == "nightly budget"
    assert w.rt.ledger.redis.keys("lipdub:notice:*budget*"), "the spent budget is notified"

    # When the next night starts
    w.clock.set(utc(2026, 11, 25, 0, 0, 1))
    w.scheduler.tick()
    w.loop.run()
    # Then the fourth is paid from the new night's budget and both manifests are done
    assert len(accepted_submits(w.sandbox_url)) == 4
    assert w.rt.ledger.budget(night_scope("night", "2026-11-25"))["spent_usd"] == per_item
    for manifest, batch_id in batches.items():
        status = w.control.status(batch_id)
        assert status["counts"]["completed"] == 2
        assert Decimal(status["spent_usd"]) == per_item * 2, "each batch's own spend"
        assert (w.inbox / "done" / manifest).exists()


def test_an_item_dearer_than_a_whole_night_is_skipped_not_parked_forever(world):
    w = world({"nightly_budget_usd": "0.01"}, start=utc(2026, 11, 24, 10, 0))
    drop(w.inbox, "big.csv", [("big", 2.0, 2.0, "cut_off")])
    [started] = w.scheduler.run("night").started
    w.loop.run()
    [item] = w.rt.ledger.items(started["batch_id"])
    assert item["state"] == "skipped" and "whole night" in item["error"]
    assert accepted_submits(w.sandbox_url) == []
    assert (w.inbox / "failed" / "big.csv").exists()
    assert (w.inbox / "failed" / "big.report.md").exists()


def test_a_missed_run_runs_late_within_its_deadline_and_is_skipped_and_notified_past_it(world):
    # Given a 01:00 schedule that may run up to an hour late, run once on time yesterday
    w = world(
        {"missed": "run_late", "late_deadline_s": 3600, "window": None},
        start=utc(2026, 11, 23, 1, 0, 10),
    )
    assert [o.trigger for o in w.scheduler.tick()] == ["run (2026-11-23 01:00:00 UTC, 10 s late)"]
    drop(w.inbox, "late.csv", [("l0", 1.0, 1.0, "cut_off")])
    # When the scheduler was down at 01:00 today and is back at 01:40
    w.clock.set(utc(2026, 11, 24, 1, 40))
    [outcome] = w.scheduler.tick()
    # Then the run happens late, saying so, and picks the manifest up
    assert outcome.trigger.startswith("run_late (2026-11-24 01:00:00 UTC, 2400 s late)")
    assert [s["manifest"] for s in outcome.started] == ["late.csv"]
    # And a second tick does not run it again
    assert w.scheduler.tick() == []

    # When the scheduler is down over the next 01:00 until 03:30 (past the deadline)
    drop(w.inbox, "later.csv", [("l1", 1.0, 1.0, "cut_off")])
    w.clock.set(utc(2026, 11, 25, 3, 30))
    [outcome] = w.scheduler.tick()
    # Then nothing is started: the run is skipped, logged in its outcome and notified
    assert outcome.trigger == "missed" and outcome.started == []
    assert "skipped the run due at 2026-11-25 01:00:00 UTC" in outcome.errors[0]
    assert (w.inbox / "later.csv").exists()
    assert w.rt.ledger.redis.keys("lipdub:notice:night.missed.*")
    assert w.store.last_outcome("night")["trigger"] == "missed"
    # And later ticks wait for the next fire time
    w.clock.set(utc(2026, 11, 25, 9, 0))
    assert w.scheduler.tick() == []


def test_missed_skip_policy_skips_anything_not_on_time(world):
    w = world({"missed": "skip"}, start=utc(2026, 11, 23, 1, 0, 5))
    w.scheduler.tick()
    w.clock.set(utc(2026, 11, 24, 1, 5))
    [outcome] = w.scheduler.tick()
    assert outcome.trigger == "missed"


def test_a_schedule_first_seen_after_its_fire_time_does_not_run_that_fire_time(world):
    w = world({}, start=utc(2026, 11, 24, 14, 0))
    drop(w.inbox, "x.csv", [("x0", 1.0, 1.0, "cut_off")])
    assert w.scheduler.tick() == []
    assert (w.inbox / "x.csv").exists()
    w.clock.set(utc(2026, 11, 25, 1, 0, 30))
    [outcome] = w.scheduler.tick()
    assert outcome.trigger.startswith("run (") and len(outcome.started) == 1


def test_two_schedulers_racing_start_a_manifest_once(world):
    w = world({}, start=utc(2026, 11, 24, 10, 0))
    drop(w.inbox, "race.csv", [(f"r{n}", 1.0, 1.0, "cut_off") for n in range(2)])
    schedulers = [w.fresh_scheduler() for _ in range(4)]
    outcomes = []
    barrier = threading.Barrier(len(schedulers))

    def run(scheduler: Scheduler) -> None:
        barrier.wait()
        outcomes.append(scheduler.run("night"))

    threads = [threading.Thread(target=run, args=(s,)) for s in schedulers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    started = [s for o in outcomes for s in o.started]
    assert len(started) == 1
    assert w.rt.ledger.batch_ids(10) == [started[0]["batch_id"]]
    # And a scheduler started afresh later does not start it again
    assert w.fresh_scheduler().run("night").started == []
    assert w.rt.ledger.batch_ids(10) == [started[0]["batch_id"]]


class Killed(Exception):
    """Stands for the process dying in the middle of a pickup."""


def test_a_pickup_that_died_half_way_is_finished_once_by_a_later_run(world):
    w = world({}, start=utc(2026, 11, 24, 10, 0))
    drop(w.inbox, "crash.csv", [("c0", 1.0, 1.0, "cut_off")])
    real_planner = settings_planner(w.settings)

    def dying_planner(*args: object) -> object:
        raise Killed

    # Given a run that claimed the manifest and moved it, then died while planning it
    with pytest.raises(Killed):
        w.fresh_scheduler(planner=dying_planner).run("night")
    assert (w.inbox / "processing" / "crash.csv").exists()
    assert w.rt.ledger.batch_ids(10) == []
    # When another run comes while its claim still holds: it leaves the manifest alone
    assert w.fresh_scheduler(planner=real_planner).run("night").started == []
    # When the claim has lapsed, the next run finishes the pickup, with the id chosen first
    pickup = next(iter(w.rt.ledger.redis.scan_iter("lipdub:schedule:night:pickup:*")))
    chosen = w.rt.ledger.redis.hget(pickup, "batch_id")
    w.clock.set(w.clock() + w.settings.schedule.pickup_lease_s + 1)
    [started] = w.fresh_scheduler(planner=real_planner).run("night").started
    assert started["batch_id"] == chosen
    assert w.fresh_scheduler(planner=real_planner).run("night").started == []
    assert w.rt.ledger.batch_ids(10) == [chosen]
    w.loop.run()
    assert len(accepted_submits(w.sandbox_url)) == 1
    assert (w.inbox / "done" / "crash.csv").exists()


def test_an_invalid_manifest_goes_to_failed_with_every_problem_and_costs_nothing(world):
    w = world({}, start=utc(2026, 11, 24, 10, 0))
    (w.inbox / "bad.csv").write_text("id,video,audio\nb1,missing.mp4,missing.wav\n")
    outcome = w.scheduler.run("night")
    assert outcome.started == [] and outcome.refused[0]["manifest"] == "bad.csv"
    assert (w.inbox / "failed" / "bad.csv").exists()
    errors = (w.inbox / "failed" / "bad.errors.txt").read_text()
    assert "row 1" in errors and "missing.mp4" in errors
    assert w.rt.ledger.redis.keys("lipdub:notice:night.refused.*")
    assert accepted_submits(w.sandbox_url) == []


def test_a_manifest_named_like_one_still_processing_waits_for_it(world):
    w = world({"window": {"start": "01:00", "end": "02:00"}}, start=utc(2026, 11, 24, 10, 0))
    drop(w.inbox, "same.csv", [("s0", 1.0, 1.0, "cut_off")])
    assert len(w.scheduler.run("night").started) == 1
    drop(w.inbox, "same.csv", [("s1", 1.0, 1.0, "cut_off")])
    outcome = w.scheduler.run("night")
    assert outcome.started == [] and "still processing" in outcome.waiting[0]
    assert (w.inbox / "same.csv").exists()


def test_an_s3_inbox_finds_relative_inputs_beside_the_manifest(world, tmp_path):
    # Given an S3 inbox holding a manifest whose inputs are named relative to it
    w = world({}, start=utc(2026, 11, 24, 10, 0))
    s3 = w.rt.storage.s3
    bucket = w.settings.storage.bucket
    local = write_manifest(tmp_path / "media", [("s3a", 1.0, 1.0, "loop")])
    for name in ("s3a.mp4", "s3a.wav"):
        s3.upload_file(str(local.parent / name), bucket, f"inbox/media/{name}")
    s3.put_object(
        Bucket=bucket,
        Key="inbox/cat.csv",
        Body=b"id,video,audio\ns3a,media/s3a.mp4,media/s3a.wav\n",
    )
    spec = w.scheduler.schedules["night"].model_copy(update={"inbox": f"s3://{bucket}/inbox/"})
    w.scheduler.schedules["night"] = spec
    w.rt.schedules["night"] = spec
    # When the schedule runs, and its batch runs
    [started] = w.scheduler.run("night").started
    w.loop.run()
    # Then the inputs were used in place, and the manifest is filed in done/ with its report
    [item] = w.rt.ledger.items(started["batch_id"])
    assert item["state"] == "completed"
    assert json.loads(item["video"])["location"] == f"s3://{bucket}/inbox/media/s3a.mp4"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="inbox/")["Contents"]}
    assert {"inbox/done/cat.csv", "inbox/done/cat.report.json"} <= keys
    assert "inbox/cat.csv" not in keys and "inbox/processing/cat.csv" not in keys
    assert not any(k.startswith("media/") for k in _all_keys(s3, bucket))


def _all_keys(s3: object, bucket: str) -> list[str]:
    listing = s3.list_objects_v2(Bucket=bucket)  # type: ignore[attr-defined]
    return [o["Key"] for o in listing.get("Contents", [])]


def test_scheduled_outputs_go_under_the_schedules_prefix(world):
    w = world({"output_prefix": "nightly/de/"}, start=utc(2026, 11, 24, 10, 0))
    drop(w.inbox, "o.csv", [("o0", 1.0, 1.0, "cut_off")])
    [started] = w.scheduler.run("night").started
    w.loop.run()
    [item] = w.rt.ledger.items(started["batch_id"])
    assert item["output_key"] == f"nightly/de/{started['batch_id']}/o0.mp4"


def test_a_parked_item_is_not_woken_twice_by_two_ticks(world):
    w = world({"window": {"start": "01:00", "end": "02:00"}}, start=utc(2026, 11, 24, 0, 30))
    drop(w.inbox, "p.csv", [("p0", 1.0, 1.0, "cut_off")])
    [started] = w.scheduler.run("night").started
    w.loop.run()
    member = slot_member(started["batch_id"], "p0")
    assert w.rt.ledger.redis.zscore("lipdub:schedule:night:parked", member) is not None
    w.clock.set(utc(2026, 11, 24, 1, 0, 1))
    assert w.scheduler.wake("night") == 1
    assert w.fresh_scheduler().wake("night") == 0


def test_an_unreachable_inbox_is_reported_in_the_outcome(world):
    w = world({}, start=utc(2026, 11, 24, 10, 0))
    spec = w.scheduler.schedules["night"].model_copy(update={"inbox": "s3://no-such-bucket-x/in/"})
    w.scheduler.schedules["night"] = spec
    outcome = w.scheduler.run("night")
    assert outcome.started == [] and "could not list the inbox" in outcome.errors[0]


def test_cancelling_a_scheduled_batch_ends_its_parked_items_now(world):
    w = world({"window": {"start": "01:00", "end": "02:00"}}, start=utc(2026, 11, 24, 10, 0))
    drop(w.inbox, "c.csv", [(f"k{n}", 1.0, 1.0 + n / 10, "cut_off") for n in range(2)])
    [started] = w.scheduler.run("night").started
    w.loop.run()
    assert {r["state"] for r in w.rt.ledger.items(started["batch_id"])} == {"ready"}
    w.control.cancel(started["batch_id"])
    w.loop.run()
    status = w.control.status(started["batch_id"])
    assert status["state"] == "finished" and status["counts"]["cancelled"] == 2
    assert (w.inbox / "failed" / "c.csv").exists()
    assert accepted_submits(w.sandbox_url) == []
    # Its entries in the parked set, woken later, change nothing.
    w.clock.set(utc(2026, 11, 25, 1, 0, 1))
    w.scheduler.tick()
    w.loop.run()
    assert accepted_submits(w.sandbox_url) == []


def test_a_failing_notification_url_is_retried_then_given_up_and_never_holds_the_batch(world):
    with Listener(status=500) as listener:
        w = world({"notify_url": listener.json_url}, start=utc(2026, 11, 24, 10, 0))
        drop(w.inbox, "n.csv", [("q0", 1.0, 1.0, "cut_off")])
        [started] = w.scheduler.run("night").started
        # When the batch runs while the notification URL answers 500
        w.loop.run()
        # Then the batch finished and was filed all the same
        assert w.control.status(started["batch_id"])["state"] == "finished"
        assert (w.inbox / "done" / "n.csv").exists()
        # And the notice was tried MAX_ATTEMPTS times, waiting longer each time, then given up
        attempts = [s for s in w.loop.ran if s.step == "notify"]
        assert len(attempts) == MAX_ATTEMPTS
        [key] = w.rt.ledger.redis.keys("lipdub:notice:*finished*")
        assert w.rt.ledger.redis.hget(key, "sent") == (
            "gave up: target 1: the service refused it or could not be reached"
        )
        assert listener.bodies == []


def test_a_notification_is_delivered_once_as_a_slack_body(world):
    with Listener() as listener:
        w = world({"notify_url": listener.json_url}, start=utc(2026, 11, 24, 10, 0))
        (w.inbox / "bad.csv").write_text("id,video,audio\nb1,nope.mp4,nope.wav\n")
        drop(w.inbox, "good.csv", [("g0", 1.0, 1.0, "cut_off")])
        outcome = w.scheduler.run("night")
        w.loop.run()
        texts = listener.texts()
        assert len(texts) == 2, texts
        refused = next(t for t in texts if "refused" in t)
        assert "`bad.csv` was refused, nothing was spent" in refused
        finished = next(t for t in texts if "finished" in t)
        assert f"batch `{outcome.started[0]['batch_id']}` finished: 1/1 completed" in finished
        # Run again: nothing new to say
        w.scheduler.run("night")
        w.loop.run()
        assert len(listener.texts()) == 2


def test_raising_tonights_budget_lets_the_parked_items_run_tonight(world, tmp_path):
    inbox = tmp_path / "inbox"
    drop(inbox, "r.csv", [(f"u{n}", 1.0, 1.0 + n / 10, "cut_off") for n in range(3)])
    per_item = plan(inbox / "r.csv", Settings()).items[0].price_usd
    w = world({"nightly_budget_usd": str(per_item)}, start=utc(2026, 11, 24, 10, 0))
    [started] = w.scheduler.run("night").started
    w.scheduler.tick()  # tonight's limit, as configured
    w.loop.run()
    assert len(accepted_submits(w.sandbox_url)) == 1
    # When the configuration raises tonight's budget, the next tick wakes the parked items
    raised = w.scheduler.schedules["night"].model_copy(update={"nightly_budget_usd": per_item * 2})
    w.scheduler.schedules["night"] = raised
    w.clock.set(w.clock() + 30)
    w.scheduler.tick()
    w.loop.run()
    # Then one more fits tonight; the last waits for the next night
    assert len(accepted_submits(w.sandbox_url)) == 2
    waiting = [r for r in w.rt.ledger.items(started["batch_id"]) if r["state"] == "ready"]
    assert len(waiting) == 1 and waiting[0]["waiting_on"] == "nightly budget"
    assert len(w.rt.ledger.redis.keys("lipdub:notice:*budget*")) == 1, "notified once a night"
