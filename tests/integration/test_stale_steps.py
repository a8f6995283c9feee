"""A stale step never undoes a newer submit attempt: the pair is not paid for twice.

Steps are delivered at least once: the sweeper re-sends a step it thinks lost, Redis
redelivers an unacknowledged task. Two copies of a step read the same attempt; if one of them
waits on the provider while the other goes on and a new attempt starts, the late copy finds
the item in the same state (`submitting`, `running`) of a *different* attempt. Found by `make
chaos` (the secrets scenario, 2026-11-24): two reconcile copies, the late one sent the next
attempt's in-flight intent back to `ready`, and the pair was posted again.

Here the interleaving is exact. The steps are the real ones on the real parts (Redis, moto's
S3, the sandbox over HTTP), run in the test's thread on the test's clock; the late copy runs
in "worker B", whose injected httpx transport holds its provider call while "worker A" runs
the other copy and the next attempt.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from celery.exceptions import Reject

from pipeline.batches import BatchControl
from pipeline.flow import run_step
from pipeline.flow.common import in_flight_limit
from pipeline.local_servers import free_port
from pipeline.runtime import Runtime
from pipeline.settings import Settings
from pipeline.steps import Next
from pipeline.sweep import send_again
from tests.conftest import start_sandbox
from tests.fault_seeds import first_seed, submit_key
from tests.integration.stack import accepted_submits, plan, stack_settings, write_manifest
from tests.integration.stepping import StepLoop, TestClock
from workers.app import create_app

Action = Callable[[httpx.Request, Callable[[], httpx.Response]], httpx.Response]


class Interleave(httpx.BaseTransport):
    """The real HTTP transport, with one-shot actions at chosen requests (`METHOD /path`).
    An action gets the request and a `forward()` that sends it for real."""

    def __init__(self) -> None:
        self._real = httpx.HTTPTransport()
        self._actions: list[tuple[str, Action]] = []

    def at(self, request_line: str, action: Action) -> None:
        self._actions.append((request_line, action))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        line = f"{request.method} {request.url.path}"
        for n, (wanted, action) in enumerate(self._actions):
            if line == wanted:
                del self._actions[n]
                return action(request, lambda: self._real.handle_request(request))
        return self._real.handle_request(request)


SUBMIT = "POST /api/v3/sync/lipsync-3"
LIST = "POST /api/v3/predictions"


@dataclass
class Workers:
    """Two workers' runtimes on one clock; A's step loop; the batch control."""

    settings: Settings
    clock: TestClock
    a: Runtime
    b: Runtime
    a_http: Interleave
    b_http: Interleave
    loop: StepLoop
    control: BatchControl
    sandbox_url: str

    def item(self, batch_id: str) -> dict[str, str]:
        [record] = self.a.ledger.items(batch_id)
        return record


@pytest.fixture
def workers(tmp_path, redis_url, s3_server, bucket) -> Iterator[Callable[..., Workers]]:
    sandboxes = []

    def make(provider: dict[str, object] | None = None, **sandbox_options: object) -> Workers:
        sandbox = start_sandbox(tmp_path, processing_fixed_s=0.2, **sandbox_options)
        sandbox.__enter__()
        sandboxes.append(sandbox)
        settings = stack_settings(
            sandbox_url=sandbox.url,
            redis_url=redis_url,
            s3_url=s3_server.url,
            bucket=bucket,
            provider={"submit_timeout_s": 1.0, **(provider or {})},
            polling={"reconcile_grace_s": 5.0},
            worker={"max_attempts": 3, "retry_delay_s": 1.0},
            media={"cache_dir": tmp_path / "cache"},
        )
        clock = TestClock(1_795_000_000.0)
        a_http, b_http = Interleave(), Interleave()
        a = Runtime.from_settings(settings, clock=clock, transport=a_http)
        b = Runtime.from_settings(settings, clock=clock, transport=b_http)
        a.storage.ensure_bucket()
        loop = StepLoop(a, clock)
        control = BatchControl(a.ledger, loop, settings, clock=clock, storage=a.storage)
        return Workers(settings, clock, a, b, a_http, b_http, loop, control, sandbox.url)

    yield make
    for sandbox in sandboxes:
        sandbox.__exit__(None, None, None)


def lost_on_the_way(
    request: httpx.Request, forward: Callable[[], httpx.Response]
) -> httpx.Response:
    """The POST left and no answer came back; the provider never got it (nothing created)."""
    raise httpx.ReadTimeout("timed out", request=request)


class HeldPost:
    """Holds a POST after its intent is recorded, until the test lets it go."""

    def __init__(self) -> None:
        self.posting = threading.Event()
        self.go = threading.Event()

    def __call__(
        self, request: httpx.Request, forward: Callable[[], httpx.Response]
    ) -> httpx.Response:
        self.posting.set()
        assert self.go.wait(30), "the test never let the POST go"
        return forward()


def test_a_late_reconcile_copy_does_not_undo_the_next_attempts_intent(tmp_path, workers):
    w = workers()
    manifest = write_manifest(tmp_path / "m", [("r0", 1.0, 1.0, "cut_off")])
    # Given a submit whose POST was lost on the way: outcome unknown, nothing created
    w.a_http.at(SUBMIT, lost_on_the_way)
    batch_id = w.control.start(plan(manifest, w.settings))
    w.loop.run(stop=lambda: bool(w.loop.take("reconcile")))
    item = w.item(batch_id)
    assert item["state"] == "submitting" and item["submits"] == "1"
    # and two copies of its reconcile step (one swept or redelivered), due after the grace
    grace_s = w.settings.polling.reconcile_grace_s + w.settings.provider.submit_timeout_s
    w.clock.set(float(item["intent_at"]) + grace_s + 1)
    held = HeldPost()
    following: dict[str, list[Next]] = {}
    next_attempt = threading.Thread(
        target=lambda: following.update(x=run_step(w.a, "submit", batch_id, "r0"))
    )

    def meanwhile(request: httpx.Request, forward: Callable[[], httpx.Response]) -> httpx.Response:
        # B's list call has left, and finds nothing. Before B hears back, A runs the other
        # copy (nothing created: back to ready) and the next attempt records its intent and
        # POSTs, slowly.
        answer = forward()
        [submit] = run_step(w.a, "reconcile", batch_id, "r0")
        assert submit.step == "submit"
        w.a_http.at(SUBMIT, held)
        next_attempt.start()
        assert held.posting.wait(30)
        return answer

    w.b_http.at(LIST, meanwhile)
    try:
        # When B's copy decides, on what it read before the next attempt began
        late = run_step(w.b, "reconcile", batch_id, "r0")
        # Then it leaves the next attempt alone: still submitting, attempt 2
        item = w.item(batch_id)
        assert (item["state"], item["submits"]) == ("submitting", "2")
        assert late == []
    finally:
        held.go.set()
        next_attempt.join(30)
    for step in following["x"]:
        w.loop.send(step)
    w.loop.run()
    # And the pair was paid for once, by attempt 2, which completed
    assert w.item(batch_id)["state"] == "completed"
    assert len(accepted_submits(w.sandbox_url)) == 1


def seed_failing_first_attempt_only(video: Path, audio: Path, mode: str) -> int:
    """A fault seed under which the sandbox fails this pair's first task with a transient
    error (the provider's own trouble) and not its second."""
    first, second = (submit_key(video, audio, mode, attempt) for attempt in (0, 1))
    return first_seed(
        lambda faults: (
            faults.hits("task_failure", first)
            and faults.task_error(first)[1] >= 5000  # a 5xxx code: the service's own trouble
            and not faults.hits("task_failure", second)
        ),
        task_failure_rate=0.5,
    )


def test_a_late_poll_copy_does_not_drop_the_next_attempts_prediction(tmp_path, workers):
    manifest = write_manifest(tmp_path / "m", [("p0", 1.0, 1.0, "cut_off")])
    seed = seed_failing_first_attempt_only(tmp_path / "m/p0.mp4", tmp_path / "m/p0.wav", "cut_off")
    # Given a provider that fails the first task of the pair with its own (transient) trouble
    w = workers(faults={"seed": seed, "task_failure_rate": 0.5})
    batch_id = w.control.start(plan(manifest, w.settings))
    w.loop.run(stop=lambda: bool(w.loop.take("poll")))
    first = w.item(batch_id)["prediction_id"]
    while w.a.provider.get_result(first).status not in ("failed", "completed"):
        threading.Event().wait(0.05)  # the test waits for the sandbox (workers never do)
    assert w.a.provider.get_result(first).status == "failed"
    following: dict[str, list[Next]] = {}

    def meanwhile(request: httpx.Request, forward: Callable[[], httpx.Response]) -> httpx.Response:
        # B's copy of the poll reads "failed". Before it acts, A's copy reads the same and
        # the next attempt is submitted and running.
        answer = forward()
        [submit] = run_step(w.a, "poll", batch_id, "p0")
        assert submit.step == "submit"
        following["x"] = run_step(w.a, "submit", batch_id, "p0")
        return answer

    w.b_http.at(f"GET /api/v3/predictions/{first}/result", meanwhile)
    # When B's late copy acts on the first prediction's failure
    late = run_step(w.b, "poll", batch_id, "p0")
    # Then the second prediction is still the item's, running
    item = w.item(batch_id)
    second = item["prediction_id"]
    assert item["state"] == "running" and second not in ("", first)
    assert late == []
    for step in following["x"]:
        w.loop.send(step)
    w.loop.run()
    # And it completed with the second prediction: two tasks, the first failed (not charged)
    assert w.item(batch_id)["state"] == "completed"
    submits = accepted_submits(w.sandbox_url)
    assert [s["prediction_id"] for s in submits] == [first, second]


def one_item_completed_at_the_provider(w: Workers, folder: Path, item_id: str) -> str:
    """A one-item batch submitted, its prediction completed at the sandbox and not looked at
    yet (its scheduled look and the watch taken out of the loop). Returns the batch id."""
    manifest = write_manifest(folder, [(item_id, 1.0, 1.0, "cut_off")])
    batch_id = w.control.start(plan(manifest, w.settings))
    w.loop.run(stop=lambda: bool(w.loop.take("poll")))
    w.loop.take("watch")
    prediction_id = w.item(batch_id)["prediction_id"]
    while w.a.provider.get_result(prediction_id).status != "completed":
        threading.Event().wait(0.05)  # the test waits for the sandbox (workers never do)
    return batch_id


def test_a_second_look_at_a_completed_prediction_sends_no_second_collect(tmp_path, workers):
    w = workers()
    batch_id = one_item_completed_at_the_provider(w, tmp_path / "m", "c0")
    # Given a poll that saw the prediction complete and sent the collect (not run yet)
    w.loop.send(Next("poll", batch_id, "c0"))
    w.loop.run(stop=lambda: any(s.step == "collect" for s in w.loop.pending()))
    assert [s.step for s in w.loop.pending()] == ["collect"]
    assert not w.item(batch_id).get("collect_started_at")
    # When another look at it runs before that collect (the watch's and the scheduled one)
    again = run_step(w.b, "poll", batch_id, "c0")
    # Then it sends nothing: two collects at once would copy one output twice
    assert again == []
    w.loop.run()
    assert w.item(batch_id)["state"] == "completed"
    assert [s.step for s in w.loop.ran].count("collect") == 1


def test_a_poll_run_again_after_its_worker_died_before_sending_sends_the_collect(tmp_path, workers):
    w = workers()
    batch_id = one_item_completed_at_the_provider(w, tmp_path / "m", "c1")
    # Given a poll that moved the item to collecting (which records the collect as its
    # follow-up) and whose worker died before sending the collect
    lost = run_step(w.b, "poll", batch_id, "c1")
    assert [s.step for s in lost] == ["collect"]
    assert w.item(batch_id)["state"] == "collecting"
    assert run_step(w.a, "poll", batch_id, "c1") == []  # a mere second look sends none
    # When the sweeper sends the dead worker's poll again
    send_again(w.a.ledger, w.loop.send, [Next("poll", batch_id, "c1")], w.clock())
    w.loop.run()
    # Then that poll sends the collect, and the item completes
    ran = [s.step for s in w.loop.ran]
    assert ran[ran.index("poll") :].count("collect") == 1
    assert w.item(batch_id)["state"] == "completed"


def test_the_watchs_look_at_an_item_already_collecting_sends_no_second_collect(tmp_path, workers):
    w = workers()
    batch_id = one_item_completed_at_the_provider(w, tmp_path / "m", "c2")
    sent_by_poll: list[Next] = []

    def meanwhile(request: httpx.Request, forward: Callable[[], httpx.Response]) -> httpx.Response:
        # B's watch read the item as running and lists the account's predictions; before it
        # hears back, A's scheduled poll sees the prediction complete and sends the collect
        answer = forward()
        sent_by_poll.extend(run_step(w.a, "poll", batch_id, "c2"))
        w.a.ledger.expect(sent_by_poll, w.clock())
        return answer

    w.b_http.at(LIST, meanwhile)
    # When the watch asks for a look at the item it saw end, as a worker sends it
    asked = run_step(w.b, "watch", "account", None)
    assert [s.step for s in sent_by_poll] == ["collect"]
    assert [(s.step, s.item_id) for s in asked if s.step == "poll"] == [("poll", "c2")]
    w.b.ledger.expect(asked, w.clock())
    for step in [*asked, *sent_by_poll]:  # the look runs before the collect
        if step.step != "watch":
            w.loop.send(step)
    w.loop.run()
    # Then that look sends no second collect: the item completes, collected once
    assert w.item(batch_id)["state"] == "completed"
    assert [s.step for s in w.loop.ran].count("collect") == 1


def test_a_poll_whose_collect_the_broker_refused_goes_back_and_sends_it_when_run_again(
    tmp_path, workers
):
    w = workers()
    batch_id = one_item_completed_at_the_provider(w, tmp_path / "m", "c4")
    # Given a worker whose broker is away (its ledger's Redis answers)
    away = f"redis://127.0.0.1:{free_port()}/0"
    redis_settings = w.settings.redis.model_copy(update={"broker_url": away})
    app = create_app(
        w.settings.model_copy(update={"redis": redis_settings}), runtime_factory=lambda: w.a
    )
    # When its poll sees the prediction complete and the broker refuses the collect
    with pytest.raises(Reject) as rejected:
        app.tasks["lipdub.poll"].run(batch_id, "c4")
    # Then the poll's message goes back to the queue, and the item expects that poll again
    assert rejected.value.requeue
    record = w.item(batch_id)
    assert (record["state"], record["next_step"]) == ("collecting", "poll")
    # And when the poll runs again (the broker back), it sends the collect, which runs once
    assert run_step(w.a, "poll", batch_id, "c4") == [Next("collect", batch_id, "c4")]
    w.loop.send(Next("collect", batch_id, "c4"))
    w.loop.run()
    assert w.item(batch_id)["state"] == "completed"
    assert [s.step for s in w.loop.ran].count("collect") == 1


def test_no_submit_is_queued_ahead_while_a_lost_answer_is_unreconciled(tmp_path, workers):
    # Given an account that processes 1 prediction at a time and may queue 1 more ahead
    w = workers(provider={"max_concurrent": 1, "queue_ahead": 1})
    manifest = write_manifest(
        tmp_path / "m", [("q0", 1.0, 1.0, "cut_off"), ("q1", 1.2, 1.0, "cut_off")]
    )
    # and a first POST whose answer is lost (the provider never got it)
    w.a_http.at(SUBMIT, lost_on_the_way)
    batch_id = w.control.start(plan(manifest, w.settings))
    w.loop.run(stop=lambda: bool(w.loop.take("reconcile")))
    unknown = {r["id"]: r for r in w.a.ledger.items(batch_id)}
    [lost_id] = [i for i, r in unknown.items() if r.get("outcome_unknown")]
    other_id = "q1" if lost_id == "q0" else "q0"
    # When the other item asks for a slot while that submit is not reconciled
    w.loop.run(until_s=w.clock() + 1.0)
    # Then it waits for a slot instead of being queued ahead
    assert Next("submit", batch_id, other_id) in w.loop.ran
    assert w.a.ledger.item(batch_id, other_id)["state"] == "ready"
    assert w.a.gates.in_flight() == 1
    assert accepted_submits(w.sandbox_url) == []
    # And once reconcile finds nothing was created, both are submitted once and complete
    w.loop.send(Next("reconcile", batch_id, lost_id))
    w.loop.run()
    assert {r["state"] for r in w.a.ledger.items(batch_id)} == {"completed"}
    assert len(accepted_submits(w.sandbox_url)) == 2
    assert w.a.ledger.unknown_submits(since=0) == 0


def test_the_queue_ahead_is_held_only_while_a_lost_answer_is_unreconciled(workers):
    w = workers(provider={"max_concurrent": 1, "queue_ahead": 1})
    assert in_flight_limit(w.a) == 2
    # A lost answer holds the queue ahead until it is settled, or needs a person
    w.a.ledger.note_unknown_submit("b:lost", w.clock())
    assert in_flight_limit(w.a) == 1
    w.a.ledger.settle_submit("b:lost")
    assert in_flight_limit(w.a) == 2
    w.a.ledger.note_unknown_submit("b:lost", w.clock())
    w.a.ledger.forget_unknown_submit("b:lost")
    assert in_flight_limit(w.a) == 2
    # and one left behind (its reconcile lost with a worker) no longer than reconcile takes
    window_s = 2 * (w.settings.polling.reconcile_grace_s + w.settings.provider.submit_timeout_s)
    w.a.ledger.note_unknown_submit("b:left", w.clock() - window_s - 1)
    assert in_flight_limit(w.a) == 2
