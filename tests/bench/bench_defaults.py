"""Throughput with the settings a user actually has (issue 21).

lipdub runs with its defaults: polling as shipped (the account's watch every second, each
item's own looks as the safety net, never closer than 5 s; nothing tuned: the expectation is
20 s + 1 s per second of video until it has learned the provider's times), and the account's
limits as a user would set them for their account. The sandbox processes each item
in 0.1x, 1x or 3x that default expectation, each item up to `SPREAD` more or less than the
others (fixed by its audio, so every runner meets the same times). Two accounts:

- **concurrency-bound**: 120 starts a minute but `CONCURRENT` at a time: the slots decide, so
  every second between a prediction's end and our look at it is lost;
- **window-bound**: `WINDOW_STARTS` starts a minute and plenty of slots: the window decides.

Three runners per case, each on its own fresh stack and sandbox, one after another, each
alone on the machine as a user's batch is (`--defaults-side-by-side`: all three at once,
their clocks starting at their own start calls, in a third of the time; three stacks then
share two cores, which slows each batch's start): lipdub as shipped (its looks and the account's
watch), lipdub with `lipdub webhooks` receiving the sandbox's deliveries, and the baseline a
user would otherwise write: the official SDK's `run()` in a pool of one thread per slot (1 s
polls, a 429 retried after 1 s). (A fourth, lipdub with the watch off, made the machine's two
cores the bottleneck of every lipdub runner: measure it alone with `polling.watch_every_s=0`.)
Every makespan is compared with the ideal one for the same items under the same limits, in
the better of the two orders a client can choose beforehand: the manifest's and the longest
video first (`tests.bench.figures.ideal_either_order_s`).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from pipeline.local_servers import free_port
from pipeline.makespan import ideal_makespan_s
from pipeline.media import MediaInspector, probe
from pipeline.planning import plan_manifest
from pipeline.sandbox.config import SandboxConfig
from pipeline.sandbox.server import SandboxServer
from pipeline.settings import PollingSettings
from tests.bench.figures import ideal_by_order_s, ideal_either_order_s, most_in_window
from tests.bench.sdk_baseline import run_pool
from tests.bench.stack import bench_stack, wait_finished, wait_for_workers, write_catalog
from workers.session import Session

SCALES = (0.1, 1.0, 3.0)
"""The sandbox's processing time as a share of lipdub's default expectation."""
SPREAD = 0.1
"""Items take up to 10 % more or less than the formula says."""
WINDOW_S = 60.0
CONCURRENT = 4
CONCURRENT_ITEMS = 12
WINDOW_STARTS = 6
WINDOW_ITEMS = 18
ACCOUNTS: dict[str, dict[str, int]] = {
    "concurrency": {
        "starts_per_minute": 120,
        "max_concurrent": CONCURRENT,
        "items": CONCURRENT_ITEMS,
    },
    "window": {"starts_per_minute": WINDOW_STARTS, "max_concurrent": 40, "items": WINDOW_ITEMS},
}
LONG_BATCH_ITEMS = {("concurrency", 0.1): 100}
"""Cases also run with more items, so that the batch lasts about a minute in the ideal too:
twelve items at 0.1x (2 s each, four at once) last 6.5 s, where the start-up (the start call
to the first submits, the provider's first answers) weighs as much as the pacing does. Both
are run and reported."""
LIPDUB_RUNNERS = (("lipdub", "polls", False), ("lipdub_webhooks", "hooks", True))
"""lipdub's runners: (name, work folder, with `lipdub webhooks`)."""
START_TOGETHER_S = 600.0
"""How long a runner waits for the others to be ready (a stack that fails to start ends it)."""


@dataclass(frozen=True)
class Ready:
    """A lipdub stack ready to run: its session (workers answering) and its sandbox."""

    session: Session
    sandbox_url: str


def sandbox_config(account: dict[str, int], scale: float) -> dict[str, Any]:
    """The sandbox of one case: the account's limits, `scale` x lipdub's expectation."""
    expected = PollingSettings()
    return {
        "starts_per_minute": account["starts_per_minute"],
        "rate_window_s": WINDOW_S,
        "max_concurrent": account["max_concurrent"],
        "processing_fixed_s": expected.expected_fixed_s * scale,
        "processing_per_video_s": expected.expected_per_video_s * scale,
        "processing_spread": SPREAD,
    }


def processing_times_s(manifest: Path, sandbox: dict[str, Any]) -> list[float]:
    """Each row's processing time in the sandbox, in manifest order (what the ideal uses)."""
    config = SandboxConfig(**sandbox)
    folder = manifest.parent
    times = []
    for line in manifest.read_text(encoding="utf-8").splitlines()[1:]:
        _, video, audio, _ = line.split(",")
        audio_sha = hashlib.sha256((folder / audio).read_bytes()).hexdigest()
        times.append(config.processing_s(probe(folder / video).duration_s, audio_sha))
    return times


def run_case(
    workdir: Path,
    account_name: str,
    scale: float,
    items: int | None = None,
    *,
    apart: bool = True,
) -> dict[str, Any]:
    """The three runners on one case (`items`: the account's by default), with `apart` one
    after another, each stack started for its run and stopped after it, else side by side;
    their figures and the ideal."""
    account = {**ACCOUNTS[account_name]}
    account["items"] = items or account["items"]
    sandbox = sandbox_config(account, scale)
    manifest, video_s = write_catalog(workdir / "catalog", account["items"])
    times = processing_times_s(manifest, sandbox)
    # Each order's ideal (lipdub sends longest first); the better one is the ideal
    by_order = ideal_by_order_s(times, video_s, **_limits(account))
    ideal = min(by_order.values())
    floor_s = PollingSettings().first_poll_min_s
    # The best a poller that looks no sooner than 5 s after a submit can do.
    floor_ideal = ideal_either_order_s(
        [max(t, floor_s) for t in times], video_s, **_limits(account)
    )
    if apart:
        figures = one_by_one(workdir, manifest, sandbox, account)
    else:
        with contextlib.ExitStack() as stacks:
            ready = {
                name: lipdub_ready(stacks, workdir / folder, sandbox, account, hooks=hooks)
                for name, folder, hooks in LIPDUB_RUNNERS
            }
            figures = side_by_side(stacks, workdir, manifest, sandbox, account, ready)
    results = {name: _with_ratios(f, ideal, floor_ideal) for name, f in figures.items()}
    for figures_ in results.values():
        # The ideal in the order the provider started this runner's items (rows, from 1)
        rows = figures_.pop("provider_start_rows", None)
        if rows:
            figures_["ideal_in_provider_order_s"] = round(
                ideal_makespan_s([times[row - 1] for row in rows], **_limits(account)), 2
            )
    return {
        "account": account_name,
        "scale": scale,
        "items": account["items"],
        "runners": "apart" if apart else "side by side",
        "processing_s_mean": round(sum(times) / len(times), 2),
        "ideal_s": round(ideal, 2),
        "ideal_by_order_s": {name: round(v, 2) for name, v in by_order.items()},
        "floor_ideal_s": round(floor_ideal, 2),
        **results,
    }


def side_by_side(
    stacks: contextlib.ExitStack,
    workdir: Path,
    manifest: Path,
    sandbox: dict[str, Any],
    account: dict[str, int],
    ready: dict[str, Ready],
) -> dict[str, dict[str, Any]]:
    """Each ready lipdub and the SDK pool (on a sandbox of its own) run `manifest` at once,
    each clock starting at its own start call; the figures by runner name (`sdk` last)."""
    sdk_sandbox = stacks.enter_context(
        SandboxServer(SandboxConfig(workdir=workdir / "sdk-sandbox", **sandbox))
    )
    names = [*ready, "sdk"]
    go = threading.Barrier(len(names), timeout=START_TOGETHER_S)

    def run(name: str) -> dict[str, Any]:
        if name == "sdk":
            return _run_sdk(workdir / "sdk", manifest, sdk_sandbox, account, go)
        return _run_lipdub(ready[name], manifest, go)

    with ThreadPoolExecutor(len(names)) as pool:
        return dict(zip(names, pool.map(run, names), strict=True))


def one_by_one(
    workdir: Path, manifest: Path, sandbox: dict[str, Any], account: dict[str, int]
) -> dict[str, dict[str, Any]]:
    """Each runner alone on the machine: its stack (or the SDK's sandbox) started, the
    manifest run, the stack stopped, then the next; the figures by runner name (`sdk` last).
    Side by side, three stacks share the machine's cores at every batch's start; apart,
    each meets what a user's machine running one batch would."""
    figures: dict[str, dict[str, Any]] = {}
    alone = threading.Barrier(1)
    for name, folder, hooks in LIPDUB_RUNNERS:
        with contextlib.ExitStack() as stacks:
            ready = lipdub_ready(stacks, workdir / folder, sandbox, account, hooks=hooks)
            figures[name] = _run_lipdub(ready, manifest, alone)
    with SandboxServer(SandboxConfig(workdir=workdir / "sdk-sandbox", **sandbox)) as sdk_sandbox:
        figures["sdk"] = _run_sdk(workdir / "sdk", manifest, sdk_sandbox, account, alone)
    return figures


def _limits(account: dict[str, int]) -> dict[str, Any]:
    """The account's limits as the ideal's arithmetic takes them."""
    return {
        "starts_per_window": account["starts_per_minute"],
        "window_s": WINDOW_S,
        "max_concurrent": account["max_concurrent"],
    }


def _with_ratios(figures: dict[str, Any], ideal: float, floor_ideal: float) -> dict[str, Any]:
    makespan = figures["makespan_s"]
    return {
        **figures,
        "achieved_vs_ideal": round(ideal / makespan, 3),
        "achieved_vs_floor_ideal": round(floor_ideal / makespan, 3),
    }


def lipdub_ready(
    stacks: contextlib.ExitStack,
    workdir: Path,
    sandbox: dict[str, Any],
    account: dict[str, int],
    *,
    hooks: bool,
    batch: dict[str, Any] | None = None,
) -> Ready:
    provider = {
        "starts_per_minute": account["starts_per_minute"],
        "rate_window_s": WINDOW_S,
        "max_concurrent": account["max_concurrent"],
    }
    stack = bench_stack(
        workdir,
        sandbox,
        provider=provider,
        polling={},
        tuned=False,
        webhooks_port=free_port() if hooks else None,
        batch=batch,
    )
    stacks.enter_context(stack)
    assert stack.settings is not None
    session = Session.connect(stack.settings)
    stacks.callback(session.close)
    session.storage.ensure_bucket()
    wait_for_workers(session, stack.worker_count)
    return Ready(session, stack.sandbox.url)


def _run_lipdub(ready: Ready, manifest: Path, go: threading.Barrier) -> dict[str, Any]:
    session = ready.session
    settings = session.settings
    plan = plan_manifest(
        manifest, media=settings.media, price=settings.price, inspector=MediaInspector()
    )
    go.wait()
    called_at = time.time()
    batch_id = session.control.start(plan, name="bench-defaults")
    wait_finished(session, batch_id, timeout_s=1800)
    report = session.control.report(batch_id)
    url = ready.sandbox_url
    stats = httpx.get(f"{url}/_sandbox/stats", timeout=10).json()
    audit = httpx.get(f"{url}/_sandbox/audit", timeout=30).json()
    items = report["items_detail"]
    polls = [int(i["polls"]) for i in items]
    # From the end of the provider's work (the sandbox's own record: a prediction sent into
    # its queue started late) to our look at it.
    tasks = httpx.get(f"{url}/_sandbox/tasks", timeout=30).json()
    ended_at = {t["prediction_id"]: t["finished_at"] for t in tasks if t["finished_at"]}
    seen = [
        (i, i["phases"]["collect"]["start"])
        for i in items
        if "collect" in i["phases"] and i["prediction_id"] in ended_at
    ]
    late = [seen_at - ended_at[i["prediction_id"]] for i, seen_at in seen]
    # When the provider started and ended its work on the batch (a prediction it queued
    # starts when a slot frees), and in which order it started the items
    started = sorted(
        (t["started_at"], t["prediction_id"]) for t in tasks if t.get("started_at") is not None
    )
    row_of = {i["prediction_id"]: int(i["row"]) for i in items}
    return {
        "provider_first_start_s": round(started[0][0] - called_at, 2) if started else None,
        "provider_last_end_s": round(max(ended_at.values(), default=called_at) - called_at, 2),
        "provider_start_rows": [row_of[p] for _, p in started if p in row_of],
        "seen_late_mean_s": round(sum(late) / max(1, len(late)), 2),
        "seen_late_max_s": round(max(late, default=0.0), 2),
        # Per item: submitted (from the start call), the provider's seconds, its end, seen,
        # polls.
        "timeline": [
            [
                round(i["phases"]["provider"]["start"] - called_at, 1),
                round((i["inference_ms"] or 0) / 1000, 1),
                round(ended_at[i["prediction_id"]] - called_at, 1),
                round(seen_at - called_at, 1),
                i["polls"],
            ]
            for i, seen_at in seen
        ],
        "completed": report["counts"]["completed"],
        "makespan_s": round(float(report["finished_at"]) - called_at, 2),
        "polls_mean": round(sum(polls) / len(polls), 2),
        "polls_max": max(polls),
        "rate_limited_429": stats.get("rate_limited", 0),
        # Each 429: when (from the start call), and when the starts it counted were counted
        "rate_limited_at_s": [
            {
                "at": round(e["ts"] - called_at, 3),
                "counted": [round(t - called_at, 3) for t in e.get("window_counted_ts", [])],
            }
            for e in audit
            if e.get("outcome") == "rate_limited"
        ],
        # The account's watch (one list call per interval) and the finalizer's audit.
        "list_calls": stats.get("lists", 0),
        "peak_in_flight": stats.get("peak_in_flight", 0),
        "peak_processing": stats.get("peak_processing", 0),
        "submits": sum(1 for e in audit if e.get("outcome") == "accepted"),
        "most_starts_in_window": most_in_window(
            [e.get("start_counted_ts", e["ts"]) for e in audit if e.get("outcome") == "accepted"],
            WINDOW_S,
        ),
    }


def _run_sdk(
    workdir: Path,
    manifest: Path,
    sandbox: SandboxServer,
    account: dict[str, int],
    go: threading.Barrier,
) -> dict[str, Any]:
    go.wait()
    done, makespan = run_pool(
        sandbox.url, manifest, workdir / "outputs", threads=account["max_concurrent"]
    )
    stats = dict(sandbox.engine.stats)
    submits = [e for e in sandbox.engine.audit_entries() if e.get("outcome") == "accepted"]
    return {
        "completed": done,
        "makespan_s": round(makespan, 2),
        "polls_mean": round(stats.get("polls", 0) / account["items"], 2),
        "rate_limited_429": stats.get("rate_limited", 0),
        "peak_in_flight": stats.get("peak_in_flight", 0),
        "peak_processing": stats.get("peak_processing", 0),
        "submits": len(submits),
        "most_starts_in_window": most_in_window([e["ts"] for e in submits], WINDOW_S),
    }


def run(
    workdir: Path,
    scales: tuple[float, ...] = SCALES,
    accounts: tuple[str, ...] = tuple(ACCOUNTS),
    *,
    apart: bool = True,
) -> list[dict[str, Any]]:
    """Every case: each account at each processing-time scale (and the longer batches of
    `LONG_BATCH_ITEMS`); with `apart`, each runner alone (`run_case`)."""
    cases = []
    for account in accounts:
        for scale in scales:
            cases.append(run_case(workdir / f"{account}-{scale:g}", account, scale, apart=apart))
            more = LONG_BATCH_ITEMS.get((account, scale))
            if more:
                cases.append(
                    run_case(
                        workdir / f"{account}-{scale:g}-{more}", account, scale, more, apart=apart
                    )
                )
    return cases
