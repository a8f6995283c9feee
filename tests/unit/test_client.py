"""The provider client through httpx.MockTransport: statuses, bodies, retries, never-twice."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest
from pydantic import SecretStr

from pipeline.errors import (
    PredictionNotFound,
    ProviderAuthError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
    SubmitOutcomeUnknown,
)
from pipeline.provider.client import ProviderClient
from pipeline.provider.retry import RetryPolicy

KEY = "sk-live-abcdef123456"
PREDICTION = {
    "id": "p1",
    "model": "sync/lipsync-3",
    "outputs": [],
    "urls": {"get": "x"},
    "status": "created",
    "created_at": "2026-11-23T10:00:00.123456789Z",
    "error": "",
    "timings": {},
    "has_nsfw_contents": [],
}


def envelope(data=None, code=200, message="success"):
    return {"code": code, "message": message, "data": data}


class Recorder:
    """A transport handler that answers from a script and records every request."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def make(handler, attempts=4):
    sleeps: list[float] = []
    client = ProviderClient(
        httpx.Client(transport=httpx.MockTransport(handler), base_url="https://api.test"),
        api_key=SecretStr(KEY),
        retry_policy=RetryPolicy(max_attempts=attempts, base_delay_s=0.1, max_delay_s=1.0),
        sleep=sleeps.append,
    )
    return client, sleeps


def submit(client):
    return client.submit(video_url="https://s/v.mp4", audio_url="https://s/a.wav", sync_mode="loop")


def test_submit_sends_the_contract_body_and_bearer_key():
    handler = Recorder(httpx.Response(200, json=envelope(PREDICTION)))
    client, _ = make(handler)
    prediction = submit(client)
    request = handler.requests[0]
    assert request.method == "POST" and request.url.path == "/api/v3/sync/lipsync-3"
    assert json.loads(request.content) == {
        "video": "https://s/v.mp4",
        "audio": "https://s/a.wav",
        "sync_mode": "loop",
    }
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert prediction.id == "p1" and prediction.status == "created" and not prediction.terminal
    assert prediction.created_at is not None and prediction.created_at.microsecond == 123456


def test_webhook_url_goes_in_the_query():
    handler = Recorder(httpx.Response(200, json=envelope(PREDICTION)))
    client, _ = make(handler)
    client.submit(
        video_url="https://s/v",
        audio_url="https://s/a",
        sync_mode="loop",
        webhook_url="https://me/hook",
    )
    assert handler.requests[0].url.params["webhook"] == "https://me/hook"


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(500, json=envelope(code=500, message="boom")),
        httpx.Response(502, text="<html>bad gateway</html>"),
        httpx.Response(200, text="<html>not json</html>"),
        httpx.Response(200, json=envelope({"status": "created"})),  # no id
        httpx.ReadTimeout("timed out"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.WriteError("broken pipe"),
    ],
    ids=["500", "502-html", "200-html", "200-no-id", "read-timeout", "dropped", "write-error"],
)
def test_a_submit_with_an_unknown_outcome_is_sent_once_and_says_so(answer):
    handler = Recorder(answer)
    client, sleeps = make(handler, attempts=5)
    with pytest.raises(SubmitOutcomeUnknown) as caught:
        submit(client)
    assert len(handler.requests) == 1 and sleeps == []
    assert "reconcile" in str(caught.value)
    assert caught.value.sent_at > 0


def test_a_submit_that_never_connected_is_safe_to_try_later():
    handler = Recorder(httpx.ConnectError("refused"))
    client, _ = make(handler)
    with pytest.raises(ProviderUnavailable):
        submit(client)
    assert len(handler.requests) == 1


def test_a_rate_limited_submit_carries_retry_after_and_is_not_repeated():
    handler = Recorder(
        httpx.Response(
            429, headers={"Retry-After": "12"}, json=envelope(code=429, message="slow down")
        )
    )
    client, _ = make(handler)
    with pytest.raises(ProviderRateLimited) as caught:
        submit(client)
    assert caught.value.retry_after_s == 12.0 and len(handler.requests) == 1


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (httpx.Response(401, json=envelope(code=401, message="Unauthorized")), ProviderAuthError),
        (
            httpx.Response(400, json=envelope(code=400, message="video is required")),
            ProviderRejected,
        ),
        (
            httpx.Response(200, json=envelope(code=400, message="invalid sync_mode")),
            ProviderRejected,
        ),
        (httpx.Response(200, json={"code": 401, "message": "bad key"}), ProviderAuthError),
        (httpx.Response(200, json={"error_code": 429, "message": "busy"}), ProviderRateLimited),
    ],
)
def test_refusals_check_both_the_status_and_the_body_code(answer, error):
    client, _ = make(Recorder(answer))
    with pytest.raises(error):
        submit(client)


def test_result_is_retried_on_transient_failures_honouring_retry_after():
    done = {
        **PREDICTION,
        "status": "completed",
        "outputs": ["https://o/out.mp4"],
        "timings": {"inference": 4200},
    }
    handler = Recorder(
        httpx.Response(503, text="unavailable"),
        httpx.Response(429, headers={"Retry-After": "3"}, json=envelope(code=429)),
        httpx.ConnectError("reset"),
        httpx.Response(200, json=envelope(done)),
    )
    client, sleeps = make(handler, attempts=4)
    prediction = client.get_result("p1")
    assert prediction.terminal and prediction.outputs == ("https://o/out.mp4",)
    assert prediction.inference_ms == 4200
    assert len(handler.requests) == 4
    assert sleeps[1] == 3.0  # the server's Retry-After
    assert 0.05 <= sleeps[0] <= 0.1 and 0.2 <= sleeps[2] <= 0.4  # capped exponential with jitter


def test_result_gives_up_after_the_policy_and_raises_the_last_error():
    handler = Recorder(httpx.Response(502, text="bad gateway"))
    client, sleeps = make(handler, attempts=3)
    with pytest.raises(ProviderUnavailable, match="HTTP 502"):
        client.get_result("p1")
    assert len(handler.requests) == 3 and len(sleeps) == 2


def test_unknown_prediction_is_not_retried():
    handler = Recorder(httpx.Response(404, json=envelope(code=404, message="not found")))
    client, _ = make(handler)
    with pytest.raises(PredictionNotFound):
        client.get_result("nope")
    assert len(handler.requests) == 1


def test_a_failed_task_is_a_200_with_status_failed():
    failed = {**PREDICTION, "status": "failed", "error": "No face detected"}
    client, _ = make(Recorder(httpx.Response(200, json=envelope(failed))))
    prediction = client.get_result("p1")
    assert (
        prediction.terminal
        and prediction.status == "failed"
        and prediction.error == "No face detected"
    )


def test_an_unknown_status_is_kept_and_not_terminal():
    odd = {**PREDICTION, "status": "warming_up"}
    client, _ = make(Recorder(httpx.Response(200, json=envelope(odd))))
    prediction = client.get_result("p1")
    assert (
        prediction.status == "warming_up"
        and not prediction.terminal
        and prediction.known_status is None
    )


def test_garbled_result_bodies_are_retried_then_reported():
    handler = Recorder(
        httpx.Response(200, text="<html>"), httpx.Response(200, json=envelope(PREDICTION))
    )
    client, _ = make(handler)
    assert client.get_result("p1").id == "p1"
    client, _ = make(Recorder(httpx.Response(200, content=b"\xff\xfe garbage")), attempts=2)
    with pytest.raises(ProviderUnavailable, match="not a JSON object"):
        client.get_result("p1")


def test_the_key_never_appears_in_exception_text():
    # Given a server that echoes the Authorization header back in its error message
    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            400, json=envelope(code=400, message=f"bad header {request.headers['authorization']}")
        )

    client, _ = make(echo)
    with pytest.raises(ProviderRejected) as caught:
        submit(client)
    assert KEY not in str(caught.value) and "***" in str(caught.value)


def test_missing_key_is_a_clear_error_before_any_request():
    handler = Recorder(httpx.Response(200, json=envelope(PREDICTION)))
    client = ProviderClient(
        httpx.Client(transport=httpx.MockTransport(handler), base_url="https://api.test"),
        api_key=None,
    )
    with pytest.raises(ProviderAuthError, match="WAVESPEED_API_KEY"):
        submit(client)
    assert handler.requests == []


def test_list_balance_and_paging():
    items = [
        {**PREDICTION, "id": f"p{i}", "input": {"video": "v", "audio": "a"}} for i in range(100)
    ]
    handler = Recorder(
        httpx.Response(200, json=envelope({"page": 1, "items": items, "total": 130})),
        httpx.Response(200, json=envelope({"page": 2, "items": items[:30], "total": 130})),
    )
    client, _ = make(handler)
    from datetime import UTC, datetime

    found = list(
        client.iter_predictions(
            created_after=datetime(2026, 11, 23, tzinfo=UTC), model="sync/lipsync-3"
        )
    )
    assert len(found) == 130 and found[0].inputs == {"video": "v", "audio": "a"}
    body = json.loads(handler.requests[0].content)
    assert body == {
        "page": 1,
        "page_size": 100,
        "created_after": "2026-11-23T00:00:00.000000Z",
        "model": "sync/lipsync-3",
    }
    assert json.loads(handler.requests[1].content)["page"] == 2
    client, _ = make(Recorder(httpx.Response(200, json=envelope({"balance": 12.5}))))
    assert client.balance_usd() == Decimal("12.5")


def test_from_settings_uses_the_configured_url_key_timeouts_and_retries():
    from pipeline.settings import ProviderSettings

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("lipsync-3"):
            return httpx.Response(200, json=envelope(PREDICTION))
        if len(seen) == 1:
            return httpx.Response(503, text="busy")
        return httpx.Response(200, json=envelope({"balance": 3}))

    settings = ProviderSettings(
        base_url="https://sandbox.test/",
        api_key=SecretStr("k"),
        max_get_attempts=2,
        read_timeout_s=7,
        connect_timeout_s=2,
    )
    sleeps: list[float] = []
    client = ProviderClient.from_settings(
        settings, transport=httpx.MockTransport(handler), sleep=sleeps.append
    )
    assert client.balance_usd() == Decimal(3)
    assert str(seen[0].url) == "https://sandbox.test/api/v3/balance"
    assert seen[0].headers["authorization"] == "Bearer k"
    assert seen[0].extensions["timeout"] == {"connect": 2, "read": 7, "write": 7, "pool": 7}
    assert len(sleeps) == 1
    # The submit waits longer for its answer (submit_timeout_s), with the same connect timeout
    seen.clear()
    client.submit(video_url="https://s/v", audio_url="https://s/a", sync_mode="loop")
    assert seen[0].extensions["timeout"] == {"connect": 2, "read": 60, "write": 60, "pool": 60}
    client.close()


@pytest.mark.parametrize("name", ["input", "inputs"])
def test_list_items_inputs_under_either_name(name):
    from pipeline.provider.models import Prediction

    assert Prediction.from_data({**PREDICTION, name: {"video": "v"}}).inputs == {"video": "v"}
    assert Prediction.from_data(PREDICTION).inputs is None
