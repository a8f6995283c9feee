"""Reconciling a submit whose outcome is unknown: what the list call proves, and what it does not.

The provider is an httpx.MockTransport (a pure function of the request); the ledger and gates
are on the suite's real redis-server.
"""

from __future__ import annotations

import httpx
import pytest
import redis
from pydantic import SecretStr

from pipeline.flow.reconcile import MAX_LIST_PAGES, reconcile
from pipeline.gates import Gates
from pipeline.ledger import Ledger
from pipeline.provider.client import LIST_PAGE_SIZE_MAX, ProviderClient
from pipeline.provider.retry import RetryPolicy
from pipeline.runtime import Runtime
from pipeline.settings import Settings
from pipeline.states import ItemState
from pipeline.storage import Storage

NOW_S = 1_800_000_000.0
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


@pytest.fixture
def submitting(redis_url):
    """An item whose submit was sent long ago (its grace is over) with no answer."""

    made: list[Runtime] = []

    def make(listing: list[dict], status: int = 200) -> Runtime:
        rt = _runtime(redis_url, listing, status)
        made.append(rt)
        rt.ledger.create_batch(
            "b", {"created_at": NOW_S}, [{"id": "i", "sync_mode": "cut_off"}], budget_usd=None
        )
        rt.ledger.transition("b", "i", [ItemState.PENDING], ItemState.READY)
        intent = {"intent_at": NOW_S - 3600, "video_match": VIDEO, "audio_match": AUDIO}
        assert rt.ledger.transition("b", "i", [ItemState.READY], ItemState.SUBMITTING, intent).ok
        return rt

    yield make
    for rt in made:
        rt.close()


def test_ours_in_the_list_is_adopted(submitting):
    rt = submitting([_prediction(1), _prediction(2, video=VIDEO)])
    following = reconcile(rt, "b", "i")
    assert rt.ledger.item("b", "i")["prediction_id"] == "p2"
    assert [n.step for n in following] == ["poll"]


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
