"""Shared fixtures: generated media (never downloaded), a live sandbox, a local S3 server."""

from __future__ import annotations

import os
import socket
import tempfile
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from pydantic import SecretStr

from pipeline.local_servers import RedisServer, S3Server
from pipeline.provider.client import ProviderClient
from pipeline.provider.models import Prediction
from pipeline.provider.retry import RetryPolicy
from pipeline.samples import write_audio, write_video
from pipeline.sandbox.config import SandboxConfig
from pipeline.sandbox.server import SandboxServer

SANDBOX_KEY = "sk-sandbox"
# moto's request recorder (used to count S3 requests) writes here, never into the checkout.
os.environ.setdefault(
    "MOTO_RECORDER_FILEPATH", str(Path(tempfile.mkdtemp(prefix="lipdub-moto-")) / "recording.jsonl")
)


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Named sample media: coded videos and tone audios of known durations, plus bad files."""
    root = tmp_path_factory.mktemp("media")
    files = {
        "video_1s": write_video(root / "video 1s.mp4", 1.0),
        "video_2s": write_video(root / "video_2s.mp4", 2.0),
        "video_3s_30fps": write_video(root / "video_3s_30fps.mp4", 3.0, fps=30),
        "video_webm": write_video(root / "clip.webm", 1.2),
        "video_mov": write_video(root / "clip.mov", 1.0),
        "video_avi": write_video(root / "clip.avi", 1.0),
        "video_noface": write_video(
            root / "noface.mp4", 1.0, metadata={"comment": "lipdub:no-face"}
        ),
        "audio_2_4s": write_audio(root / "voice-dé 2.4s.wav", 2.4),
        "audio_0_6s": write_audio(root / "short.wav", 0.6),
        "audio_mp3": write_audio(root / "voice.mp3", 1.5),
        "audio_m4a": write_audio(root / "voice.m4a", 1.5),
        "audio_flac": write_audio(root / "voice.flac", 1.5),
        "audio_ogg": write_audio(root / "voice.ogg", 1.5),
        "audio_only_mp4": write_audio(root / "audio-only.m4a", 1.0),
    }
    text = root / "notes.mp4"
    text.write_text("this is not a video\n")
    files["text_as_mp4"] = text
    truncated = root / "truncated.mp4"
    whole = write_video(root / "whole.mp4", 2.0).read_bytes()
    truncated.write_bytes(whole[: len(whole) // 3])
    files["truncated_mp4"] = truncated
    empty = root / "empty.wav"
    empty.write_bytes(b"")
    files["empty_wav"] = empty
    header_only = root / "header-only.wav"
    with wave.open(str(header_only), "wb") as silent:  # a valid WAV header with no samples
        silent.setnchannels(1)
        silent.setsampwidth(2)
        silent.setframerate(16_000)
    files["zero_duration_wav"] = header_only
    files["video_huge"] = write_video(root / "huge.mp4", 0.04, width=4128, height=2176)
    return files


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


FAST = {"processing_fixed_s": 0.05, "processing_per_video_s": 0.05}


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    """A healthy, fast sandbox with an audit log, fresh for each test."""
    config = SandboxConfig(audit_log=tmp_path / "audit.jsonl", **FAST)
    with SandboxServer(config) as server:
        yield server


def start_sandbox(tmp_path: Path, **overrides: object) -> SandboxServer:
    """A sandbox with extra settings; the caller stops it (use as a context manager)."""
    values: dict[str, object] = {"audit_log": tmp_path / "audit.jsonl", **FAST, **overrides}
    return SandboxServer(SandboxConfig.model_validate(values))


def client_for(
    server: SandboxServer, *, attempts: int = 1, key: str = SANDBOX_KEY, timeout_s: float = 10.0
) -> ProviderClient:
    """A provider client pointed at the sandbox (no in-call retries unless asked)."""
    return ProviderClient(
        httpx.Client(base_url=server.url, timeout=timeout_s),
        api_key=SecretStr(key),
        retry_policy=RetryPolicy(max_attempts=attempts, base_delay_s=0.01, max_delay_s=0.05),
        sleep=lambda _s: None,
    )


def wait_terminal(
    client: ProviderClient, prediction_id: str, timeout_s: float = 30.0
) -> Prediction:
    """Poll until the prediction is terminal (tests may wait; workers never do)."""
    deadline = time.monotonic() + timeout_s
    while True:
        prediction = client.get_result(prediction_id)
        if prediction.terminal:
            return prediction
        if time.monotonic() > deadline:
            raise AssertionError(f"{prediction_id} still {prediction.status} after {timeout_s}s")
        time.sleep(0.05)


def run_job(client: ProviderClient, video: Path, audio: Path, sync_mode: str) -> Prediction:
    """Upload both inputs, submit once, and wait until the prediction is terminal."""
    prediction = client.submit(
        video_url=client.upload_media(video),
        audio_url=client.upload_media(audio),
        sync_mode=sync_mode,
    )
    return wait_terminal(client, prediction.id)


def download(url: str, target: Path) -> Path:
    """Fetch a URL to a file."""
    with httpx.stream("GET", url, timeout=10) as response:
        response.raise_for_status()
        with target.open("wb") as out:
            for chunk in response.iter_bytes():
                out.write(chunk)
    return target


# ---------------------------------------------------------------- the pipeline's stack

AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",  # moto accepts any credentials
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session", autouse=True)
def aws_test_credentials() -> Iterator[None]:
    """Credentials for moto; never real ones, whatever the machine has configured."""
    import os

    saved = {name: os.environ.get(name) for name in (*AWS_TEST_ENV, "AWS_PROFILE")}
    os.environ.update(AWS_TEST_ENV)
    os.environ.pop("AWS_PROFILE", None)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server of the suite's own, on a free port."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The suite's Redis, emptied for this test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server, for the whole session (each test uses its own bucket)."""
    with S3Server() as server:
        yield server


@pytest.fixture
def bucket(s3_server: S3Server, request: pytest.FixtureRequest) -> str:
    """A fresh, empty bucket name for this test."""
    import re
    import uuid

    stem = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    return f"{stem}-{uuid.uuid4().hex[:8]}"
