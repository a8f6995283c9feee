"""`make chaos`: every fault scenario of the reliability issue at scale, one table, one file.

    python -m tests.chaos.run_all [--items 100] [--only kills,redis,...]

Each scenario starts its own redis-server, sandbox and real `celery worker` processes (moto's
S3 server is shared), runs a batch while injecting its faults, and is judged by the ledger's
report and the sandbox's audit. Duplicate submissions and lost items must be 0. Writes
tests/chaos/results/<date>.json. The test suite runs the same scenarios small.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from pipeline.due import DueSteps
from pipeline.errors import ManifestError
from pipeline.local_servers import RedisServer, S3Server, free_port
from pipeline.provider.webhooks import sign
from pipeline.sandbox.config import SandboxConfig
from pipeline.settings import (
    PollingSettings,
    ProviderSettings,
    Settings,
    StorageSettings,
    WorkerSettings,
)
from pipeline.webhook_inbox import WebhookInbox
from tests.chaos.crash import CRASH_POINTS
from tests.chaos.host_crash import Crash, FsyncWatch
from tests.chaos.kills import run_with_kills
from tests.chaos.outcome import Outcome, judge, sandbox_witness
from tests.chaos.provider_faults import faults_injected, lipdub_settings, sandbox_faults
from tests.chaos.redis_restart import run_with_redis_restarts
from tests.chaos.s3_proxy import FaultyS3Proxy
from tests.chaos.secrets import RedisMonitor, leaks, redis_values
from tests.chaos.storage_faults import media_key_of, outage_when_in_flight
from tests.conftest import SANDBOX_KEY, start_sandbox
from tests.integration.stack import Stack, plan, stack_settings, worker_processes, write_manifest
from tests.integration.test_reliability_input import hostile_catalog
from workers.tasks import CeleryDispatcher
from workers.webhooks import WebhookServer

RESULTS = Path(__file__).parent / "results"
MODES = ("cut_off", "loop", "bounce", "silence", "remap")
SILVER = {"starts_per_minute": 500, "max_concurrent": 300}
"""A Silver account's limits, as its user would set them; every other setting its default."""


def user_defaults(**limits: int) -> dict[str, dict[str, Any]]:
    """lipdub's own defaults for everything a user does not set (the provider's timeouts and
    pacing margin, polling, the worker's timers, how long an input URL lives), replacing the
    test stack's short ones, with the account's `limits` as its user sets them (a Silver
    account's by default). A scenario that shortens one of these says so in its name."""
    provider = ProviderSettings().model_dump(
        exclude={"base_url", "api_key", "webhook_url", "webhook_secret"}
    )
    return {
        "provider": {**provider, **(limits or SILVER)},
        "polling": PollingSettings().model_dump(),
        "worker": WorkerSettings().model_dump(),
        "storage": {"presign_expiry_s": StorageSettings().presign_expiry_s},
    }


AWS_ENV = {"AWS_ACCESS_KEY_ID": "chaos", "AWS_SECRET_ACCESS_KEY": "chaos", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip


def items(count: int, prefix: str) -> list[tuple[str, float, float, str]]:
    """`count` items, every video and every audio distinct (one frame or 10 ms longer than
    the last), all five modes. Distinct files matter: a fault aimed at one item's upload
    would otherwise hit every item sharing its content."""
    return [
        (f"{prefix}-{n:03d}", 0.4 + 0.04 * n, 0.6 + 0.01 * n, MODES[n % 5]) for n in range(count)
    ]


class Scenario:
    """A fresh Redis, sandbox and bucket for one scenario, and its settings."""

    def __init__(self, name: str, root: Path, s3: S3Server, count: int) -> None:
        self.name = name
        self.workdir = root / name
        self.workdir.mkdir(parents=True)
        self.s3 = s3
        self.count = count
        self.bucket = f"chaos-{name}-{secrets.token_hex(3)}"

    def settings(self, sandbox_url: str, redis_url: str, **sections: Any) -> Settings:
        return stack_settings(
            sandbox_url=sandbox_url,
            redis_url=redis_url,
            s3_url=self.s3.url,
            bucket=self.bucket,
            **sections,
        )

    def manifest(self, count: int | None = None) -> Path:
        return write_manifest(self.workdir / "catalog", items(count or self.count, self.name))


def scenario_kills(sc: Scenario) -> Outcome:
    """A worker SIGKILLed at every point of an item's life, one after another, with the
    default settings (the worker's time limit, visibility timeout and sweep among them): the
    table's `resume s` is the longest a step a dead worker held waited to be taken up again."""
    points = list(CRASH_POINTS)
    with RedisServer(sc.workdir / "redis") as redis_server, start_sandbox(sc.workdir) as sandbox:
        stack = Stack(sc.settings(sandbox.url, redis_server.url, **user_defaults()))
        started = time.monotonic()
        batch_id, kills, _ = run_with_kills(
            stack, plan(sc.manifest(), stack.settings), sc.workdir, points, timeout_s=600
        )
        outcome = judge(
            "worker SIGKILL at each point",
            f"{len(kills)} kills ({', '.join(k.point for k in kills)})",
            stack.control.report(batch_id),
            sandbox_witness(sandbox.url),
            sc.count,
            time.monotonic() - started,
        )
        waits = [max(k.resume_s) for k in kills if k.resume_s]
        outcome.resume_s = max(waits) if waits else None
        if any(k.held and not k.resume_s for k in kills):
            outcome.failed["NOT RESUMED"] = sum(1 for k in kills if k.held and not k.resume_s)
        stack.close()
    return outcome


def scenario_redis(sc: Scenario) -> Outcome:
    """Redis (AOF on) restarted three times mid-batch, with the default settings."""
    with (
        RedisServer(sc.workdir / "redis", appendonly=True) as redis_server,
        start_sandbox(sc.workdir, processing_fixed_s=0.5) as sandbox,
    ):
        stack = Stack(sc.settings(sandbox.url, redis_server.url, **user_defaults()))
        started = time.monotonic()
        batch_id, restarts, _ = run_with_redis_restarts(
            stack, redis_server, plan(sc.manifest(), stack.settings), sc.workdir,
            restarts=3, workers=2, timeout_s=600,
        )  # fmt: skip
        outcome = judge(
            "Redis restarted mid-batch",
            f"{restarts} restarts",
            stack.control.report(batch_id),
            sandbox_witness(sandbox.url),
            sc.count,
            time.monotonic() - started,
        )
        stack.close()
    return outcome


PROVIDER_FAULTS_DEADLINE_S = 60.0
"""The provider-fault scenarios' item deadline: a task that never finishes ends within the run,
and an item whose answers were lost or slow still gets its own looks first (its first aimed at
the default expectation, 20 s and a second per second of video, until the provider's times are
learned). With 15 s, a quarter of the items timed out (23, against 4 with the test suite's
polls)."""
PROVIDER_FAULTS_TUNED = (
    "(tuned: answers time out after 1-1.5 s, a 429 without Retry-After holds 0.5 s, items end "
    f"after {PROVIDER_FAULTS_DEADLINE_S:.0f} s)"
)
"""What the provider-fault scenarios shorten (`provider_faults.lipdub_settings`): a hung answer
must time out, and a task that never finishes meet its deadline, within the run; with the
defaults (60 s, 2 h) the same faults end the same way, hours later."""


def scenario_provider(sc: Scenario) -> Outcome:
    """Every provider fault at once: 429 storms, 5xx, drops, slow, hung, malformed, failed
    and never-finishing tasks."""
    with (
        RedisServer(sc.workdir / "redis") as redis_server,
        start_sandbox(sc.workdir, faults=sandbox_faults(seed=5)) as sandbox,
    ):
        sections = tuned(
            lipdub_settings(max_attempts=3, item_deadline_s=PROVIDER_FAULTS_DEADLINE_S)
        )
        stack = Stack(sc.settings(sandbox.url, redis_server.url, **sections))
        started = time.monotonic()
        with worker_processes(stack.settings, sc.workdir, count=2, concurrency=4):
            batch_id = stack.control.start(plan(sc.manifest(), stack.settings))
            stack.wait(batch_id, timeout_s=600)
        witness = sandbox_witness(sandbox.url)
        injected = faults_injected(witness["stats"])
        outcome = judge(
            f"every provider fault at once {PROVIDER_FAULTS_TUNED}",
            ", ".join(f"{k} {v}" for k, v in sorted(injected.items())),
            stack.control.report(batch_id),
            witness,
            sc.count,
            time.monotonic() - started,
        )
        stack.close()
    return outcome


def scenario_storage_outage(sc: Scenario) -> Outcome:
    """S3 down for 3 s, twice, while items upload and others are at the provider."""
    with (
        RedisServer(sc.workdir / "redis") as redis_server,
        FaultyS3Proxy(sc.s3.url) as proxy,
        start_sandbox(sc.workdir, processing_fixed_s=0.4) as sandbox,
    ):
        sections = tuned({"storage": {"endpoint_url": proxy.url}})
        stack = Stack(sc.settings(sandbox.url, redis_server.url, **sections))
        started = time.monotonic()
        with worker_processes(stack.settings, sc.workdir, count=2, concurrency=2):
            batch_id = stack.control.start(plan(sc.manifest(), stack.settings))
            outages = 0
            for _ in range(2):
                try:
                    outage_when_in_flight(stack, proxy, batch_id, down_s=3.0)
                    outages += 1
                except AssertionError:
                    break  # the batch is past its uploads
            stack.wait(batch_id, timeout_s=600)
        outcome = judge(
            "S3 down, then back",
            f"{outages} outages of 3 s",
            stack.control.report(batch_id),
            sandbox_witness(sandbox.url),
            sc.count,
            time.monotonic() - started,
        )
        stack.close()
    return outcome


def scenario_storage_errors(sc: Scenario) -> Outcome:
    """S3 answering SlowDown to some writes, and refusing one item's upload (from the
    starting machine) and another's output for good: those two fail clearly; the rest
    complete."""
    with (
        RedisServer(sc.workdir / "redis") as redis_server,
        FaultyS3Proxy(sc.s3.url) as proxy,
        start_sandbox(sc.workdir) as sandbox,
    ):
        sections = tuned({"storage": {"endpoint_url": proxy.url, "retry_for_s": 8.0}})
        stack = Stack(sc.settings(sandbox.url, redis_server.url, **sections))
        manifest = sc.manifest()
        bucket = sc.bucket
        proxy.fail("PUT", rf"^/{bucket}/media/", times=sc.count // 5)
        first = items(sc.count, sc.name)
        proxy.fail("*", rf"^/{bucket}/{media_key_of(manifest.parent / f'{first[1][0]}.mp4')}$", status=500)  # fmt: skip
        proxy.fail("*", rf"^/{bucket}/outputs/[^/]+/{first[2][0]}\.mp4$", status=500)
        started = time.monotonic()
        with worker_processes(stack.settings, sc.workdir, count=2, concurrency=2):
            batch_id = stack.control.start(plan(manifest, stack.settings))
            stack.wait(batch_id, timeout_s=600)
        outcome = judge(
            "S3 errors on upload and collect (tuned: S3 trouble ridden out 8 s, not 10 min)",
            f"{proxy.injected()} S3 errors",
            stack.control.report(batch_id),
            sandbox_witness(sandbox.url),
            sc.count,
            time.monotonic() - started,
        )
        stack.close()
    return outcome


def scenario_hostile(sc: Scenario) -> Outcome:
    """A manifest with one hostile case per row: refused whole, before any spend."""
    manifest, expected = hostile_catalog(sc.workdir / "catalog")
    with start_sandbox(sc.workdir) as sandbox:
        started = time.monotonic()
        settings = Settings()
        try:
            plan(manifest, settings)
            refused: dict[str, int] = {}
        except ManifestError as err:
            rows = {p.row for p in err.problems}
            refused = {"refused at planning (rows)": len(rows)}
            missing = set(expected) - {(p.row, p.field) for p in err.problems}
            if missing:
                refused["NOT NAMED"] = len(missing)
        witness = sandbox_witness(sandbox.url)
    rows = len(manifest.read_text().splitlines()) - 1
    return Outcome(
        scenario="hostile input",
        items=rows,
        faults=f"{len(expected)} hostile rows, HTML and formula metadata",
        completed=0,
        failed=refused,
        duplicate_submissions=len(witness["audit"]),  # any submission at all is a failure here
        lost=0,
        wall_s=time.monotonic() - started,
    )


def scenario_secrets(sc: Scenario) -> Outcome:
    """A batch with a known key and failing provider: the key in no log, report or message."""
    key = f"sk-live-{secrets.token_hex(16)}"
    with (
        RedisServer(sc.workdir / "redis") as redis_server,
        start_sandbox(sc.workdir, api_keys=[key], faults=sandbox_faults(seed=5)) as sandbox,
    ):
        sections = tuned(
            lipdub_settings(max_attempts=3, item_deadline_s=PROVIDER_FAULTS_DEADLINE_S)
        )
        sections["provider"]["api_key"] = key
        stack = Stack(sc.settings(sandbox.url, redis_server.url, **sections))
        started = time.monotonic()
        with (
            RedisMonitor(redis_server.url) as monitor,
            worker_processes(stack.settings, sc.workdir, count=1, concurrency=4),
        ):
            batch_id = stack.control.start(plan(sc.manifest(), stack.settings))
            stack.wait(batch_id, timeout_s=600)
        texts = [
            *monitor.commands,
            *redis_values(redis_server.url),
            *(p.read_text(errors="replace") for p in sc.workdir.glob("*.log")),
            *(stack.storage.get_bytes(k).decode() for k in stack.keys("reports/")),
        ]
        found = leaks(key, texts)
        outcome = judge(
            f"secrets (known API key) {PROVIDER_FAULTS_TUNED}",
            f"{len(monitor.commands)} Redis commands, {len(texts)} texts searched; "
            f"key found {len(found)} times",
            stack.control.report(batch_id),
            sandbox_witness(sandbox.url),
            sc.count,
            time.monotonic() - started,
        )
        if found:
            outcome.failed["KEY LEAKED"] = len(found)
        stack.close()
    return outcome


def scenario_webhooks(sc: Scenario) -> Outcome:
    """Webhooks on, half of them lost on the way; forged, stale and replayed ones sent too."""
    port = free_port()
    secret = SandboxConfig().webhook_secret
    with (
        RedisServer(sc.workdir / "redis") as redis_server,
        start_sandbox(sc.workdir, webhook_attempts=1) as sandbox,
    ):
        sections = tuned(
            {
                "provider": {"webhook_url": f"http://127.0.0.1:{port}/webhooks"},
                # (the account's watch off: the scenario is webhooks first, polls as the net)
                "polling": {
                    "first_poll_min_s": 6.0,
                    "max_interval_s": 6.0,
                    "expected_fixed_s": 6.0,
                    "watch_every_s": 0.0,
                },
            }
        )
        stack = Stack(sc.settings(sandbox.url, redis_server.url, **sections))
        inbox = WebhookInbox(stack.ledger, SecretStr(secret))
        dispatcher = CeleryDispatcher(
            stack.app,
            stack.settings.worker.queue,
            due=DueSteps(stack.redis, stack.settings.worker.queue),
        )
        started = time.monotonic()
        refused = 0
        with worker_processes(stack.settings, sc.workdir, count=1, concurrency=4):
            batch_id = stack.control.start(plan(sc.manifest(), stack.settings))
            # The receiver is up for the first half of the batch only: the rest are missed.
            with WebhookServer(inbox, dispatcher, port=port) as receiver:
                _wait_done(stack, batch_id, sc.count // 2)
                body = b'{"id": "forged"}'
                now = int(time.time())
                for headers in (
                    sign("whsec_attacker", "f1", now, body).as_dict(),
                    sign(secret, "f2", now - 3600, body).as_dict(),
                    sign(secret, "f3", now, body).as_dict(),
                    sign(secret, "f3", now, body).as_dict(),
                ):
                    answer = httpx.post(receiver.url, content=body, headers=headers)
                    refused += answer.status_code in (401, 409)
                taken = sum(1 for v in receiver.verdicts if v.wake is not None)
            stack.wait(batch_id, timeout_s=600)
        missed = len(sandbox.engine.webhook_deliveries) - taken
        outcome = judge(
            "webhooks: forged, stale, replayed, missed (tuned: polls 6 s apart, no watch)",
            f"{refused}/3 bad deliveries refused, {missed} missed, {taken} taken",
            stack.control.report(batch_id),
            sandbox_witness(sandbox.url),
            sc.count,
            time.monotonic() - started,
        )
        if refused != 3:
            outcome.failed["BAD DELIVERY TAKEN"] = 3 - refused
        stack.close()
    return outcome


def tuned(shortened: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The defaults (`user_defaults`) with the few settings a scenario shortens, and names in
    its row.

    >>> tuned({"polling": {"watch_every_s": 0.0}})["polling"]["watch_every_s"]
    0.0
    >>> tuned({"polling": {"watch_every_s": 0.0}})["polling"]["first_poll_min_s"]
    5.0
    """
    sections = user_defaults()
    for section, values in shortened.items():
        sections.setdefault(section, {}).update(values)
    return sections


def lost_answers(sc: Scenario, *, webhooks: bool) -> Outcome:
    """10% of submit answers dropped after the task was created, a list without inputs (as
    WaveSpeed's), lipdub with its default settings: each lost submit is settled from what
    is observable, or handed to a person with the few candidates that made it ambiguous."""
    port = free_port()
    with (
        RedisServer(sc.workdir / "redis") as redis_server,
        start_sandbox(
            sc.workdir, max_concurrent=20, faults={"seed": 11, "submit_drop_rate": 0.1}
        ) as sandbox,
    ):
        provider: dict[str, Any] = {"base_url": sandbox.url, "api_key": SANDBOX_KEY, **SILVER}
        if webhooks:
            provider["webhook_url"] = f"http://127.0.0.1:{port}/webhooks"
        # Not the test stack's fast settings: what a user has.
        settings = Settings(
            provider=provider,  # type: ignore[arg-type]
            storage={"bucket": sc.bucket, "endpoint_url": sc.s3.url},  # type: ignore[arg-type]
            redis={"url": redis_server.url},  # type: ignore[arg-type]
        )
        stack = Stack(settings)
        inbox = WebhookInbox(stack.ledger, SecretStr(SandboxConfig().webhook_secret))
        dispatcher = CeleryDispatcher(
            stack.app,
            stack.settings.worker.queue,
            due=DueSteps(stack.redis, stack.settings.worker.queue),
        )
        started = time.monotonic()
        with contextlib.ExitStack() as running:
            if webhooks:
                running.enter_context(WebhookServer(inbox, dispatcher, port=port))
            running.enter_context(
                worker_processes(stack.settings, sc.workdir, count=2, concurrency=4)
            )
            batch_id = stack.control.start(plan(sc.manifest(), stack.settings))
            stack.wait(batch_id, timeout_s=1200)
        witness = sandbox_witness(sandbox.url)
        report = stack.control.report(batch_id)
        dropped = faults_injected(witness["stats"]).get("submit_drop", 0)
        attention = [i for i in report["items_detail"] if i["state"] == "needs_attention"]
        candidates = [len(i["evidence"]["candidates"]) for i in attention]
        outcome = judge(
            f"lost submit answers, {'webhooks' if webhooks else 'polling only'}",
            f"{dropped} answers dropped; {sum(i['reconciled'] for i in report['items_detail'])} "
            f"settled from the list; needs_attention: {len(attention)}"
            + (f" (candidates each: {sorted(candidates)})" if candidates else ""),
            report,
            witness,
            sc.count,
            time.monotonic() - started,
        )
        stack.close()
    return outcome


def scenario_lost_answers(sc: Scenario) -> Outcome:
    """Lost submit answers, polling only."""
    return lost_answers(sc, webhooks=False)


def scenario_lost_answers_webhooks(sc: Scenario) -> Outcome:
    """Lost submit answers, with the webhook receiver running."""
    return lost_answers(sc, webhooks=True)


def host_crashes(sc: Scenario, *, durability: str) -> Outcome:
    """The Redis host crashes three times during submit bursts: redis-server SIGKILLed and its
    AOF cut back as its fsync policy allows (`tests.chaos.host_crash`). With the default
    durability, Redis as compose runs it (appendfsync always); with `none`, the everysec
    Redis that durability would refuse. Workers are `lipdub worker` (supervised), with the
    default settings."""
    fsync = "everysec" if durability == "none" else "always"
    with (
        RedisServer(sc.workdir / "redis", appendfsync=fsync) as redis_server,
        start_sandbox(sc.workdir, processing_fixed_s=0.5, max_concurrent=40) as sandbox,
    ):
        sections = user_defaults(starts_per_minute=SILVER["starts_per_minute"], max_concurrent=40)
        sections["ledger"] = {"durability": durability}
        stack = Stack(sc.settings(sandbox.url, redis_server.url, **sections))
        count = max(sc.count, HOST_CRASH_ITEMS)
        started = time.monotonic()
        crashes: list[Crash] = []
        with (
            FsyncWatch(redis_server) as watch,
            worker_processes(stack.settings, sc.workdir, count=2, concurrency=4, supervised=True),
        ):
            batch_id = stack.control.start(plan(sc.manifest(count), stack.settings))
            for n in range(3):
                # In a burst: a share more of the pairs submitted, some posts in flight
                if not _wait_submitted(sandbox.url, count * (n + 1) // 4):
                    break
                crashes.append(watch.crash())
            _wait_finished(stack, batch_id, timeout_s=900)
        witness = sandbox_witness(sandbox.url)
        report = stack.control.report(batch_id)
        cut = ", ".join(f"{c.cut_s:.2f} s ({c.cut_bytes} B)" for c in crashes)
        outcome = judge(
            f"Redis host crash, appendfsync {fsync}"
            + (f" {EXPECTED_DUPLICATES}" if durability == "none" else ""),
            f"{len(crashes)} crashes, AOF cut back by {cut}",
            report,
            witness,
            count,
            time.monotonic() - started,
        )
        missed = _duplicates_not_audited(report, witness)
        if missed:
            outcome.failed["DUPLICATES MISSED BY THE AUDIT"] = missed
        stack.close()
    return outcome


def _wait_submitted(sandbox_url: str, count: int, timeout_s: float = 600) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        made = sum(1 for e in sandbox_witness(sandbox_url)["audit"] if "prediction_id" in e)
        if made >= count:
            return True
        time.sleep(0.02)
    return False


def _wait_finished(stack: Stack, batch_id: str, timeout_s: float) -> None:
    """Until the batch is finished (Redis may be restarting: ask again)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if stack.control.status(batch_id)["state"] == "finished":
                return
        time.sleep(0.2)


def _duplicates_not_audited(report: dict[str, Any], witness: dict[str, Any]) -> int:
    """Charged predictions that no item has and the report's audit does not list."""
    ours = {p for item in report["items_detail"] for p in item["prediction_ids"]}
    listed = {u["id"] for u in (report.get("audit") or {}).get("unattributed", [])}
    charged = {t["prediction_id"] for t in witness["tasks"] if Decimal(t["charged_usd"])}
    return len(charged - ours - listed)


HOST_CRASH_ITEMS = 200
"""At least this many items (`--items` may ask for more): bursts long enough to crash in."""


def scenario_host_crash(sc: Scenario) -> Outcome:
    """Host crashes with the default durability (auto: WAITAOF)."""
    return host_crashes(sc, durability="auto")


def scenario_host_crash_none(sc: Scenario) -> Outcome:
    """Host crashes with LIPDUB_LEDGER__DURABILITY=none: the duplicates it allows, all audited."""
    return host_crashes(sc, durability="none")


def _wait_done(stack: Stack, batch_id: str, done: int) -> None:
    deadline = time.monotonic() + 300
    while stack.control.status(batch_id)["counts"].get("completed", 0) < done:
        if time.monotonic() > deadline:
            return
        time.sleep(0.1)


SCENARIOS: dict[str, Callable[[Scenario], Outcome]] = {
    "kills": scenario_kills,
    "redis": scenario_redis,
    "provider": scenario_provider,
    "storage-outage": scenario_storage_outage,
    "storage-errors": scenario_storage_errors,
    "hostile": scenario_hostile,
    "secrets": scenario_secrets,
    "webhooks": scenario_webhooks,
    "lost-answers": scenario_lost_answers,
    "lost-answers-webhooks": scenario_lost_answers_webhooks,
    "host-crash": scenario_host_crash,
    "host-crash-none": scenario_host_crash_none,
}


def print_table(rows: list[dict[str, Any]]) -> None:
    """A plain-text table (fits a CI log)."""
    columns = list(rows[0]) if rows else []
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    line = " | ".join(c.ljust(widths[c]) for c in columns)
    print(line)
    print("-+-".join("-" * widths[c] for c in columns))
    for row in rows:
        print(" | ".join(str(row[c]).ljust(widths[c]) for c in columns))


EXPECTED_DUPLICATES = "(durability none)"
"""A scenario named so shows what paying twice looks like: its duplicates are expected; its
guarantee is that the books still account for every one of them."""


def _held(row: dict[str, Any]) -> bool:
    """Whether a row's guarantees held: nothing lost, nothing paid twice (or, where paying
    twice is the point, every duplicate in the books), no leak, every charge in the books."""
    paid_once = row["duplicate submissions"] == 0 or EXPECTED_DUPLICATES in row["scenario"]
    marked = any(k in row["failed (reason)"] for k in ("LEAKED", "NOT NAMED", "TAKEN", "MISSED"))
    return paid_once and row["lost"] == 0 and not marked and "OFF" not in row["books = bill"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    parser.add_argument("--no-save", action="store_true", help="do not write the results file")
    parser.add_argument(
        "--keep",
        type=Path,
        help="run in this folder and keep it (worker and sandbox logs, Redis data) to diagnose",
    )
    args = parser.parse_args(argv)
    os.environ.update({k: os.environ.get(k, v) for k, v in AWS_ENV.items()})
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {list(SCENARIOS)}")
    started = time.monotonic()
    rows = []
    evidence: dict[str, list[dict[str, Any]]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="lipdub-chaos-") as tmp,
        S3Server() as s3,
    ):
        root = args.keep.resolve() if args.keep else Path(tmp)
        for name in names:
            print(f"chaos: {name} ...", flush=True)
            try:
                outcome = SCENARIOS[name](Scenario(name, root, s3, args.items))
                rows.append(outcome.row())
                if outcome.evidence:
                    evidence[rows[-1]["scenario"]] = outcome.evidence
            except Exception as err:  # a scenario that breaks is a result, not a crash
                rows.append(Outcome(name, args.items, f"SCENARIO ERROR: {err}", lost=-1).row())
            print(f"  {rows[-1]}", flush=True)
            for paid_twice in evidence.get(rows[-1]["scenario"], []):
                print(f"  paid twice: {json.dumps(paid_twice)}", flush=True)
    print()
    print_table(rows)
    ok = all(_held(r) for r in rows)
    total_s = time.monotonic() - started
    print(f"\n{'all guarantees held' if ok else 'A GUARANTEE BROKE'} ({total_s:.0f} s)")
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        now = datetime.now(UTC)
        target = RESULTS / f"{now:%Y-%m-%d}.json"
        target.write_text(
            json.dumps(
                {
                    "date": now.isoformat(timespec="seconds"),
                    "command": "make chaos",
                    "items": args.items,
                    "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
                    "wall_s": round(total_s, 1),
                    "all_guarantees_held": ok,
                    "rows": rows,
                    "paid_twice": evidence,
                },
                indent=2,
            )
            + "\n"
        )
        print(f"results: {target}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
