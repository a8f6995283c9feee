"""Orchestration overhead: lipdub's own cost per item when the provider costs nothing.

A sandbox that answers at once, with no limits, and 2 `lipdub worker` processes: items per
second end to end, and CPU-seconds per item over every process (workers and their pool
children, redis-server, this process's S3 server and sandbox), less the same stack's CPU
when idle (the baseline, measured in the same run); Redis calls per item the same way (the
broker's and the ledger's: what each item asks of the one shared server). Then what the
figure is made of: Celery's own cost for the tasks an item runs (no-op tasks on the same
stack: `tests.bench.celery_floor`) and the steps' own CPU, a smaller batch run step by step in
this process with no Celery, first as it is, then under cProfile to show where the time goes.
"""

from __future__ import annotations

import cProfile
import heapq
import io
import json
import pstats
import resource
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from pipeline.batches import BatchControl
from pipeline.flow import ITEM_STEPS, STEPS, run_step
from pipeline.media import MediaInspector
from pipeline.planning import plan_manifest
from pipeline.runtime import Runtime
from pipeline.steps import Next
from tests.bench.celery_floor import run_chains, stack_cpu_s, tasks_run
from tests.bench.stack import bench_stack, connected, plan_of, wait_finished, write_catalog
from tests.integration.stepping import push_due

SANDBOX = {
    "starts_per_minute": 1_000_000,
    "max_concurrent": 64,
    "processing_fixed_s": 0.0,
    "processing_per_video_s": 0.0,
}
PROVIDER = {
    "starts_per_minute": 1_000_000,
    "max_concurrent": 64,
    "polls_per_second": 10_000.0,
    "start_margin_s": 0.0,
}
POLLING = {
    "first_poll_min_s": 0.05,
    "max_interval_s": 0.5,
    "expected_fixed_s": 0.0,
    "expected_per_video_s": 0.0,
}


def _cpu_s() -> tuple[float, float]:
    """CPU seconds of this process (S3 server, sandbox) and of its children that have ended
    (workers with their pool processes, redis-server)."""
    mine = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return mine.ru_utime + mine.ru_stime, children.ru_utime + children.ru_stime


def _stack_cpu_s(
    workdir: Path,
    items: int,
    profile_items: int,
    *,
    appendfsync: str = "always",
    durability: str = "auto",
) -> dict[str, Any]:
    manifest = write_catalog(workdir / "catalog", items)[0] if items else None
    before = _cpu_s()
    stack = bench_stack(
        workdir / "stack", SANDBOX, provider=PROVIDER, polling=POLLING,
        appendfsync=appendfsync, ledger={"durability": durability},
    )  # fmt: skip
    figures: dict[str, Any] = {}
    with stack, connected(stack) as session:
        assert stack.settings is not None
        if manifest is not None:
            plan = plan_of(manifest, stack.settings)
            in_work, began = stack_cpu_s(), time.perf_counter()
            batch_id = session.control.start(plan, name="overhead")
            wait_finished(session, batch_id, timeout_s=items * 2 + 120)
            in_work, in_work_s = stack_cpu_s() - in_work, time.perf_counter() - began
            report = session.control.report(batch_id)
            wall = float(report["finished_at"]) - float(report["created_at"])
            figures = {
                "wall_s": round(wall, 2),
                "items_per_s": round(items / wall, 2),
                "submits_per_s": _submits_per_s(workdir / "stack" / "sandbox-audit.jsonl"),
                # workers and Redis from the start call to the report (`celery_floor`)
                "stack_cpu_s_in_work": round(in_work, 3),
                "stack_in_work_s": round(in_work_s, 2),
            }
        # asked of the idle stack too, so that the asking is taken off with the rest
        figures["tasks_run"] = tasks_run(session.app)
        figures["redis_calls"] = redis_calls(session.redis)
    after = _cpu_s()
    cpu = {"self": after[0] - before[0], "children": after[1] - before[1]}
    if profile_items:
        # outside the timed part: the stack above is stopped; this one runs no workers
        figures["profile"] = profile(workdir / "profile", profile_items)
    return {"cpu_s": {k: round(v, 2) for k, v in cpu.items()}, **figures}


CALIBRATION_ROUNDS = 20_000


def calibration_cpu_s(repeats: int = 5) -> float:
    """CPU seconds of a fixed piece of pure-Python work (encoding, decoding and hashing small
    records: the kind of work a worker's Python does), the median of `repeats`: this
    machine's speed at the moment, to divide CPU figures by. A machine half as fast takes
    twice the CPU for the same work; the quotient stays (as far as the workload is like the
    workers', which is why it is no more than a guide)."""
    record = {"id": "item-0042", "state": "running", "cost_usd": "0.536", "polls": 3}
    spent = []
    for _ in range(repeats):
        start = time.process_time()
        total = 0
        for n in range(CALIBRATION_ROUNDS):
            record["polls"] = n
            text = json.dumps(record, sort_keys=True)
            total += len(json.loads(text)["id"]) + hash(text) % 7
        spent.append(time.process_time() - start)
    assert total > 0
    return statistics.median(spent)


def redis_calls(client: redis.Redis) -> dict[str, int]:
    """Calls of each command the server has run since it started (`INFO commandstats`):
    every client's, the broker's (Celery's messages) as well as the ledger's."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def calls_per_item(busy: dict[str, int], idle: dict[str, int], items: int) -> dict[str, Any]:
    """Redis calls per item of the batch (the idle stack's, start to stop, taken off as its
    CPU is): in all and for the commands that make up most of them.

    >>> calls_per_item({"evalsha": 30, "hset": 5, "ping": 3}, {"ping": 2, "hset": 1}, 2)
    {'all': 17.5, 'by_command': {'evalsha': 15.0, 'hset': 2.0, 'ping': 0.5}}
    """
    extra = {name: calls - idle.get(name, 0) for name, calls in busy.items()}
    top = sorted(((n, c) for n, c in extra.items() if c > 0), key=lambda nc: -nc[1])[:TOP_COMMANDS]
    return {
        "all": round(sum(extra.values()) / items, 1),
        "by_command": {name: round(calls / items, 1) for name, calls in top},
    }


TOP_COMMANDS = 12


def _submits_per_s(audit_log: Path) -> float:
    """Submits that created a task, per second, from the first to the last (sandbox's log)."""
    stamps = sorted(
        float(entry["ts"])
        for line in audit_log.read_text().splitlines()
        if str((entry := json.loads(line)).get("outcome", "")).startswith("accepted")
    )
    return round((len(stamps) - 1) / (stamps[-1] - stamps[0]), 1) if len(stamps) > 1 else 0.0


def run(workdir: Path, items: int, profile_items: int = 50) -> dict[str, Any]:
    """Idle stack first (the baseline), then the same stack with a batch; then the batch
    again on a Redis that fsyncs once a second with durability none (what durable intent
    costs, in the same run); then Celery's floor on the same stack (as many no-op chains as
    the batch has items)."""
    calibration = [calibration_cpu_s()]
    idle = _stack_cpu_s(workdir / "idle", 0, 0)
    busy = _stack_cpu_s(workdir / "busy", items, profile_items)
    calibration.append(calibration_cpu_s())
    loose = _stack_cpu_s(workdir / "loose", items, 0, appendfsync="everysec", durability="none")
    floor = run_chains(
        bench_stack(workdir / "floor" / "stack", SANDBOX, provider=PROVIDER, polling=POLLING),
        items,
        _cpu_s,
        redis_calls,
    )
    workers = (busy["cpu_s"]["children"] - idle["cpu_s"]["children"]) / items
    stand_ins = (busy["cpu_s"]["self"] - idle["cpu_s"]["self"]) / items
    unit = sum(calibration) / len(calibration)
    tasks_per_item = sum(busy["tasks_run"].values()) / items
    # Both from the live processes while they work, less the background at the floor
    # stack's quiet rate (`celery_floor`: start-up noise left out).
    background = floor["background_cpu_s_per_s"]
    in_work = (busy["stack_cpu_s_in_work"] - background * busy["stack_in_work_s"]) / items
    per_task = (floor["stack_cpu_s_in_work"] - background * floor["wall_s"]) / floor["tasks"]
    return {
        "items": items,
        "items_per_s": busy["items_per_s"],
        "wall_s": busy["wall_s"],
        "cpu_s_idle_stack": idle["cpu_s"],
        "cpu_s_with_batch": busy["cpu_s"],
        "cpu_s_per_item": round(workers + stand_ins, 4),
        "cpu_s_per_item_workers_and_redis": round(workers, 4),
        "cpu_s_per_item_s3_and_sandbox": round(stand_ins, 4),
        # The machine's speed of the moment, taken out: how many runs of the calibration's
        # fixed work an item's orchestration costs (comparable between runs and days).
        "calibration_cpu_s": [round(c, 4) for c in calibration],
        "workers_and_redis_per_item_in_calibrations": round(workers / unit, 3),
        "redis_calls_per_item": calls_per_item(busy["redis_calls"], idle["redis_calls"], items),
        "celery_tasks_per_item": round(tasks_per_item, 2),
        "celery_tasks_by_name": busy["tasks_run"],
        # Celery's own cost per task on this stack (`celery_floor`): what an item of one
        # Celery task per step costs before lipdub does anything.
        "celery_floor": {
            "tasks": floor["tasks"],
            "tasks_run": floor["tasks_run"],
            "wall_s": floor["wall_s"],
            "cpu_s": floor["cpu_s"],
            "background_cpu_s_per_s": background,
            "cpu_s_per_task_workers_and_redis": round(per_task, 5),
            "redis_calls_per_task": calls_per_item(
                floor["redis_calls"], idle["redis_calls"], floor["tasks"]
            ),
            "cpu_s_per_item_workers_and_redis": round(per_task * tasks_per_item, 4),
            "per_item_in_calibrations": round(per_task * tasks_per_item / unit, 3),
            # the batch measured the same way (while it ran, less the background), to set
            # the floor beside
            "batch_cpu_s_per_item_workers_and_redis": round(in_work, 4),
        },
        "profile": busy["profile"],
        "durability": {
            "aof_always": {
                "items_per_s": busy["items_per_s"],
                "submits_per_s": busy["submits_per_s"],
            },
            "none_everysec": {
                "items_per_s": loose["items_per_s"],
                "submits_per_s": loose["submits_per_s"],
            },
        },
    }


@dataclass
class _LocalDispatcher:
    """Runs steps in this process in due order (the profile needs them in one thread)."""

    queue: list[tuple[float, int, Next]] = field(default_factory=list)
    sent: int = 0

    def send(self, step: Next) -> None:
        # As the due set keeps steps: else every submit would start a watch of its own.
        if push_due(self.queue, step, time.monotonic() + step.countdown_s, self.sent):
            self.sent += 1


def run_in_process(workdir: Path, items: int, profiler: cProfile.Profile | None) -> dict[str, Any]:
    """Run `items` through every step in this process, in due order; the CPU time of this
    thread inside the steps (under `profiler` when given: then inflated by it): per item in
    the items' steps, in all in the batch's own (finalize, watch). Waiting on the network
    (and the S3 server and the sandbox, which run on other threads here) is not lipdub's
    cost."""
    manifest, _ = write_catalog(workdir / "catalog", items, video_s=1.5)
    stack = bench_stack(workdir / "stack", SANDBOX, provider=PROVIDER, polling=POLLING, workers=0)
    with stack:
        assert stack.settings is not None
        runtime = Runtime.from_settings(stack.settings)
        runtime.storage.ensure_bucket()
        dispatcher = _LocalDispatcher()
        control = BatchControl(runtime.ledger, dispatcher, stack.settings, storage=runtime.storage)
        plan = plan_manifest(
            manifest, media=stack.settings.media, price=stack.settings.price,
            inspector=MediaInspector(),
        )  # fmt: skip
        control.start(plan, name="profile")
        in_steps_s: dict[str, float] = {}
        start = time.perf_counter()
        while dispatcher.queue:
            due, _, step = heapq.heappop(dispatcher.queue)
            time.sleep(max(0.0, due - time.monotonic()))  # the benchmark waits, not a worker
            began = time.thread_time()
            if profiler is not None:
                profiler.enable()
            following = run_step(runtime, step.step, step.batch_id, step.item_id)
            if profiler is not None:
                profiler.disable()
            spent = time.thread_time() - began
            in_steps_s[step.step] = in_steps_s.get(step.step, 0.0) + spent
            runtime.ledger.expect(following, runtime.clock())  # as a worker does
            for nxt in following:
                dispatcher.send(nxt)
        wall = time.perf_counter() - start
        runtime.close()
    of_items = sum(s for name, s in in_steps_s.items() if name in ITEM_STEPS)
    return {
        "wall_s": round(wall, 2),
        "steps_cpu_s_per_item": round(of_items / items, 4),
        # finalize, watch: once per batch
        "batch_steps_cpu_s": round(sum(in_steps_s.values()) - of_items, 3),
    }


def profile(workdir: Path, items: int) -> dict[str, Any]:
    """Run `items` through every step in this process: first as they are (the steps' own
    CPU per item, no profiler), then under cProfile (CPU time of this thread): CPU per step
    and the functions of lipdub that take the most time of their own."""
    plain = run_in_process(workdir / "plain", items, None)
    profiler = cProfile.Profile(time.thread_time)
    profiled = run_in_process(workdir / "profiled", items, profiler)
    stats = pstats.Stats(profiler, stream=io.StringIO())
    table: dict[tuple[str, int, str], Any] = stats.stats  # type: ignore[attr-defined]
    steps = {}
    own = []
    for (filename, _line, name), (_cc, calls, tottime, cumtime, _callers) in table.items():
        if "/pipeline/flow/" in filename and name in STEPS and filename.endswith(f"/{name}.py"):
            steps[name] = {"calls": calls, "seconds": round(cumtime, 3)}
        own.append((tottime, f"{Path(filename).parent.name}/{Path(filename).name}:{name}"))
    total = sum(s["seconds"] for s in steps.values()) or 1.0
    hottest = max(steps.items(), key=lambda kv: kv[1]["seconds"])[0] if steps else ""
    return {
        "items": items,
        "wall_s": profiled["wall_s"],
        # Every step of an item in one process with no Celery: lipdub's Python and its
        # clients' (Redis, S3, HTTP), not Redis's, the S3 server's or the sandbox's.
        "steps_cpu_s_per_item": plain["steps_cpu_s_per_item"],
        "batch_steps_cpu_s": plain["batch_steps_cpu_s"],
        "steps_cpu_s_per_item_profiled": profiled["steps_cpu_s_per_item"],
        "step_seconds": {
            k: {**v, "share": round(v["seconds"] / total, 3)} for k, v in steps.items()
        },
        "hottest_step": hottest,
        "own_time_top": [
            {"function": where, "seconds": round(t, 3)}
            for t, where in sorted(own, reverse=True)[:8]
        ],
        "by_library": _by_library(table),
    }


def _by_library(table: dict[tuple[str, int, str], Any]) -> dict[str, float]:
    """Own CPU time grouped by where the code lives: lipdub, the clients, PyAV, the rest."""
    groups = {"lipdub": 0.0, "redis": 0.0, "boto": 0.0, "httpx": 0.0, "pyav": 0.0, "other": 0.0}
    for (filename, _line, _name), (_cc, _calls, tottime, _cum, _callers) in table.items():
        if "/pipeline/" in filename or "/workers/" in filename:
            key = "lipdub"
        elif "/redis/" in filename:
            key = "redis"
        elif "/botocore/" in filename or "/boto3/" in filename or "/s3transfer/" in filename:
            key = "boto"
        elif "/httpx/" in filename or "/httpcore/" in filename:
            key = "httpx"
        elif "/av/" in filename or filename.startswith("av."):
            key = "pyav"
        else:
            key = "other"
        groups[key] += tottime
    return {k: round(v, 3) for k, v in groups.items()}
