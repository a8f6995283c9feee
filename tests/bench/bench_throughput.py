"""Throughput against the ideal, the limits held, polls per item and a re-run, for lipdub and
for the baseline a user would otherwise write (the official SDK's `run()` in a thread pool).

Every run gets a fresh stack with the same account limits on the sandbox: 120 starts per
60 s window, 20 at a time, 2 s + 0.5 s per second of video to process. lipdub is told the same
limits (with its default margin: none for window pacing, whose starts are timed from their
answers; 1 s for even pacing), and expects the same processing time plus 0.1 s.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from pipeline.sandbox.config import SandboxConfig
from pipeline.sandbox.server import SandboxServer
from pipeline.settings import PollingSettings
from tests.bench.figures import ideal_either_order_s, min_polls, most_in_window, percentile
from tests.bench.sdk_baseline import run_pool
from tests.bench.stack import bench_stack, connected, plan_of, wait_finished, write_catalog
from workers.session import Session

STARTS_PER_WINDOW = 120
WINDOW_S = 60.0
MAX_CONCURRENT = 20
FIXED_S = 2.0
PER_VIDEO_S = 0.5
SANDBOX = {
    "starts_per_minute": STARTS_PER_WINDOW,
    "rate_window_s": WINDOW_S,
    "max_concurrent": MAX_CONCURRENT,
    "processing_fixed_s": FIXED_S,
    "processing_per_video_s": PER_VIDEO_S,
}
POLLING = {
    "first_poll_min_s": 0.5,
    "max_interval_s": 5.0,
    "expected_fixed_s": FIXED_S + 0.1,
    "expected_per_video_s": PER_VIDEO_S,
}


def ideal_s(durations: list[float]) -> float:
    """The makespan the sandbox's limits allow for these videos."""
    return ideal_either_order_s(
        [FIXED_S + PER_VIDEO_S * v for v in durations],
        durations,
        starts_per_window=STARTS_PER_WINDOW,
        window_s=WINDOW_S,
        max_concurrent=MAX_CONCURRENT,
    )


def _sandbox_stats(url: str) -> dict[str, Any]:
    return dict(httpx.get(f"{url}/_sandbox/stats", timeout=10).json())


def _audit(url: str) -> list[dict[str, Any]]:
    return list(httpx.get(f"{url}/_sandbox/audit", timeout=30).json())


def _media_bytes(session: Session) -> int:
    paginator = session.s3.get_paginator("list_objects_v2")
    total = 0
    for page in paginator.paginate(Bucket=session.settings.storage.bucket, Prefix="media/"):
        total += sum(obj["Size"] for obj in page.get("Contents", []))
    return total


def run_lipdub(workdir: Path, items: int, pacing: str, *, rerun: bool) -> dict[str, Any]:
    """One batch through lipdub (and, with `rerun`, the same manifest again)."""
    manifest, durations = write_catalog(workdir / "catalog", items)
    provider = {
        "starts_per_minute": STARTS_PER_WINDOW,
        "rate_window_s": WINDOW_S,
        "max_concurrent": MAX_CONCURRENT,
        "polls_per_second": 50.0,
        "start_pacing": pacing,
    }
    stack = bench_stack(workdir / "stack", SANDBOX, provider=provider, polling=POLLING)
    with stack, connected(stack) as session:
        assert stack.settings is not None
        plan = plan_of(manifest, stack.settings)
        # The makespan counts from the start call: it puts the local inputs in the bucket
        # (from "the CLI's machine") before the items are sent.
        called_at = time.time()
        batch_id = session.control.start(plan, name=f"bench-{pacing}")
        wait_finished(session, batch_id, timeout_s=items * 3 + 300)
        report = session.control.report(batch_id)
        stats = _sandbox_stats(stack.sandbox.url)
        submits = [e for e in _audit(stack.sandbox.url) if e.get("outcome") == "accepted"]
        tasks = httpx.get(f"{stack.sandbox.url}/_sandbox/tasks", timeout=30).json()
        ended_at = {t["prediction_id"]: t["finished_at"] for t in tasks if t["finished_at"]}
        result = _figures(
            report, stats, submits, durations, stack.settings.polling, called_at, ended_at
        )
        if rerun:
            result["rerun"] = _rerun(session, plan, stack.sandbox.url, len(submits))
    return result


def _figures(
    report: dict[str, Any],
    stats: dict[str, Any],
    submits: list[dict[str, Any]],
    durations: list[float],
    polling: PollingSettings,
    called_at: float,
    ended_at: dict[str, float],
) -> dict[str, Any]:
    """The figures of one run; `ended_at`: when the sandbox finished each prediction."""
    items = report["items_detail"]
    makespan = float(report["finished_at"]) - called_at
    ideal = ideal_s(durations)
    polls = [i["polls"] for i in items]
    minimum = [
        min_polls(polling, i["video_s"], FIXED_S + PER_VIDEO_S * i["video_s"]) for i in items
    ]
    created = float(report["created_at"])
    submitted = [i["phases"]["provider"]["start"] for i in items if "provider" in i["phases"]]
    done = [i["phases"]["collect"]["start"] for i in items if "collect" in i["phases"]]
    # How late each completion was seen: from the sandbox's end of it (a prediction sent
    # into its queue started late) to our collect.
    seen_late = [
        i["phases"]["collect"]["start"] - ended_at[i["prediction_id"]]
        for i in items
        if "collect" in i["phases"] and i["prediction_id"] in ended_at
    ]
    collect = [i["phases"]["collect"]["seconds"] for i in items if "collect" in i["phases"]]
    return {
        "items": len(items),
        "completed": report["counts"]["completed"],
        "makespan_s": round(makespan, 2),
        "inputs_upload_s": round(created - called_at, 2),
        "first_submit_s": round(min(submitted) - called_at, 2),
        "last_provider_done_s": round(max(done) - called_at, 2),
        "seen_late_mean_s": round(sum(seen_late) / len(seen_late), 3),
        "collect_mean_s": round(sum(collect) / len(collect), 3),
        "tail_s": round(float(report["finished_at"]) - max(done), 2),
        "ideal_s": round(ideal, 2),
        "achieved_vs_ideal": round(ideal / makespan, 3),
        "rate_limited_429": stats.get("rate_limited", 0),
        "most_starts_in_window": most_in_window([e["ts"] for e in submits], WINDOW_S),
        "peak_in_flight": stats.get("peak_in_flight", 0),
        "peak_processing": stats.get("peak_processing", 0),
        "submits": len(submits),
        "polls_mean": round(sum(polls) / len(polls), 2),
        "polls_p95": percentile(polls, 0.95),
        "polls_policy_min_mean": round(sum(minimum) / len(minimum), 2),
        "polls_over_min_max": max(p - m for p, m in zip(polls, minimum, strict=True)),
    }


def _rerun(session: Session, plan: Any, sandbox_url: str, submits_before: int) -> dict[str, Any]:
    media_before = _media_bytes(session)
    start = time.perf_counter()
    batch_id = session.control.start(plan, name="bench-rerun")
    status = wait_finished(session, batch_id, timeout_s=600)
    wall = time.perf_counter() - start
    submits = [e for e in _audit(sandbox_url) if e.get("outcome") == "accepted"]
    return {
        "wall_s": round(wall, 2),
        "completed": status["counts"]["completed"],
        "bytes_uploaded": _media_bytes(session) - media_before,
        "submits": len(submits) - submits_before,
    }


def run_sdk(workdir: Path, items: int) -> dict[str, Any]:
    """The baseline: wavespeed's own client, `run()` per item in a pool of MAX_CONCURRENT."""
    manifest, durations = write_catalog(workdir / "catalog", items)
    config = SandboxConfig(workdir=workdir / "sandbox", **SANDBOX)  # type: ignore[arg-type]
    with SandboxServer(config) as sandbox:
        done, makespan = run_pool(sandbox.url, manifest, workdir / "outputs", MAX_CONCURRENT)
        stats = dict(sandbox.engine.stats)
        submits = [e for e in sandbox.engine.audit_entries() if e.get("outcome") == "accepted"]
    ideal = ideal_s(durations)
    return {
        "items": items,
        "completed": done,
        "makespan_s": round(makespan, 2),
        "ideal_s": round(ideal, 2),
        "achieved_vs_ideal": round(ideal / makespan, 3),
        "rate_limited_429": stats.get("rate_limited", 0),
        "most_starts_in_window": most_in_window([e["ts"] for e in submits], WINDOW_S),
        "peak_in_flight": stats.get("peak_in_flight", 0),
        "peak_processing": stats.get("peak_processing", 0),
        "submits": len(submits),
        "polls_mean": round(stats.get("polls", 0) / items, 2),
    }
