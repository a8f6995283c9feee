"""Reconciling a submit whose outcome is unknown: what the list call proves, and what it does not.

The provider is an httpx.MockTransport (a pure function of the request); the ledger and gates
are on the suite's real redis-server.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import httpx
import pytest
import redis
from pydantic import SecretStr

from pipeline.flow.common import load
from pipeline.flow.reconcile import MAX_LIST_PAGES, reconcile
from pipeline.flow.submit import accepted
from pipeline.gates import Gates
from pipeline.ledger import Ledger
from pipeline.provider.client import LIST_PAGE_SIZE_MAX, ProviderClient
from pipeline.provider.retry import RetryPolicy
from pipeline.runtime import Runtime
from pipeline.settings import Settings
from pipeline.states import ItemState
from pipeline.storage import Storage

NOW_S = 1_800_000_000.0
INTENT_S = NOW_S - 3600
"""When the fixture's item sent its POST: long enough ago that every grace is over."""
VIDEO = "http://s3.local/b/media/sha256/v.mp4"
AUDIO = "http://s3.local/b/media/sha256/a.wav"


def _prediction(n: int, video: str = "http://elsewhere/v.mp4") -> dict:
    return {
        "id": f"p{n}",
        "status": "processing",
        "model": "sync/lipsync-3",
        "created_at": "2027-01-15T08:00:00Z",
        "input": {"video": video, "audio": AUDIO, "sync_mode": "cut_off"},
    }


def _runtime(redis_url: str, listing: list[dict], status: int = 200) -> Runtime:
    def handler(request: httpx.Request) -> httpx.Response:
        import json

        if status != 200:
            return httpx.Response(status, json={"code": status, "message": "Unauthorized"})

        if request.method == "GET" and request.url.path.endswith("/result"):
            # As WaveSpeed documents nothing about inputs here, it shows none.
            wanted = request.url.path.split("/")[-2]
            found = [{k: v for k, v in p.items() if k != "input"} for p in listing]
            found = [p for p in found if p["id"] == wanted]
            if not found:
                return httpx.Response(404, json={"code": 404, "message": "not found"})
            return httpx.Response(200, json={"code": 200, "data": found[0]})
        body = json.loads(request.content)
        start = (body["page"] - 1) * body["page_size"]
        page = listing[start : start + body["page_size"]]
        return httpx.Response(
            200, json={"code": 200, "data": {"items": page, "page": body["page"]}}
        )

    settings = Settings(provider={"base_url": "http://127.0.0.1:1"})
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    provider = ProviderClient(
        httpx.Client(base_url="http://provider", transport=httpx.MockTransport(handler)),
        api_key=SecretStr("k"),
        retry_policy=RetryPolicy(max_attempts=1),
    )
    return Runtime(
        settings=settings,
        ledger=Ledger(client),
        gates=Gates(client, redis_url, settings.provider, slot_lease_s=60),
        storage=Storage(object(), settings.storage),
        provider=provider,
        http=httpx.Client(),
        clock=lambda: NOW_S,
    )


def lose(
    rt: Runtime,
    item_id: str,
    intent_at: float,
    *,
    expected_output_s: float,
    answered: bool = True,
    video: str = VIDEO,
) -> None:
    """Put an item of batch `b` in `submitting` with a POST sent at `intent_at` whose answer
    was lost one second later (or, with answered=False, is still awaited)."""
    rt.ledger.transition("b", item_id, [ItemState.PENDING], ItemState.READY)
    intent = {
        "intent_at": intent_at,
        "video_match": video,
        "audio_match": AUDIO,
        "expected_output_s": expected_output_s,
    }
    if answered:
        intent["outcome_unknown_at"] = intent_at + 1.0
    rt.ledger.register_submit(f"b:{item_id}", intent_at)
    assert rt.ledger.transition("b", item_id, [ItemState.READY], ItemState.SUBMITTING, intent).ok


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _hidden(n: int, created_at_s: float, status: str = "completed") -> dict:
    """A prediction as WaveSpeed's list shows it: no inputs."""
    return {
        "id": f"p{n}",
        "status": status,
        "model": "sync/lipsync-3",
        "created_at": _iso(created_at_s),
        "outputs": [f"https://cdn.example/p{n}.mp4"] if status == "completed" else [],
    }


@pytest.fixture
def submitting(redis_url):
    """An item whose submit was sent long ago (its grace is over) with no answer."""

    made: list[Runtime] = []

    def make(listing: list[dict], status: int = 200, items: tuple[str, ...] = ("i",)) -> Runtime:
        rt = _runtime(redis_url, listing, status)
        made.append(rt)
        records = [{"id": name, "sync_mode": "cut_off"} for name in items]
        rt.ledger.create_batch("b", {"created_at": NOW_S}, records, budget_usd=None)
        lose(rt, "i", INTENT_S, expected_output_s=6.0)
        return rt

    yield make
    for rt in made:
        rt.close()


def test_ours_in_the_list_is_adopted(submitting):
    rt = submitting([_prediction(1), _prediction(2, video=VIDEO)])
    following = reconcile(rt, "b", "i")
    assert rt.ledger.item("b", "i")["prediction_id"] == "p2"
    assert [n.step for n in following] == ["poll", "watch"]


def test_a_short_list_without_ours_proves_the_submit_made_nothing(submitting):
    rt = submitting([_prediction(n) for n in range(3)])
    following = reconcile(rt, "b", "i")
    assert rt.ledger.item("b", "i")["state"] == "ready"
    assert [n.step for n in following] == ["submit"]


def test_a_list_longer_than_we_read_proves_nothing(submitting):
    # Given more predictions in the window than the reconciler reads, none of them ours
    rt = submitting([_prediction(n) for n in range(MAX_LIST_PAGES * LIST_PAGE_SIZE_MAX + 1)])
    following = reconcile(rt, "b", "i")
    # Then the item is not submitted again: a person looks
    item = rt.ledger.item("b", "i")
    assert item["state"] == "needs_attention" and "more than" in item["error"]
    assert [n.step for n in following] == ["finalize"]


def test_a_refused_key_needs_a_person_at_once_instead_of_asking_again(submitting):
    # Given a provider that refuses the key for the list call too
    rt = submitting([], status=401)
    following = reconcile(rt, "b", "i")
    # Then nobody can tell whether the submit created a prediction: a person looks, now
    item = rt.ledger.item("b", "i")
    assert item["state"] == "needs_attention" and "API key was refused" in item["error"]
    assert [n.step for n in following] == ["finalize"]


def test_an_earlier_attempts_prediction_is_not_taken_for_this_submit(submitting):
    # Given an item submitting again after its first prediction failed (same inputs)
    earlier = {**_prediction(1, video=VIDEO), "status": "failed"}
    rt = submitting(
        [earlier, {**_prediction(2, video=VIDEO), "created_at": "2027-01-15T08:01:00Z"}]
    )
    assert rt.ledger.update_item("b", "i", ItemState.SUBMITTING, {"prediction_ids": ["p1"]})
    # Then the new prediction is adopted, not the failed one (which would pay a third time)
    reconcile(rt, "b", "i")
    assert rt.ledger.item("b", "i")["prediction_id"] == "p2"


# ---------------------------------------------------------------- a list without inputs


def test_predictions_other_items_have_are_not_candidates(submitting):
    # Given a list (without inputs) holding only a prediction another lipdub item owns
    rt = submitting([_hidden(1, INTENT_S + 0.5)])
    rt.ledger.index_prediction("p1", "b0:other")
    # Then nothing in the window can be this submit's: it made nothing, submit again
    following = reconcile(rt, "b", "i")
    assert rt.ledger.item("b", "i")["state"] == "ready"
    assert [n.step for n in following] == ["submit"]


def test_the_one_prediction_created_while_the_post_was_on_its_way_is_adopted(submitting):
    # Given a hidden prediction created while the lost POST was on its way, and one of
    # another item's earlier that is already attributed
    rt = submitting([_hidden(1, INTENT_S + 0.5), _hidden(2, INTENT_S - 0.2)])
    rt.ledger.index_prediction("p2", "b0:other")
    following = reconcile(rt, "b", "i")
    # Then it is this item's, without a person and without a new POST
    item = rt.ledger.item("b", "i")
    assert item["state"] == "running" and item["prediction_id"] == "p1"
    assert rt.ledger.item_of_prediction("p1") == "b:i"
    assert [n.step for n in following] == ["poll", "watch"]
    assert rt.ledger.unsettled_submits(0, NOW_S) == []


def test_inputs_a_webhook_delivered_prove_whose_prediction_it_is(submitting):
    # Given a hidden prediction created far from the POST's time (a clock off by minutes),
    # whose webhook delivery, kept by the receiver, shows our inputs
    rt = submitting([_hidden(1, INTENT_S + 200)])
    rt.ledger.observe("p1", {"inputs": {"video": VIDEO, "audio": AUDIO, "sync_mode": "cut_off"}})
    reconcile(rt, "b", "i")
    assert rt.ledger.item("b", "i")["prediction_id"] == "p1"


def test_two_lost_submits_are_told_apart_by_their_outputs_duration(submitting):
    # Given two lost submits a second apart (6 s and 3 s outputs expected), and two hidden
    # predictions created while both were on their way, their outputs measured
    rt = submitting([_hidden(1, INTENT_S + 1.2), _hidden(2, INTENT_S + 1.4)], items=("i", "j"))
    lose(rt, "j", INTENT_S + 1.0, expected_output_s=3.0, video=VIDEO + "?j")
    rt.ledger.observe("p1", {"output_s": 3.0})
    rt.ledger.observe("p2", {"output_s": 6.0})
    reconcile(rt, "b", "i")
    reconcile(rt, "b", "j")
    # Then each adopts the one whose output fits its sync mode's rule
    assert rt.ledger.item("b", "i")["prediction_id"] == "p2"
    assert rt.ledger.item("b", "j")["prediction_id"] == "p1"


def test_lost_submits_that_look_alike_go_to_a_person_with_only_their_candidates(submitting):
    # Given two lost submits with the same expected output and two finished, hidden
    # predictions that fit both, among forty attributed ones
    listing = [_hidden(1, INTENT_S + 1.2), _hidden(2, INTENT_S + 1.4)]
    listing += [_hidden(n, INTENT_S + n / 10) for n in range(10, 50)]
    rt = submitting(listing, items=("i", "j"))
    for n in range(10, 50):
        rt.ledger.index_prediction(f"p{n}", f"b0:x{n}")
    lose(rt, "j", INTENT_S + 1.0, expected_output_s=6.0, video=VIDEO + "?j")
    rt.ledger.observe("p1", {"output_s": 6.0})
    rt.ledger.observe("p2", {"output_s": 6.0})
    reconcile(rt, "b", "i")
    # Then a person decides, shown the two that could be it, not the forty that cannot
    item = rt.ledger.item("b", "i")
    assert item["state"] == "needs_attention", item
    evidence = json.loads(item["evidence"])
    assert sorted(c["id"] for c in evidence["candidates"]) == ["p1", "p2"]


def test_a_prediction_nobody_accounts_for_near_a_submit_that_made_nothing_needs_a_person(
    submitting,
):
    # Given a hidden prediction created two minutes after the lost POST (which fits no
    # submit's time: another client of the key, or a clock far off)
    rt = submitting([_hidden(1, INTENT_S + 120)])
    reconcile(rt, "b", "i")
    # Then lipdub does not post again on the guess that it was not ours
    item = rt.ledger.item("b", "i")
    assert item["state"] == "needs_attention" and "belong to no lipdub item" in item["error"]


def test_an_open_post_of_another_time_does_not_hold_up_a_decision(submitting):
    # Given another item's POST sent an hour after ours and still unanswered
    rt = submitting([_hidden(1, INTENT_S + 0.5, status="processing")], items=("i", "j"))
    lose(rt, "j", NOW_S - 1, expected_output_s=6.0, answered=False)
    # Then the one candidate of our time is ours
    reconcile(rt, "b", "i")
    assert rt.ledger.item("b", "i")["prediction_id"] == "p1"


def test_a_candidate_an_open_post_may_have_made_is_waited_for(submitting):
    # Given our POST lost a second ago, another item's POST still open since just before,
    # and a hidden prediction created while both were on their way
    rt = submitting([_hidden(3, NOW_S - 0.5, status="processing")], items=("i", "j"))
    rt.ledger.update_item(
        "b", "i", ItemState.SUBMITTING, {"intent_at": NOW_S - 2, "outcome_unknown_at": NOW_S - 1}
    )
    lose(rt, "j", NOW_S - 1.5, expected_output_s=6.0, answered=False)
    following = reconcile(rt, "b", "i")
    # Then reconcile looks again shortly instead of deciding
    assert rt.ledger.item("b", "i")["state"] == "submitting"
    assert [n.step for n in following] == ["reconcile"]


def test_the_providers_clock_is_measured_from_answered_submits(submitting):
    # Given a provider whose clock runs 30 s ahead of ours, as three answered submits showed
    # (each prediction was created between its POST and its answer)
    rt = submitting([_hidden(1, INTENT_S + 30.5)])
    for n in range(3):
        rt.ledger.record_clock(29.8 + n * 0.1, 30.9)
    # Then the lost POST's prediction is found 30 s later on the provider's clock, where a
    # fixed allowance of a few seconds would have found nothing of ours
    reconcile(rt, "b", "i")
    assert rt.ledger.item("b", "i")["prediction_id"] == "p1"


def test_a_post_we_stopped_waiting_for_may_create_its_task_later(submitting):
    # Given a POST that timed out on our side (the provider still working on it), and a
    # hidden prediction created 10 s after we gave up
    rt = submitting([_hidden(1, INTENT_S + 11.0)])
    rt.ledger.update_item("b", "i", ItemState.SUBMITTING, {"created_by": INTENT_S + 1.0 + 30.0})
    # Then it is taken for the submit's, not for a stranger's (which would need a person)
    reconcile(rt, "b", "i")
    assert rt.ledger.item("b", "i")["prediction_id"] == "p1"


def test_a_running_write_applied_but_unanswered_still_schedules_the_first_poll(submitting):
    # Given an item whose POST was answered with p1, seen as it was before the write
    rt = submitting([])
    seen = load(rt, "b", "i")
    assert seen is not None
    first = accepted(rt, seen, "p1", reconciled=False)
    # When the same write is tried again (Redis applied it, the outage lost its answer)
    again = accepted(rt, seen, "p1", reconciled=False)
    # Then the try finds its own fields and schedules the poll the lost answer would have
    assert [n.step for n in first] == [n.step for n in again] == ["poll", "watch"]
    # But a later adoption of the same prediction (a redelivered step) schedules no second
    # poll chain: the item is running on a write that was not this one
    later = replace(rt, clock=lambda: NOW_S + 5.0)
    assert accepted(later, seen, "p1", reconciled=True) == []
    assert rt.ledger.item("b", "i")["prediction_id"] == "p1"
