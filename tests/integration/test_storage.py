"""The bucket adapter against moto's S3 server: content addressing, skips, streaming, changes."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from pipeline.errors import InputChanged, StorageError
from pipeline.remote import make_s3_client
from pipeline.settings import StorageSettings
from pipeline.storage import Storage, media_key


@pytest.fixture
def storage(s3_server, bucket):
    settings = StorageSettings(bucket=bucket, endpoint_url=s3_server.url, multipart_threshold_mb=5)
    store = Storage(make_s3_client(endpoint_url=s3_server.url, region="us-east-1"), settings)
    store.ensure_bucket()
    return store


def test_an_input_is_uploaded_once_under_its_content_hash(storage, tmp_path):
    path = tmp_path / "clip.MP4"
    path.write_bytes(b"x" * 1000)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    key = media_key("", sha, str(path))
    assert key == f"media/sha256/{sha}.mp4"
    assert storage.upload_file(path, key, sha) is True
    assert storage.upload_file(path, key, sha) is False, "present: nothing sent"
    assert storage.get_bytes(key) == path.read_bytes()


def test_a_large_input_goes_up_in_parts_and_arrives_whole(storage, tmp_path):
    path = tmp_path / "big.mp4"
    path.write_bytes(bytes(range(256)) * (13 * 4096))  # 13 MiB: over the 5 MiB threshold
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    key = media_key("", sha, str(path))
    storage.upload_file(path, key, sha)
    head = storage.s3.head_object(Bucket=storage.bucket, Key=key)
    assert head["ContentLength"] == path.stat().st_size
    assert "-" in head["ETag"], "a multipart upload's ETag names its part count"


def test_a_file_changed_since_planning_is_not_kept_under_the_old_hash(storage, tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"new content")
    planned_sha = hashlib.sha256(b"old content").hexdigest()
    key = media_key("", planned_sha, str(path))
    with pytest.raises(InputChanged, match="changed after it was planned"):
        storage.upload_file(path, key, planned_sha)
    assert not storage.exists(key)


def test_an_output_streams_from_a_url_into_the_bucket(storage, sandbox, media):
    with httpx.Client() as http:
        url = storage.presign("nothing-here")
        with pytest.raises(StorageError, match="HTTP 404"):
            storage.copy_from_url(url, "outputs/b/x.mp4", http)
        source = "media/src.mp4"
        storage.s3.put_object(
            Bucket=storage.bucket, Key=source, Body=media["video_1s"].read_bytes()
        )
        size = storage.copy_from_url(storage.presign(source), "outputs/b/y.mp4", http)
    assert size == media["video_1s"].stat().st_size
    assert storage.get_bytes("outputs/b/y.mp4") == media["video_1s"].read_bytes()
