"""Inputs already in S3 (moto's standalone server, the real S3 protocol) are probed in place."""

import hashlib
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from pipeline.errors import ManifestError
from pipeline.planning import plan_manifest
from pipeline.pricing import PriceModel
from pipeline.remote import RemoteProber
from pipeline.settings import MediaSettings
from pipeline.states import ItemState
from tests.conftest import free_port
from tests.integration.stack import accepted_submits, in_process_worker, plan, write_manifest


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


@contextmanager
def file_server(root: Path) -> Iterator[str]:
    """A plain HTTP server for the files in `root` (a CDN whose files can be replaced)."""
    handler = partial(SimpleHTTPRequestHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_url_input_is_identified_by_its_content_not_its_url(media, tmp_path):
    # Given a video behind a URL, planned once
    (tmp_path / "cdn").mkdir()
    shutil.copy(media["video_2s"], tmp_path / "cdn" / "ep28.mp4")
    shutil.copy(media["audio_2_4s"], tmp_path / "a.wav")
    media_settings = MediaSettings(allow_http_urls=True)
    with file_server(tmp_path / "cdn") as cdn:
        manifest = tmp_path / "m.csv"
        manifest.write_text(f"video,audio\n{cdn}/ep28.mp4,a.wav\n", encoding="utf-8")
        before = plan_manifest(
            manifest, media=media_settings, price=PriceModel(), remote=RemoteProber()
        )
        # When the file behind the URL is replaced by a shorter cut
        shutil.copy(media["video_1s"], tmp_path / "cdn" / "ep28.mp4")
        after = plan_manifest(
            manifest, media=media_settings, price=PriceModel(), remote=RemoteProber()
        )
    # Then its identity is its bytes' hash (as a local copy's is), and it changed with them
    assert (
        before.items[0].video.sha256 == hashlib.sha256(media["video_2s"].read_bytes()).hexdigest()
    )
    assert after.items[0].video.sha256 == hashlib.sha256(media["video_1s"].read_bytes()).hexdigest()
    assert after.items[0].video.info.duration_s == pytest.approx(1.0)


def test_a_replaced_url_file_is_paid_for_again_not_taken_from_the_earlier_batch(
    media, tmp_path, make_stack, sandbox
):
    # Given a batch that lip-synced the video behind a URL
    (tmp_path / "cdn").mkdir()
    shutil.copy(media["video_2s"], tmp_path / "cdn" / "ep28.mp4")
    shutil.copy(media["audio_2_4s"], tmp_path / "a.wav")
    stack = make_stack(sandbox, media={"allow_http_urls": True})
    with file_server(tmp_path / "cdn") as cdn, in_process_worker(stack):
        manifest = tmp_path / "m.csv"
        manifest.write_text(f"id,video,audio\nep28,{cdn}/ep28.mp4,a.wav\n", encoding="utf-8")
        first = stack.control.start(plan(manifest, stack.settings))
        stack.wait(first)
        # When the file behind the URL is replaced by a shorter cut and the manifest runs again
        shutil.copy(media["video_1s"], tmp_path / "cdn" / "ep28.mp4")
        second = stack.control.start(plan(manifest, stack.settings))
        stack.wait(second)
    # Then the new cut was lip-synced (not the old output reused): its output lasts 1 s
    item = stack.control.report(second)["items_detail"][0]
    assert item["state"] == "completed" and not item["reused_from"]
    assert item["output_s"] == pytest.approx(1.0, abs=0.05)
    assert len(accepted_submits(sandbox.url)) == 2


def test_a_reused_output_of_the_wrong_length_is_not_passed_off(
    media, tmp_path, make_stack, sandbox
):
    # Given a pair paid for by an earlier batch whose record says its output lasts 9 s,
    # where this item's sync mode gives 1 s (a record that does not fit the pair)
    manifest = write_manifest(tmp_path / "m", [("x", 1.0, 1.0, "cut_off")])
    stack = make_stack(sandbox)
    with in_process_worker(stack):
        first = stack.control.start(plan(manifest, stack.settings))
        stack.wait(first)
        stack.ledger.update_item(first, "x", ItemState.COMPLETED, {"output_s": 9.0})
        second = stack.control.start(plan(manifest, stack.settings))
        stack.wait(second)
    # Then the item is checked like a collected one: it is paid for again, with a 1 s output
    item = stack.control.report(second)["items_detail"][0]
    assert item["state"] == "completed" and not item["reused_from"]
    assert item["output_s"] == pytest.approx(1.0, abs=0.05)
