"""Fixtures for the pipeline's integration tests, and `lipdub` run as a user runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from pipeline.remote import make_s3_client
from pipeline.settings import to_environment
from pipeline.storage import Storage
from tests.conftest import start_sandbox
from tests.integration.stack import ROOT, Stack, stack_settings

LIPDUB = [sys.executable, "-m", "workers.cli"]


@pytest.fixture
def make_stack(tmp_path, redis_url, s3_server, bucket):
    stacks = []

    def make(sandbox, **sections):
        settings = stack_settings(
            sandbox_url=sandbox.url,
            redis_url=redis_url,
            s3_url=s3_server.url,
            bucket=bucket,
            **sections,
        )
        stack = Stack(settings)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.close()


class Cli:
    """Runs `lipdub` as a user would, with the stack's settings in the environment."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env = env
        self.cwd = cwd

    def __call__(self, *args: str, timeout: float = 120, **extra_env: str):
        return subprocess.run(
            [*LIPDUB, *args],
            cwd=self.cwd,
            env={**self.env, **extra_env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """The command running, as from a terminal: Ctrl-C (SIGINT) reaches it even when the
        tests themselves run in the background (a shell's background job ignores SIGINT,
        and its children inherit that)."""
        return subprocess.Popen(
            [*LIPDUB, *args],
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )

    @contextmanager
    def worker(self, log: Path, *args: str, **extra_env: str):
        """`lipdub worker` (prefork), stopped with SIGTERM (warm shutdown) afterwards."""
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*LIPDUB, "worker", "--concurrency=2", f"--hostname=t{os.getpid()}@%h", *args],
                cwd=self.cwd,
                env={**self.env, **extra_env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            try:
                yield proc
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@pytest.fixture
def sandbox_server(tmp_path):
    with start_sandbox(tmp_path) as server:
        yield server


@pytest.fixture
def settings(sandbox_server, redis_url, s3_server, bucket, tmp_path):
    return stack_settings(
        sandbox_url=sandbox_server.url,
        redis_url=redis_url,
        s3_url=s3_server.url,
        bucket=bucket,
        media={"cache_dir": tmp_path / "cache"},
    )


@pytest.fixture
def cli(settings, tmp_path):
    """`lipdub` for a user whose bucket exists (lipdub creates one only when asked)."""
    Storage(
        make_s3_client(endpoint_url=settings.storage.endpoint_url, region=settings.storage.region),
        settings.storage,
    ).ensure_bucket()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIPDUB_")}
    env.pop("WAVESPEED_API_KEY", None)
    env.update(to_environment(settings))
    env["PYTHONPATH"] = str(ROOT)
    env["COLUMNS"] = "200"
    return Cli(env, tmp_path)


@pytest.fixture
def stack(settings):
    stack = Stack(settings)
    yield stack
    stack.close()
