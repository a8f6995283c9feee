"""When lipdub looks at a prediction: first looks aimed at the time the provider has been
taking (learned from the processing times it reports), scouts and the looks they bring forward
while nothing is learned, and the account's watch, on the real parts (Redis, S3, the sandbox
over HTTP; the test's clock)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from pipeline.flow import run_step
from pipeline.flow.watch import watch
from pipeline.processing_time import ProcessingTimes
from tests.conftest import start_sandbox
from tests.integration.stack import plan, stack_settings, write_manifest
from tests.integration.test_durability import Steps

pytestmark = pytest.mark.slow

# The configured expectation a user has not tuned: 20 s + 1 s per video second.
POLLING = {
    "expected_fixed_s": 20.0,
    "expected_per_video_s": 1.0,
    "first_poll_min_s": 0.2,
    "max_interval_s": 60.0,
    "item_deadline_s": 3_000.0,
    "watch_every_s": 0.0,  # looks aimed by what was learned (the watch has its own test)
}


@pytest.fixture
def stepper(tmp_path, redis_url, s3_server, bucket) -> Callable[..., Steps]:
    """Steps on the real parts against a running sandbox, with these polling settings (and
    more sections, e.g. `provider={...}`)."""

    def make(sandbox: Any, polling: dict[str, Any], **sections: Any) -> Steps:
        return Steps(
            stack_settings(
                sandbox_url=sandbox.url,
                redis_url=redis_url,
                s3_url=s3_server.url,
                bucket=bucket,
                polling=polling,
                media={"cache_dir": tmp_path / "cache"},
                **sections,
            )
        )

    return make


def _first_polls(s: Steps, batch_id: str) -> list[float]:
    return [float(r["poll_interval_s"]) for r in s.rt.ledger.items(batch_id)]


@pytest.mark.parametrize("learn", [True, False])
def test_first_polls_follow_the_providers_own_processing_times(tmp_path, stepper, learn):
    # Given a provider that takes 0.3 s + 0.1 s per video second (it reports it), and
    # a first batch that taught lipdub so
    with start_sandbox(tmp_path, processing_fixed_s=0.3, processing_per_video_s=0.1) as sandbox:
        s = stepper(sandbox, {**POLLING, "learn": learn})
        settings = s.settings
        first = [(f"a{n}", 1.0 + n, 1.0, "cut_off") for n in range(4)]
        taught = s.control.start(plan(write_manifest(tmp_path / "a", first), settings))
        s.loop.run()
        # When the next batch's items are submitted
        later = [("b0", 2.5, 1.0, "cut_off"), ("b1", 6.5, 1.0, "cut_off")]
        batch_id = s.control.start(plan(write_manifest(tmp_path / "b", later), settings))
        s.loop.run(stop=lambda: all(r["state"] != "pending" and r["state"] != "ready"
                                    and r.get("poll_interval_s")
                                    for r in s.rt.ledger.items(batch_id)))  # fmt: skip
        line = ProcessingTimes(s.rt.ledger.redis).line(settings.provider.model_path, "cut_off")
        polls = _first_polls(s, batch_id)
        s.loop.run()
        s.close()
    assert set(s.states(taught).values()) == {"completed"}
    if learn:
        # Then each first poll comes when the provider should be done, not 20 s on
        assert line is not None and line.per_video_s == pytest.approx(0.1, abs=0.05)
        assert all(p < 3.0 for p in polls), polls
        assert polls[1] > polls[0]  # a longer video is looked at later
    else:
        # Or, with learning off, at the configured expectation
        assert polls == pytest.approx([22.5, 26.5], abs=0.1)


def test_scouts_learn_the_providers_time_and_the_other_looks_are_brought_forward(tmp_path, stepper):
    # Given nothing learned yet, a provider that takes about 0.4 s, and lipdub expecting
    # 20 s + 1 s per video second (the defaults' expectation; a floor of 0.2 s)
    with start_sandbox(tmp_path, processing_fixed_s=0.3, processing_per_video_s=0.1) as sandbox:
        s = stepper(sandbox, POLLING)
        settings = s.settings
        items = [(f"c{n}", 1.0, 0.5 + 0.1 * n, "cut_off") for n in range(6)]  # six pairs
        # When a batch of six is run
        batch_id = s.control.start(plan(write_manifest(tmp_path / "c", items), settings))
        s.loop.run()
        records = s.rt.ledger.items(batch_id)
        s.close()
    assert {r["state"] for r in records} == {"completed"}
    by_aim: dict[str, list[dict[str, str]]] = {}
    for record in records:
        by_aim.setdefault(record.get("first_look", "reused"), []).append(record)
    # Then the first three look early and often (the scouts), the others at the expectation
    assert len(by_aim["scout"]) == 3, {k: len(v) for k, v in by_aim.items()}
    assert all(float(r["poll_interval_s"]) < 1.0 for r in by_aim["scout"])
    others = by_aim.get("expected", []) + by_aim.get("learned", [])
    assert others
    # And no item waits for the 21 s expectation: once the scouts' times are learned, the
    # others' looks come when the line says they are done
    seen_after_s = [float(r["provider_done_at"]) - float(r["submitted_at"]) for r in records]
    assert max(seen_after_s) < 10.0, seen_after_s
    for record in by_aim.get("expected", []):
        assert int(record["polls"]) <= 2, record["polls"]


@pytest.mark.parametrize("watch_every_s", [0.5, 0.0])
def test_the_accounts_watch_looks_at_a_completed_prediction_before_its_scheduled_poll(
    tmp_path, stepper, watch_every_s
):
    # Given a provider that takes about 0.4 s while lipdub's first looks come at 20 s (the
    # expectation, nothing learned) and the account's watch lists completions every 0.5 s
    polling = {**POLLING, "learn": False, "watch_every_s": watch_every_s}
    with start_sandbox(tmp_path, processing_fixed_s=0.3, processing_per_video_s=0.1) as sandbox:
        s = stepper(sandbox, polling)
        settings = s.settings
        items = [(f"w{n}", 1.0, 0.5 + 0.1 * n, "cut_off") for n in range(3)]
        # When a batch is run
        batch_id = s.control.start(plan(write_manifest(tmp_path / "w", items), settings))
        s.loop.run()
        records = s.rt.ledger.items(batch_id)
        lists = httpx.get(f"{sandbox.url}/_sandbox/stats", timeout=10).json().get("lists", 0)
        s.close()
    assert {r["state"] for r in records} == {"completed"}
    seen_after_s = [float(r["provider_done_at"]) - float(r["submitted_at"]) for r in records]
    if watch_every_s:
        # Then each is seen within seconds of its end, with the one look the watch asked for
        assert max(seen_after_s) < 10.0, seen_after_s
        assert [int(r["polls"]) for r in records] == [1, 1, 1]
        assert lists > 1  # (the finalizer's audit lists once)
        assert "watch" in {step.step for step in s.loop.ran}
    else:
        # Or, with the watch off, at the first scheduled look (21 s)
        assert min(seen_after_s) >= 20.0, seen_after_s
        assert "watch" not in {step.step for step in s.loop.ran}


@pytest.mark.parametrize("watch_every_s", [0.5, 0.0])
def test_the_accounts_watch_sees_a_failed_prediction_before_its_scheduled_poll(
    tmp_path, stepper, media, watch_every_s
):
    # Given a video without a face, which the provider fails within a second, while lipdub's
    # first look comes at 40 s (twice the expectation, nothing learned, with the watch on)
    polling = {**POLLING, "learn": False, "watch_every_s": watch_every_s}
    with start_sandbox(tmp_path, processing_fixed_s=0.3, processing_per_video_s=0.1) as sandbox:
        s = stepper(sandbox, polling)
        settings = s.settings
        folder = tmp_path / "f"
        folder.mkdir()
        (folder / "noface.mp4").write_bytes(media["video_noface"].read_bytes())
        (folder / "noface.wav").write_bytes(media["audio_0_6s"].read_bytes())
        manifest = folder / "manifest.csv"
        manifest.write_text("id,video,audio,sync_mode\nnoface,noface.mp4,noface.wav,cut_off\n")
        # When it is run
        batch_id = s.control.start(plan(manifest, settings))
        s.loop.run()
        (record,) = s.rt.ledger.items(batch_id)
        s.close()
    # Then it fails for its input, with the provider's reason
    assert record["state"] == "failed" and record["error_kind"] == "input", record
    seen_after_s = float(record["finished_at"]) - float(record["submitted_at"])
    if watch_every_s:
        assert int(record["polls"]) == 1  # the one look the watch asked for
        # seen within seconds of its end: the watch lists failed predictions too, so the
        # account's slot is not held until the scheduled look
        assert seen_after_s < 10.0, seen_after_s
    else:
        assert seen_after_s >= 20.0, seen_after_s  # the first scheduled look (21 s)


def test_the_watch_asks_for_each_ended_prediction_once(tmp_path, stepper):
    # Given three items running on a provider that is done with them, their looks far off
    polling = {**POLLING, "learn": False, "watch_every_s": 1.0}
    with start_sandbox(tmp_path, processing_fixed_s=0.1, processing_per_video_s=0.0) as sandbox:
        s = stepper(sandbox, polling)
        settings = s.settings
        items = [(f"o{n}", 1.0, 0.5 + 0.1 * n, "cut_off") for n in range(3)]
        batch_id = s.control.start(plan(write_manifest(tmp_path / "o", items), settings))
        s.loop.run(stop=lambda: set(s.states(batch_id).values()) == {"running"})
        s.loop.take("watch")
        deadline = time.monotonic() + 30
        while len(sandbox.engine.list(created_after=None, created_before=None, model=None,
                                      status="completed")) < 3:  # fmt: skip
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # When the account's watch looks twice
        first, second = watch(s.rt), watch(s.rt)
        s.close()
    # Then the first look asks for each item's poll now, and the second for none again
    polls = sorted(n.item_id or "" for n in first if n.step == "poll")
    assert polls == ["o0", "o1", "o2"]
    assert all(n.countdown_s == 0 for n in first if n.step == "poll")
    assert [n.step for n in second] == ["watch"]
    # And each look schedules the next one an interval later
    assert [n.countdown_s for n in first if n.step == "watch"] == [1.0]


@pytest.mark.parametrize(
    ("watch_every_s", "first_wait_s", "second_wait_s"), [(1.0, 4.0, 6.0), (0.0, 2.0, 0.2)]
)
def test_after_a_first_look_that_misses_the_waits_grow_from_it_or_from_the_floor(
    tmp_path, stepper, watch_every_s, first_wait_s, second_wait_s
):
    # Given a prediction the provider takes a minute for, first looked at after 2 s (nothing
    # learned), growth 1.5 and a floor of 0.2 s
    polling = {
        **POLLING, "learn": False, "watch_every_s": watch_every_s, "expected_fixed_s": 2.0,
        "expected_per_video_s": 0.0, "growth_factor": 1.5,
    }  # fmt: skip
    with start_sandbox(tmp_path, processing_fixed_s=60.0) as sandbox:
        s = stepper(sandbox, polling)
        settings = s.settings
        batch_id = s.control.start(
            plan(write_manifest(tmp_path / "g", [("g0", 1.0, 0.8, "cut_off")]), settings)
        )
        s.loop.run(stop=lambda: any(n.step == "poll" for n in s.loop.pending()))
        [first] = s.loop.take("poll")
        # (the expectation; twice it with the watch on: its looks are the safety net)
        assert first.countdown_s == pytest.approx(first_wait_s)
        # When the first look finds it unfinished
        following = run_step(s.rt, "poll", batch_id, "g0")
        s.close()
    # Then, with the account's watch, the next look waits 1.5 x the first;
    # without it, the looks start again from the floor (they are all there is)
    [again] = [n for n in following if n.step == "poll"]
    assert again.countdown_s == pytest.approx(second_wait_s)


def test_a_prediction_sent_into_the_providers_queue_is_first_looked_at_a_processing_time_later(
    tmp_path, stepper
):
    # Given an account that processes one prediction at a time and lipdub's default queue
    # ahead (one more sent, which the provider starts when the first ends), nothing learned
    with start_sandbox(tmp_path, processing_fixed_s=0.3) as sandbox:
        s = stepper(sandbox, {**POLLING, "learn": False}, provider={"max_concurrent": 1})
        settings = s.settings
        # When two items of the same length are submitted
        items = [("one", 2.5, 1.0, "cut_off"), ("two", 2.5, 1.2, "cut_off")]
        batch_id = s.control.start(plan(write_manifest(tmp_path / "m", items), settings))
        s.loop.run(stop=lambda: all(r.get("poll_interval_s") for r in s.rt.ledger.items(batch_id)))
        records = {r["id"]: r for r in s.rt.ledger.items(batch_id)}
        assert len(records) == 2
        s.loop.run()
        s.close()
    # Then the one sent second waits in the provider's queue and is first looked at one
    # expected processing time (20 s + 2.5 s) after the other, and both complete
    first_looks = {r["queued"]: float(r["poll_interval_s"]) for r in records.values()}
    assert first_looks == {"0": pytest.approx(22.5, abs=0.1), "1": pytest.approx(45.0, abs=0.1)}
    assert set(s.states(batch_id).values()) == {"completed"}
