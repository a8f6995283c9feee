"""Probe inputs that are not on this machine: `s3://` objects and `https://` URLs.

The identity of an input is what decides that two items are the same paid work, so it must
change when the content does. An `https://` input is downloaded once while planning, hashed
on the way and probed from the copy: its identity is the sha256 of its bytes, as a local
file's is (the file behind a URL can be replaced; the URL is no identity). An `s3://` object
is probed in place (FFmpeg reads only the headers and index) and identified by its bucket,
key and ETag, S3's own validator of the object's content (a replaced object gets a new one).
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from pipeline.errors import MediaError
from pipeline.manifest import InputRef
from pipeline.media import MediaInfo, probe, shown_url

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


CHUNK_BYTES = 1024 * 1024


def split_s3(location: str) -> tuple[str, str]:
    """('bucket', 'key') of an s3:// location.

    >>> split_s3("s3://media/de/ep1.wav")
    ('media', 'de/ep1.wav')
    """
    parts = urlsplit(location)
    return parts.netloc, parts.path.lstrip("/")


class RemoteProber:
    """Callable `(InputRef) -> (identity, MediaInfo)` for s3 and https inputs.

    Give an S3 client as `s3`, or `s3_factory` to make one on first use (boto3 is slow to
    import, and most manifests have no s3:// input). Neither: s3:// inputs are refused.
    """

    def __init__(
        self,
        s3: S3Client | None = None,
        *,
        s3_factory: Callable[[], S3Client] | None = None,
        timeout_s: float = 30.0,
        presign_expiry_s: int = 900,
        max_bytes: int = 2 * 1024**3,
        http: httpx.Client | None = None,
    ) -> None:
        self._client = s3
        self._factory = s3_factory
        self.timeout_s = timeout_s
        self.presign_expiry_s = presign_expiry_s
        self.max_bytes = max_bytes
        self._http = http

    def __call__(self, ref: InputRef) -> tuple[str, MediaInfo]:
        if ref.kind == "s3":
            return self._probe_s3(ref.location)
        return self._probe_url(ref.location)

    def _probe_url(self, url: str) -> tuple[str, MediaInfo]:
        """Download the URL to a temporary file, hashing it; probe the copy; drop it."""
        digest = hashlib.sha256()
        shown = shown_url(url)
        http = self._http or httpx.Client(timeout=self.timeout_s, follow_redirects=True)
        with tempfile.TemporaryDirectory(prefix="lipdub-probe-") as folder:
            copy = Path(folder) / (Path(urlsplit(url).path).name or "input")
            try:
                with http.stream("GET", url) as response, copy.open("wb") as out:
                    if response.status_code != 200:
                        raise MediaError(f"{shown} answered HTTP {response.status_code}")
                    received = 0
                    for chunk in response.iter_bytes(CHUNK_BYTES):
                        received += len(chunk)
                        if received > self.max_bytes:
                            raise MediaError(
                                f"{shown} is larger than {self.max_bytes // 1024**2} MB"
                            )
                        digest.update(chunk)
                        out.write(chunk)
            except httpx.HTTPError as err:
                raise MediaError(f"{shown} could not be read ({type(err).__name__})") from err
            finally:
                if self._http is None:
                    http.close()
            info = probe(copy, timeout_s=self.timeout_s)
        return digest.hexdigest(), info

    @property
    def s3(self) -> S3Client | None:
        """The S3 client, made on first use when only a factory was given."""
        if self._client is None and self._factory is not None:
            self._client = self._factory()
        return self._client

    def _probe_s3(self, location: str) -> tuple[str, MediaInfo]:
        if self.s3 is None:
            raise MediaError(f"{location}: no S3 client is configured")
        bucket, key = split_s3(location)
        try:
            head = self.s3.head_object(Bucket=bucket, Key=key)
            url = self.s3.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=self.presign_expiry_s
            )
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "error")
            if code in ("404", "NoSuchKey", "NotFound"):
                raise MediaError(f"{location} does not exist") from err
            raise MediaError(f"{location}: S3 answered {code}") from err
        except NoCredentialsError as err:
            raise MediaError(
                f"{location}: no AWS credentials (set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
            ) from err
        except BotoCoreError as err:
            raise MediaError(f"{location}: S3 could not be reached ({type(err).__name__})") from err
        etag = str(head.get("ETag", "")).strip('"')
        identity = hashlib.sha256(f"s3://{bucket}/{key}#{etag}".encode()).hexdigest()
        info = probe(url, timeout_s=self.timeout_s)
        return identity, MediaInfo(
            **{**info.__dict__, "size_bytes": int(head.get("ContentLength", 0))}
        )


def make_s3_client(
    *, endpoint_url: str | None, region: str, max_attempts: int | None = None
) -> S3Client:
    """A boto3 S3 client for the configured endpoint (credentials from the usual AWS chain).
    `max_attempts`: botocore's own retries of throttling and 5xx answers (standard mode,
    backoff capped at 20 s), for a process that may wait; None keeps botocore's default."""
    import boto3  # local import: boto3 is slow to import and only needed here
    from botocore.config import Config

    config = (
        Config(retries={"mode": "standard", "max_attempts": max_attempts}) if max_attempts else None
    )
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)
