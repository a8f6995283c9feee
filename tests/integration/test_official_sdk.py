"""The official WaveSpeed Python SDK, unchanged, runs a lipsync-3 job on the sandbox."""

from wavespeed.api import client as wavespeed_client

from pipeline.media import probe
from pipeline.sync_modes import within_one_frame
from tests.conftest import SANDBOX_KEY, download


def test_the_official_sdk_runs_a_job_to_completion(sandbox, media, tmp_path, capsys):
    client = wavespeed_client.Client(
        api_key=SANDBOX_KEY, base_url=sandbox.url, max_connection_retries=0
    )
    video = client.upload(str(media["video_1s"]))
    audio = client.upload(str(media["audio_2_4s"]))
    output = client.run(
        "sync/lipsync-3",
        {"video": video, "audio": audio, "sync_mode": "bounce"},
        poll_interval=0.1,
        timeout=30,
    )
    assert len(output["outputs"]) == 1
    info = probe(download(output["outputs"][0], tmp_path / "out.mp4"))
    assert within_one_frame(info.duration_s, 2.4)
    entries = sandbox.engine.audit_entries()
    assert [e["outcome"] for e in entries] == ["accepted"]


def test_the_official_sdk_sees_failures_as_failures(sandbox, media):
    client = wavespeed_client.Client(api_key=SANDBOX_KEY, base_url=sandbox.url)
    video = client.upload(str(media["video_noface"]))
    audio = client.upload(str(media["audio_0_6s"]))
    result = client.run_no_throw(
        "sync/lipsync-3", {"video": video, "audio": audio}, poll_interval=0.1, timeout=30
    )
    assert result["status"] == "failed" and "No face detected" in result["error"]
