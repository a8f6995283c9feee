"""The bucket: content-addressed inputs, outputs per batch, reports. boto3 behind one class.

Keys (under `storage.prefix`):

    media/sha256/<hex>.<ext>       an input, named by the sha256 of its bytes: uploaded once
    outputs/<batch>/<output name>  an item's lip-synced video
    reports/<batch>/report.json    the batch's report

Uploads stream from disk (multipart above `multipart_threshold_mb`), hashing as they go, and
a file that changed since it was planned is deleted again rather than kept under the wrong
name. Outputs stream from the provider's URL straight into the bucket. botocore errors become
`StorageError` here.

    >>> media_key("", "ab12", "/x/clip.MP4")
    'media/sha256/ab12.mp4'
    >>> output_key("team/", "b-1", "de/ep1.mp4")
    'team/outputs/b-1/de/ep1.mp4'
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO

import httpx
from botocore.exceptions import BotoCoreError, ClientError

from pipeline.errors import InputChanged, StorageError
from pipeline.settings import StorageSettings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


MB = 1024 * 1024
PART_SIZE = 8 * MB
TRANSFER_PARTS_IN_MEMORY = 4


def media_key(prefix: str, sha256: str, name: str) -> str:
    """The content-addressed key of an input."""
    suffix = PurePosixPath(name).suffix.lower()
    return f"{prefix}media/sha256/{sha256}{suffix}"


def media_sha256(location: str) -> str:
    """The sha256 a content-addressed input's location (key or `s3://` URL) names.

    >>> media_sha256("s3://b/p/media/sha256/" + "ab" * 32 + ".mp4") == "ab" * 32
    True
    """
    return PurePosixPath(location).stem


def output_key(prefix: str, batch_id: str, output_name: str, folder: str = "") -> str:
    """Where an item's output goes: under `outputs/`, or a schedule's own `folder`.

    >>> output_key("", "b-1", "ep1.mp4", folder="nightly/de/")
    'nightly/de/b-1/ep1.mp4'
    """
    return f"{prefix}{folder or 'outputs/'}{batch_id}/{output_name}"


def report_key(prefix: str, batch_id: str, name: str = "report.json") -> str:
    """Where a batch's report goes."""
    return f"{prefix}reports/{batch_id}/{name}"


class _HashingReader(io.RawIOBase):
    """A read-only stream over a file that hashes what passes through it."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.digest = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._stream.read(len(buffer))
        self.digest.update(chunk)
        self.size += len(chunk)
        buffer[: len(chunk)] = chunk
        return len(chunk)


class _ChunkReader(io.RawIOBase):
    """A read-only stream over an iterator of byte chunks (an HTTP download)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        self.size += count
        return count


class Storage:
    """The configured bucket. Give it a boto3 S3 client."""

    def __init__(self, s3: S3Client, settings: StorageSettings) -> None:
        self.s3 = s3
        self.bucket = settings.bucket
        self.prefix = settings.prefix
        self.presign_expiry_s = settings.presign_expiry_s
        from boto3.s3.transfer import TransferConfig

        threshold = settings.multipart_threshold_mb * MB
        # Our streams are not seekable, so boto3 holds each part in memory until it is sent:
        # at most TRANSFER_PARTS_IN_MEMORY parts of PART_SIZE, whatever the file's size
        # (tests/bench/bench_memory.py measures it).
        self._transfer = TransferConfig(
            multipart_threshold=threshold,
            multipart_chunksize=PART_SIZE,
            max_concurrency=TRANSFER_PARTS_IN_MEMORY,
        )
        # boto3's constructor does not take this s3transfer setting; the attribute is read.
        self._transfer.max_in_memory_upload_chunks = TRANSFER_PARTS_IN_MEMORY

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist (a local S3 server, a first run)."""
        try:
            self.s3.head_bucket(Bucket=self.bucket)
        except ClientError:
            try:
                self.s3.create_bucket(Bucket=self.bucket)
            except (ClientError, BotoCoreError) as err:
                raise StorageError(
                    f"bucket {self.bucket!r} could not be created: {_why(err)}"
                ) from err
        except BotoCoreError as err:
            raise StorageError(f"S3 could not be reached: {_why(err)}") from err

    def check_bucket(self, *, create: bool) -> None:
        """Make sure the bucket exists; create it only when asked (a mistyped bucket name
        must not become a new bucket silently). Raises StorageError naming the fix."""
        try:
            self.s3.head_bucket(Bucket=self.bucket)
            return
        except ClientError as err:
            code = str(err.response.get("Error", {}).get("Code", ""))
            if code not in ("404", "NoSuchBucket", "NotFound"):
                raise StorageError(
                    f"bucket {self.bucket!r} cannot be used: {_why(err)}; check the "
                    "credentials' access to it"
                ) from err
        except BotoCoreError as err:
            raise StorageError(f"S3 could not be reached: {_why(err)}") from err
        if not create:
            raise StorageError(
                f"bucket {self.bucket!r} does not exist: check LIPDUB_STORAGE__BUCKET (and "
                "LIPDUB_STORAGE__ENDPOINT_URL), or add --create-bucket to create it"
            )
        self.ensure_bucket()

    def exists(self, key: str, *, bucket: str | None = None) -> bool:
        """True when the object exists."""
        try:
            self.s3.head_object(Bucket=bucket or self.bucket, Key=key)
        except ClientError as err:
            if _code(err) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise StorageError(f"S3 refused to look at {key}: {_why(err)}") from err
        except BotoCoreError as err:
            raise StorageError(f"S3 could not be reached: {_why(err)}") from err
        return True

    def upload_file(
        self,
        path: Path,
        key: str,
        expected_sha256: str,
        *,
        on_bytes: Callable[[int], None] | None = None,
    ) -> bool:
        """Upload a local file to `key` unless it is there. True when bytes were sent.

        The bytes are hashed on the way; if they no longer match `expected_sha256` (the file
        changed since planning) the object is deleted and InputChanged raised. `on_bytes` is
        told each chunk's size as it is sent (a progress bar).
        """
        if self.exists(key):
            return False
        try:
            with path.open("rb") as stream:
                reader = _HashingReader(stream)
                self.s3.upload_fileobj(
                    io.BufferedReader(reader, buffer_size=MB),
                    self.bucket,
                    key,
                    Config=self._transfer,
                    Callback=on_bytes,
                )
        except OSError as err:
            raise StorageError(f"{path.name} could not be read: {err.strerror}") from err
        except (ClientError, BotoCoreError) as err:
            raise StorageError(f"upload of {path.name} failed: {_why(err)}") from err
        if reader.digest.hexdigest() != expected_sha256:
            self.delete(key)
            raise InputChanged(
                f"{path.name} changed after it was planned (its content no longer matches); "
                "plan the batch again"
            )
        return True

    def copy_from_url(self, url: str, key: str, http: httpx.Client) -> int:
        """Stream the object at `url` into `key`. Returns its size in bytes."""
        try:
            with http.stream("GET", url) as response:
                if response.status_code != 200:
                    raise StorageError(
                        f"the output could not be fetched: HTTP {response.status_code}"
                    )
                reader = _ChunkReader(response.iter_bytes(MB))
                self.s3.upload_fileobj(
                    io.BufferedReader(reader, buffer_size=MB),
                    self.bucket,
                    key,
                    Config=self._transfer,
                    ExtraArgs={"ContentType": "video/mp4"},
                )
        except httpx.HTTPError as err:
            raise StorageError(f"the output could not be fetched: {type(err).__name__}") from err
        except (ClientError, BotoCoreError) as err:
            raise StorageError(f"the output could not be stored: {_why(err)}") from err
        if reader.size == 0:
            self.delete(key)
            raise StorageError("the provider's output was empty")
        return reader.size

    def copy(self, source_key: str, key: str) -> None:
        """Copy an object inside the bucket (server side: no bytes pass through us)."""
        if source_key == key:
            return
        try:
            self.s3.copy_object(
                Bucket=self.bucket, Key=key, CopySource={"Bucket": self.bucket, "Key": source_key}
            )
        except (ClientError, BotoCoreError) as err:
            raise StorageError(f"copy of {source_key} failed: {_why(err)}") from err

    def put_json(self, key: str, data: object) -> None:
        """Write a JSON document."""
        self.put_bytes(key, json.dumps(data, indent=2, sort_keys=True).encode(), "application/json")

    def put_bytes(self, key: str, body: bytes, content_type: str) -> None:
        """Write a small object in one request."""
        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)
        except (ClientError, BotoCoreError) as err:
            raise StorageError(f"{key} could not be written: {_why(err)}") from err

    def put_file(self, key: str, path: Path, content_type: str) -> None:
        """Write a file of any size, streamed from disk (in parts when it is big)."""
        try:
            self.s3.upload_file(
                str(path),
                self.bucket,
                key,
                ExtraArgs={"ContentType": content_type},
                Config=self._transfer,
            )
        except (ClientError, BotoCoreError) as err:
            raise StorageError(f"{key} could not be written: {_why(err)}") from err

    def get_bytes(self, key: str) -> bytes:
        """Read a whole (small) object."""
        try:
            body: bytes = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except (ClientError, BotoCoreError) as err:
            raise StorageError(f"{key} could not be read: {_why(err)}") from err
        return body

    def download(self, key: str, path: Path) -> None:
        """Read an object of any size into a file, streamed (in parts when it is big)."""
        try:
            self.s3.download_file(self.bucket, key, str(path), Config=self._transfer)
        except (ClientError, BotoCoreError) as err:
            raise StorageError(f"{key} could not be read: {_why(err)}") from err

    def delete(self, key: str) -> None:
        """Delete an object (missing is fine)."""
        try:
            self.s3.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as err:
            raise StorageError(f"{key} could not be deleted: {_why(err)}") from err

    def presign(self, key: str, *, bucket: str | None = None, expiry_s: int | None = None) -> str:
        """A GET URL for the object that works without credentials until it expires."""
        try:
            url: str = self.s3.generate_presigned_url(
                "get_object",
                Params={"Bucket": bucket or self.bucket, "Key": key},
                ExpiresIn=expiry_s or self.presign_expiry_s,
            )
        except (ClientError, BotoCoreError) as err:
            raise StorageError(f"no URL could be signed for {key}: {_why(err)}") from err
        return url


def _code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", "error"))


def _why(err: Exception) -> str:
    if isinstance(err, ClientError):
        return f"S3 answered {_code(err)}"
    return type(err).__name__
