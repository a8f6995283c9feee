"""The sandbox implements the provider contract over real HTTP."""

import json
import time
from decimal import Decimal

import httpx
import pytest

from pipeline.errors import PredictionNotFound, ProviderAuthError, ProviderRejected
from pipeline.media import probe
from tests.conftest import client_for, run_job, start_sandbox, wait_terminal


def test_submit_poll_collect_round_trip(sandbox, media, tmp_path):
    client = client_for(sandbox)
    video_url = client.upload_media(media["video_1s"])
    audio_url = client.upload_media(media["audio_2_4s"])
    created = client.submit(video_url=video_url, audio_url=audio_url, sync_mode="loop")
    assert created.status in ("created", "processing")
    done = wait_terminal(client, created.id)
    assert done.status == "completed" and len(done.outputs) == 1
    assert done.inference_ms is not None and done.inference_ms >= 50
    output = httpx.get(done.outputs[0])
    assert output.status_code == 200 and output.headers["content-type"] == "video/mp4"
    # Billed on completion: 1 s of input video at $0.134
    assert float(client.balance_usd()) == pytest.approx(1000 - 0.134, abs=1e-3)


def test_wrong_or_missing_key_is_401(sandbox):
    with pytest.raises(ProviderAuthError):
        client_for(sandbox, key="sk-wrong").balance_usd()
    response = httpx.get(f"{sandbox.url}/api/v3/balance")
    assert response.status_code == 401 and response.json()["code"] == 401


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"audio": "http://x/a.wav"}, "video is required"),
        ({"video": "http://x/v.mp4"}, "audio is required"),
        ({"video": "ftp://x/v.mp4", "audio": "http://x/a.wav"}, "must be an http(s) URL"),
        (
            {
                "video": "http://127.0.0.1:9/v.mp4",
                "audio": "http://127.0.0.1:9/a.wav",
                "sync_mode": "wobble",
            },
            "sync_mode must be one of",
        ),
    ],
)
def test_bad_submits_are_rejected_with_the_envelope(sandbox, body, message):
    response = httpx.post(
        f"{sandbox.url}/api/v3/sync/lipsync-3",
        json=body,
        headers={"Authorization": "Bearer sk-sandbox"},
    )
    assert response.status_code == 400
    assert response.json()["code"] == 400 and message in response.json()["message"]


def test_a_body_that_is_not_json_is_refused_and_audited(sandbox):
    response = httpx.post(
        f"{sandbox.url}/api/v3/sync/lipsync-3",
        content=b"{nope",
        headers={"Authorization": "Bearer sk-sandbox"},
    )
    assert response.status_code == 400 and "not valid JSON" in response.json()["message"]
    assert [e["outcome"] for e in sandbox.engine.audit_entries()] == ["rejected"]


@pytest.mark.parametrize(
    ("video", "audio", "message"),
    [
        ("text_as_mp4", "audio_2_4s", "invalid video: not a readable media file"),
        ("audio_mp3", "audio_2_4s", "invalid video: no video stream"),
        ("video_1s", "video_2s", "invalid audio: no audio stream"),
        ("video_huge", "audio_2_4s", "video resolution 4128x2176 exceeds 4096x2160"),
    ],
)
def test_media_the_service_cannot_take_is_a_task_failed_with_code_1401(
    sandbox, media, video, audio, message
):
    # Given inputs the service can judge only once it has them (its docs put the download
    # after the task's creation: a failed one is a failed task, code 1402)
    client = client_for(sandbox)
    urls = [client.upload_media(media[video]), client.upload_media(media[audio])]
    # When they are submitted, the task is created, as any submit of a well-formed body is
    made = client.submit(video_url=urls[0], audio_url=urls[1], sync_mode="cut_off")
    assert [p.id for p in client.list_predictions().items] == [made.id]
    # Then it fails with WaveSpeed's "Invalid Parameter" code and says what is wrong
    done = wait_terminal(client, made.id)
    assert (done.status, done.code, done.error) == ("failed", 1401, message)
    # ... uncharged by the sandbox's default (WaveSpeed does not document it)
    assert client.balance_usd() == 1000
    assert [e["outcome"] for e in sandbox.engine.audit_entries()] == ["accepted"]


def test_a_charged_1401_is_priced_on_the_video_it_could_read(tmp_path, media):
    # Given a provider that charges failed tasks, and a 2 s video with an "audio" input that
    # has no audio stream (the video is readable, the pair is not acceptable)
    with start_sandbox(tmp_path, charge_failed=True) as server:
        client = client_for(server)
        urls = [client.upload_media(media["video_2s"]), client.upload_media(media["video_1s"])]
        made = client.submit(video_url=urls[0], audio_url=urls[1], sync_mode="cut_off")
        done = wait_terminal(client, made.id)
        # Then the failed task is charged what its 2 s video costs (not the 1 s minimum)
        assert (done.status, done.code) == ("failed", 1401)
        charged = Decimal(1000) - client.balance_usd()
        assert charged == server.config.pricing.price_usd(2.0) == Decimal("0.268")


def test_unknown_prediction_and_unknown_model(sandbox):
    client = client_for(sandbox)
    with pytest.raises(PredictionNotFound):
        client.get_result("does-not-exist")
    response = httpx.post(
        f"{sandbox.url}/api/v3/sync/lipsync-9",
        json={},
        headers={"Authorization": "Bearer sk-sandbox"},
    )
    assert response.status_code == 404


def test_list_filters_and_shows_no_inputs_as_documented(sandbox, media):
    client = client_for(sandbox)
    video, audio = client.upload_media(media["video_1s"]), client.upload_media(media["audio_0_6s"])
    first = client.submit(video_url=video, audio_url=audio, sync_mode="cut_off")
    second = client.submit(video_url=video, audio_url=audio, sync_mode="remap")
    wait_terminal(client, first.id)
    wait_terminal(client, second.id)
    page = client.list_predictions(model="sync/lipsync-3")
    assert [p.id for p in page.items] == [second.id, first.id]  # most recent first
    # WaveSpeed's list items carry no `input`, and nothing documents one on the result call
    assert all(p.inputs is None for p in page.items)
    assert client.get_result(first.id).inputs is None
    assert client.list_predictions(created_after=page.items[0].created_at).items[0].id == second.id
    assert client.list_predictions(model="other/model").items == ()
    assert len(client.list_predictions(status="completed").items) == 2


def test_every_submit_is_in_the_audit_log_with_input_hashes(sandbox, media, tmp_path):
    client = client_for(sandbox)
    video, audio = client.upload_media(media["video_1s"]), client.upload_media(media["audio_0_6s"])
    client.submit(video_url=video, audio_url=audio, sync_mode="loop")
    with pytest.raises(ProviderRejected):
        client.submit(video_url=video, audio_url=audio, sync_mode="nope")
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [line["outcome"] for line in lines] == ["accepted", "rejected"]
    import hashlib

    assert lines[0]["video_sha256"] == hashlib.sha256(media["video_1s"].read_bytes()).hexdigest()
    assert lines[0]["sync_mode"] == "loop" and lines[0]["prediction_id"]
    assert httpx.get(f"{sandbox.url}/_sandbox/audit").json() == lines


def test_sdk_style_ticket_upload_and_range_requests(sandbox, media):
    headers = {"Authorization": "Bearer sk-sandbox"}
    ticket = httpx.post(
        f"{sandbox.url}/api/v3/media/uploads",
        json={"filename": "v.mp4", "size": 1},
        headers=headers,
    ).json()["data"]
    data = media["video_1s"].read_bytes()
    assert httpx.put(ticket["upload"]["url"], content=data).status_code == 200
    ranged = httpx.get(ticket["download_url"], headers={"Range": "bytes=4-11"})
    assert ranged.status_code == 206 and ranged.content == data[4:12]
    assert httpx.get(f"{sandbox.url}/files/../../etc/passwd").status_code == 404


def test_the_no_face_marker_fails_the_task_like_the_real_service(sandbox, media):
    client = client_for(sandbox)
    done = run_job(client, media["video_noface"], media["audio_0_6s"], "cut_off")
    assert done.status == "failed" and "No face detected" in done.error and done.outputs == ()
    assert float(client.balance_usd()) == 1000.0  # failed tasks are not charged by default


def test_sandbox_config_from_a_file(tmp_path):
    from pipeline.sandbox.config import SandboxConfig

    path = tmp_path / "sandbox.toml"
    path.write_text(
        'api_keys = ["k1"]\nstarts_per_minute = 5\n[faults]\nseed = 7\nsubmit_drop_rate = 0.25\n'
    )
    config = SandboxConfig.from_file(path)
    assert (
        config.api_keys == ("k1",)
        and config.faults.seed == 7
        and config.faults.submit_drop_rate == 0.25
    )
    with start_sandbox(tmp_path, api_keys=["k1"]) as server:
        assert client_for(server, key="k1").balance_usd() > 0


def test_long_inputs_are_rendered_smaller_to_stay_within_memory(tmp_path, media):
    from pipeline.media import probe
    from tests.conftest import download

    with start_sandbox(tmp_path, render_memory_mb=0.2) as server:
        done = run_job(client_for(server), media["video_2s"], media["audio_0_6s"], "cut_off")
        info = probe(download(done.outputs[0], tmp_path / "out.mp4"))
    # 51 frames of 160x96 need 1.2 MB; 0.2 MB allows about a sixth of that
    assert info.width < 160 and info.height < 96
    assert abs(info.duration_s - 0.6) <= 0.04


def test_inputs_over_the_size_limit_fail_their_task_with_code_1401_and_are_not_kept(tmp_path):
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * (1024 * 1024 + 10))
    with start_sandbox(tmp_path, max_input_mb=1) as server:
        client = client_for(server)
        url = client.upload_media(big)
        made = client.submit(video_url=url, audio_url=url, sync_mode="loop")
        done = wait_terminal(client, made.id)
        assert (done.status, done.code, done.error) == ("failed", 1401, "video is larger than 1 MB")
        assert list((server.engine.workdir / "inputs").iterdir()) == []


def test_inputs_in_the_list_and_the_result_are_test_options(tmp_path, media):
    with start_sandbox(tmp_path, list_includes_inputs=True, result_includes_inputs=True) as box:
        client = client_for(box)
        video, audio = (
            client.upload_media(media["video_1s"]),
            client.upload_media(media["audio_0_6s"]),
        )
        made = client.submit(video_url=video, audio_url=audio, sync_mode="remap")
        shown = {"video": video, "audio": audio, "sync_mode": "remap"}
        assert client.list_predictions().items[0].inputs == shown
        assert client.get_result(made.id).inputs == shown


def test_an_input_that_cannot_be_fetched_is_a_task_failed_with_code_1402(sandbox, media):
    # Given a submit whose video URL nobody answers
    client = client_for(sandbox)
    audio = client.upload_media(media["audio_0_6s"])
    made = client.submit(video_url="http://127.0.0.1:9/v.mp4", audio_url=audio, sync_mode="loop")
    # Then the task was created (WaveSpeed's docs/error-codes), and failed with code 1402
    done = wait_terminal(client, made.id)
    assert done.status == "failed" and done.code == 1402
    assert done.error == "Failed to download video from the provided URL."
    # ... and was not charged (the sandbox's default; WaveSpeed does not document it)
    assert client.balance_usd() == 1000
    assert [e["outcome"] for e in sandbox.engine.audit_entries()] == ["accepted"]


def test_the_quote_and_the_bill_follow_the_price_formula(tmp_path, media):
    # Given the formula: whole seconds rounded up, at least 2 s, $0.134 a second
    pricing = {"round_up_to_second": True, "minimum_s": 2.0, "rate_per_second_usd": "0.134"}
    with start_sandbox(tmp_path, pricing=pricing) as box:
        client = client_for(box)
        # Then the quote endpoint prices a duration by it, as WaveSpeed's documents the shape
        assert client.quote_usd({"duration": 1.0}) == Decimal("0.268")
        assert client.quote_usd({"duration": 2.2}) == Decimal("0.402")
        response = httpx.post(
            f"{box.url}/api/v3/model/pricing",
            json={"model_id": "sync/lipsync-3", "inputs": {"duration": 2.2}},
            headers={"Authorization": "Bearer sk-sandbox"},
        )
        assert response.json()["data"] == {
            "model_id": "sync/lipsync-3",
            "unit_price": 0.402,
            "currency": "USD",
        }
        # ... and a completed 2.4 s task is billed what its duration was quoted
        video, audio = (
            client.upload_media(media["video_2s"]),
            client.upload_media(media["audio_2_4s"]),
        )
        made = client.submit(video_url=video, audio_url=audio, sync_mode="cut_off")
        assert wait_terminal(client, made.id).status == "completed"
        quoted = client.quote_usd({"duration": probe(media["video_2s"]).duration_s})
        assert 1000 - client.balance_usd() == quoted
        assert Decimal(httpx.get(f"{box.url}/_sandbox/bill").json()["billed_usd"]) == quoted


def test_output_urls_expire(tmp_path, media):
    with start_sandbox(tmp_path, output_url_ttl_s=5.0) as box:
        client = client_for(box)
        video, audio = (
            client.upload_media(media["video_1s"]),
            client.upload_media(media["audio_0_6s"]),
        )
        done = wait_terminal(
            client, client.submit(video_url=video, audio_url=audio, sync_mode="loop").id
        )
        assert httpx.get(done.outputs[0]).status_code == 200
        expires = int(done.outputs[0].rsplit("expires=", 1)[1])
        time.sleep(max(0.0, expires - time.time()) + 1.0)
        assert httpx.get(done.outputs[0]).status_code == 403
