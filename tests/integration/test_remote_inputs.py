"""Inputs already in S3 (moto's standalone server, the real S3 protocol) are probed in place."""

import shutil
from collections.abc import Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

from pipeline.errors import ManifestError
from pipeline.planning import plan_manifest
from pipeline.pricing import PriceModel
from pipeline.remote import RemoteProber
from pipeline.settings import MediaSettings
from tests.conftest import free_port


@pytest.fixture(scope="module")
def s3() -> Iterator[object]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        client = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        client.create_bucket(Bucket="catalog")
        yield client
    finally:
        server.stop()


def test_s3_inputs_are_probed_through_a_presigned_url(s3, media, tmp_path):
    s3.upload_file(str(media["video_2s"]), "catalog", "videos/ep 2.mp4")
    s3.upload_file(str(media["audio_2_4s"]), "catalog", "audio/ep2-de.wav")
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "video,audio\ns3://catalog/videos/ep 2.mp4,s3://catalog/audio/ep2-de.wav\n",
        encoding="utf-8",
    )
    plan = plan_manifest(
        manifest, media=MediaSettings(), price=PriceModel(), remote=RemoteProber(s3)
    )
    item = plan.items[0]
    assert item.video.ref.kind == "s3" and item.video.info.duration_s == pytest.approx(2.0)
    assert (
        item.audio.info.has_audio
        and item.audio.info.size_bytes == media["audio_2_4s"].stat().st_size
    )
    assert len(item.video.sha256) == 64
    # Same object, same identity; a changed object, a new one
    again = plan_manifest(
        manifest, media=MediaSettings(), price=PriceModel(), remote=RemoteProber(s3)
    ).items[0]
    assert again.video.sha256 == item.video.sha256
    s3.upload_file(str(media["video_1s"]), "catalog", "videos/ep 2.mp4")
    changed = plan_manifest(
        manifest, media=MediaSettings(), price=PriceModel(), remote=RemoteProber(s3)
    ).items[0]
    assert changed.video.sha256 != item.video.sha256


def test_missing_s3_objects_are_row_numbered_problems(s3, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "video,audio\ns3://catalog/none.mp4,s3://no-bucket/a.wav\n", encoding="utf-8"
    )
    with pytest.raises(ManifestError) as caught:
        plan_manifest(manifest, media=MediaSettings(), price=PriceModel(), remote=RemoteProber(s3))
    found = {(p.row, p.field): p.message for p in caught.value.problems}
    assert "does not exist" in found[(1, "video")]
    assert (1, "audio") in found


def test_without_storage_access_remote_inputs_are_refused_clearly(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "video,audio\ns3://catalog/a.mp4,https://cdn.example.com/a.wav\n", encoding="utf-8"
    )
    with pytest.raises(ManifestError, match="cannot be checked without storage access"):
        plan_manifest(manifest, media=MediaSettings(), price=PriceModel())


def test_the_s3_client_is_made_only_when_an_s3_input_needs_it(s3, media, tmp_path):
    made = []

    def factory():
        made.append(1)
        return s3

    local = tmp_path / "local.csv"
    shutil.copy(media["video_1s"], tmp_path / "v.mp4")
    shutil.copy(media["audio_0_6s"], tmp_path / "a.wav")
    local.write_text("video,audio\nv.mp4,a.wav\n", encoding="utf-8")
    plan_manifest(
        local, media=MediaSettings(), price=PriceModel(), remote=RemoteProber(s3_factory=factory)
    )
    assert made == []
    s3.upload_file(str(media["video_1s"]), "catalog", "v.mp4")
    remote = tmp_path / "remote.csv"
    remote.write_text("video,audio\ns3://catalog/v.mp4,a.wav\n", encoding="utf-8")
    plan_manifest(
        remote, media=MediaSettings(), price=PriceModel(), remote=RemoteProber(s3_factory=factory)
    )
    assert made == [1]


def test_url_inputs_are_probed_in_place(sandbox, media, tmp_path):
    from tests.conftest import client_for

    client = client_for(sandbox)
    video_url, audio_url = (
        client.upload_media(media["video_2s"]),
        client.upload_media(media["audio_2_4s"]),
    )
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"video,audio,sync_mode\n{video_url},{audio_url},loop\n", encoding="utf-8")
    # The sandbox serves plain http; production URLs must be https unless allowed
    with pytest.raises(ManifestError, match="plain http://"):
        plan_manifest(manifest, media=MediaSettings(), price=PriceModel(), remote=RemoteProber())
    plan = plan_manifest(
        manifest,
        media=MediaSettings(allow_http_urls=True),
        price=PriceModel(),
        remote=RemoteProber(),
    )
    item = plan.items[0]
    assert item.video.ref.kind == "http" and item.video.info.duration_s == pytest.approx(2.0)
    assert item.expected_output_s == pytest.approx(2.4, abs=0.01)
