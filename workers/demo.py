"""The bundled stack `lipdub demo` runs on: everything real, everything local, nothing left behind.

    with DemoStack(workdir) as stack:        # redis-server, moto's S3, the sandbox, 2 workers
        session = Session.connect(stack.settings)

A Redis-protocol server (`pipeline.local_servers.find_redis_server`) with AOF fsynced on every
write, on a free port;
moto's S3 server and the sandbox in this process on free ports; two `lipdub worker`
processes (prefork, each in its own process group) configured only through `LIPDUB_`
variables, exactly as on a production machine. Leaving the `with` block stops them all.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Self

from pipeline.local_servers import RedisServer, S3Server
from pipeline.sandbox.config import SandboxConfig
from pipeline.sandbox.server import SandboxServer
from pipeline.serving import Service
from pipeline.settings import Settings, to_environment

DEMO_API_KEY = "sk-sandbox"
WORKER_STOP_TIMEOUT_S = 20.0

# The sandbox plays a small account: 4 starts per 4 s window and 3 at a time, so the demo shows
# the shared gates at work without taking long. lipdub is told the same limits.
DEMO_STARTS_PER_WINDOW = 4
DEMO_WINDOW_S = 4.0
DEMO_MAX_CONCURRENT = 3


def demo_settings(workdir: Path, *, redis_url: str, s3_url: str, sandbox_url: str) -> Settings:
    """Settings for the demo stack (fast polls are allowed: the provider is on loopback)."""
    return Settings(
        provider={  # type: ignore[arg-type]
            "base_url": sandbox_url,
            "api_key": DEMO_API_KEY,
            "starts_per_minute": DEMO_STARTS_PER_WINDOW,
            "rate_window_s": DEMO_WINDOW_S,
            "start_margin_s": 0.2,
            "max_concurrent": DEMO_MAX_CONCURRENT,
            "polls_per_second": 20.0,
            "cooldown_default_s": 1.0,
            "submit_timeout_s": 10.0,
        },
        storage={"bucket": "lipdub-demo", "endpoint_url": s3_url},  # type: ignore[arg-type]
        redis={"url": redis_url},  # type: ignore[arg-type]
        polling={  # type: ignore[arg-type]
            "first_poll_min_s": 0.5,
            "max_interval_s": 2.0,
            "expected_fixed_s": 1.0,
            "expected_per_video_s": 0.2,
            "item_deadline_s": 120.0,
            "reconcile_grace_s": 2.0,
        },
        worker={  # type: ignore[arg-type]
            "task_time_limit_s": 120,
            "task_soft_time_limit_s": 100,
            "max_countdown_s": 30.0,
            "visibility_timeout_s": 300,
            "retry_delay_s": 1.0,
        },
        media={"cache_dir": workdir / "cache"},  # type: ignore[arg-type]
    )


SettingsFactory = Callable[..., Settings]
"""Builds the stack's settings: (workdir, *, redis_url, s3_url, sandbox_url) -> Settings."""


class DemoStack(Service):
    """Start the stack on enter, stop every part of it on exit (also after Ctrl-C).

    The demo's sandbox and settings by default; the benchmarks pass their own.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        workers: int = 2,
        concurrency: int = 2,
        sandbox_config: SandboxConfig | None = None,
        settings_factory: SettingsFactory = demo_settings,
        appendfsync: str = "always",
        webhooks_port: int | None = None,
    ) -> None:
        self.workdir = workdir.resolve()
        self.webhooks_port = webhooks_port
        """Also run `lipdub webhooks` on this port (the settings must point the provider at it)."""
        self.worker_count = workers
        self.concurrency = concurrency
        self.settings_factory = settings_factory
        self.redis = RedisServer(self.workdir / "redis", appendfsync=appendfsync)
        self.s3 = S3Server()
        self.sandbox = SandboxServer(
            sandbox_config
            or SandboxConfig(
                starts_per_minute=DEMO_STARTS_PER_WINDOW,
                rate_window_s=DEMO_WINDOW_S,
                max_concurrent=DEMO_MAX_CONCURRENT,
                processing_fixed_s=1.5,
                processing_per_video_s=0.3,
                audit_log=self.workdir / "sandbox-audit.jsonl",
                workdir=self.workdir / "sandbox",
            )
        )
        self.workers: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []
        self.settings: Settings | None = None
        self._sandbox_started = False

    def start(self) -> Self:
        """Start Redis, S3, the sandbox, then the workers."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        # The bucket lives in memory, so the ledger must start empty too: a ledger from an
        # earlier demo would point at outputs this S3 server never had.
        shutil.rmtree(self.redis.workdir, ignore_errors=True)
        # moto accepts any credentials; these keep real ones (if any) out of the demo.
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            os.environ.pop(name, None)
        os.environ["AWS_ACCESS_KEY_ID"] = "lipdub-demo"
        os.environ["AWS_SECRET_ACCESS_KEY"] = "lipdub-demo"  # noqa: S105 - a local fake
        try:
            self.redis.start()
            self.s3.start()
            self.sandbox.start()
            self._sandbox_started = True
            self.settings = self.settings_factory(
                self.workdir,
                redis_url=self.redis.url,
                s3_url=self.s3.url,
                sandbox_url=self.sandbox.url,
            )
            self._start_workers(self.settings)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_workers(self, settings: Settings) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIPDUB_")}
        env.update(to_environment(settings))
        commands: dict[str, list[str]] = {}
        for n in range(self.worker_count):
            commands[f"worker-{n + 1}"] = [
                sys.executable, "-m", "workers.cli", "worker",
                f"--concurrency={self.concurrency}", f"--hostname=demo{n + 1}-{os.getpid()}@%h",
            ]  # fmt: skip
        if self.webhooks_port is not None:
            commands["webhooks"] = [
                sys.executable, "-m", "workers.cli", "webhooks", f"--port={self.webhooks_port}",
            ]  # fmt: skip
        for name, command in commands.items():
            log = (self.workdir / f"{name}.log").open("wb")
            self._logs.append(log)
            self.workers.append(
                subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                    command,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )

    def stop(self) -> None:
        """Stop the workers (warm shutdown, then kill their process groups), then the servers."""
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(timeout=WORKER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            # Pool children that outlived their parent share its group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        self.workers.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()
        if self._sandbox_started:
            self.sandbox.stop()
            self._sandbox_started = False
        self.s3.stop()
        self.redis.stop()
