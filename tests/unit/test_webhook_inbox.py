"""The webhook inbox on the suite's real Redis, with an injected clock: what it takes, what
it refuses, and what it asks for."""

from __future__ import annotations

import json

import pytest
import redis
from pydantic import SecretStr

from pipeline.ledger import Ledger
from pipeline.provider.webhooks import sign
from pipeline.steps import Next
from pipeline.webhook_inbox import WebhookInbox

SECRET = "whsec_unit-secret"
NOW_S = 1_800_000_000


@pytest.fixture
def inbox(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    ledger = Ledger(client)
    ledger.index_prediction("p-ours", "b1:ep1")
    yield WebhookInbox(ledger, SecretStr(SECRET), clock=lambda: NOW_S)
    client.close()


def delivery(prediction_id="p-ours", *, webhook_id="msg_1", at=NOW_S, secret=SECRET):
    body = json.dumps({"id": prediction_id, "status": "completed"}).encode()
    return sign(secret, webhook_id, at, body).as_dict(), body


def test_a_signed_fresh_delivery_polls_its_item_now(inbox):
    verdict = inbox.receive(*delivery())
    assert verdict.status == 202
    assert verdict.wake == Next("poll", "b1", "ep1")


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"secret": "whsec_not-the-account-secret"}, "signature does not match"),
        ({"at": NOW_S - 301}, "300 s"),
        ({"at": NOW_S + 301}, "300 s"),
    ],
)
def test_forged_and_stale_deliveries_are_refused_and_wake_nothing(inbox, kwargs, reason):
    verdict = inbox.receive(*delivery(**kwargs))
    assert verdict.status == 401 and reason in verdict.message and verdict.wake is None


def test_a_replayed_delivery_is_refused_even_with_a_valid_signature(inbox):
    headers, body = delivery(webhook_id="msg_replayed")
    assert inbox.receive(headers, body).status == 202
    again = inbox.receive(headers, body)
    assert again.status == 409 and "replay" in again.message and again.wake is None


def test_a_forged_delivery_does_not_use_up_the_id_of_a_real_one(inbox):
    forged = inbox.receive(*delivery(webhook_id="msg_2", secret="whsec_wrong"))
    assert forged.status == 401
    assert inbox.receive(*delivery(webhook_id="msg_2")).status == 202


def test_other_predictions_and_bodies_that_are_not_predictions_wake_nothing(inbox):
    unknown = inbox.receive(*delivery("p-someone-else", webhook_id="msg_3"))
    assert unknown.status == 202 and unknown.wake is None and "not one of ours" in unknown.message
    headers = sign(SECRET, "msg_4", NOW_S, b"[1, 2]").as_dict()
    assert inbox.receive(headers, b"[1, 2]").status == 400


def test_the_secret_is_not_in_any_answer(inbox):
    answers = [inbox.receive(*delivery(**k)).message for k in ({}, {"secret": "whsec_x"})]
    assert all(SECRET not in a and "unit-secret" not in a for a in answers)


def test_the_providers_retry_of_a_delivery_is_taken(inbox):
    # Given a delivery taken once; WaveSpeed retries keep the id (the prediction's) and sign
    # a new timestamp
    assert inbox.receive(*delivery(webhook_id="p-ours", at=NOW_S - 5)).status == 202
    # Then the retry is taken too (it only asks for one more poll)
    again = inbox.receive(*delivery(webhook_id="p-ours", at=NOW_S))
    assert again.status == 202 and again.wake == Next("poll", "b1", "ep1")


def test_a_delivery_forgotten_after_a_failed_dispatch_is_taken_again(inbox):
    headers, body = delivery(webhook_id="msg_503")
    assert inbox.receive(headers, body).status == 202
    inbox.forget(headers)  # the broker was away: we answered 503
    assert inbox.receive(headers, body).status == 202


def test_a_delivery_for_a_prediction_no_item_knows_keeps_its_inputs(inbox):
    # Given a delivery (with its inputs, as WaveSpeed's carry) for a prediction whose
    # submit's answer was lost, so no item has it yet
    inputs = {"video": "https://s3/v.mp4", "audio": "https://s3/a.wav", "sync_mode": "loop"}
    body = json.dumps({"id": "p-lost", "status": "completed", "input": inputs}).encode()
    verdict = inbox.receive(sign(SECRET, "p-lost", NOW_S, body).as_dict(), body)
    # Then nothing is polled, and the inputs are kept for reconcile to match
    assert verdict.status == 202 and verdict.wake is None
    assert json.loads(inbox.ledger.observations(["p-lost"])["p-lost"]["inputs"]) == inputs
