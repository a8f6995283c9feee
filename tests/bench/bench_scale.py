"""Scale (issue 20): the same kind of batch at 1,000 items and at a larger size (`--scale N`,
default 3,000 to fit the bench's time; 10,000 for the issue's figure), on the overhead
bench's stack (a provider that answers at once, no limits, 2 `lipdub worker` processes):

- items per second end to end at each size (the ratio is the figure: same machine, same run);
- Redis bytes per item: while pending (the batch started on a stack with no worker, so every
  item waits), once finished, and after compaction (`pipeline.retention`), from Redis's own
  `used_memory` against the empty stack's: compacted on the day compaction is due by
  default, as the sweep does it that day (the keys that lapse sooner gone first, the sweep's
  clock 7 days on: the prediction index of what the provider no longer lists goes with the
  compaction), and once every key that lapses within the provider's history window (8 days:
  the rest of the prediction index) has lapsed; what lasts: the keys
  with no expiry, which is all that is left once the compacted items have lapsed with their
  pairs' claims; and what each item past the 1,000 added (`marginal_bytes`: the per-item
  figures include what a stack holds once it has served any batch, about 0.7 MB here);
- how long `lipdub status` and `lipdub batches` take as commands (a fresh process each, as a
  user runs them) and the status read itself, at each size.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from pipeline import keys
from pipeline.reporting.data import batch_status
from pipeline.retention import compact
from pipeline.settings import Settings
from tests.bench.bench_cli import command_env, median_ms
from tests.bench.bench_overhead import POLLING, PROVIDER, SANDBOX
from tests.bench.stack import bench_stack, connected, plan_of, wait_finished, write_catalog
from workers.session import Session

SMALL = 1_000
COMMAND_RUNS = 5


def _used_memory(session: Session) -> int:
    return int(session.redis.info("memory")["used_memory"])


def _memory_parts(session: Session) -> dict[str, int]:
    """Redis's own split of `used_memory` (its clients' buffers, its scripts, its tables'
    overhead against the data) and how many commands it keeps a latency histogram of: Redis
    and Valkey allocate one (about 25 KB) for each command they serve a first time
    (`latency-tracking`, on by default), a cost of the server that has served any batch,
    not of its items."""
    info = session.redis.info("memory")
    parts = {
        name: int(info.get(name, 0))
        for name in (
            "used_memory",
            "mem_clients_normal",
            "used_memory_scripts",
            "used_memory_overhead",
            "used_memory_dataset",
        )
    }
    histograms = session.redis.execute_command("LATENCY", "HISTOGRAM")  # command -> histogram
    return parts | {
        "connected_clients": int(session.redis.info("clients")["connected_clients"]),
        "latency_histograms": len(histograms) if isinstance(histograms, dict) else -1,
    }


def _family(key: str) -> str:
    """A key with its ids replaced: `lipdub:item:<b>:<i>` -> `lipdub:item:*:*`.

    >>> _family("lipdub:item:b-1:i-7"), _family("lipdub:batch:b-1:done"), _family("lipdub:clock")
    ('lipdub:item:*:*', 'lipdub:batch:*:done', 'lipdub:clock')
    """
    parts = key.split(":")
    head = {"item": 2, "batch": 1, "content": 1, "prediction": 1, "observed": 1, "watched": 1}
    ids = head.get(parts[1], 0) if len(parts) > 1 else 0
    return ":".join(parts[:2] + ["*"] * min(ids, len(parts) - 2) + parts[2 + ids :])


def key_families(session: Session) -> dict[str, dict[str, int]]:
    """Keys and bytes (Redis's `MEMORY USAGE`) per key family, largest first."""
    families: dict[str, dict[str, int]] = {}
    for key in session.redis.scan_iter(count=1000):
        family = families.setdefault(_family(str(key)), {"keys": 0, "bytes": 0})
        family["keys"] += 1
        family["bytes"] += int(session.redis.memory_usage(key, samples=0) or 0)
    return dict(sorted(families.items(), key=lambda kv: -kv[1]["bytes"]))


def lasting_bytes(session: Session) -> int:
    """Bytes (Redis's `MEMORY USAGE`) of lipdub's keys that have no expiry: what stays once
    every claim, index entry and compacted item has lapsed."""
    total = 0
    for key in session.redis.scan_iter(match="lipdub:*", count=1000):
        if session.redis.ttl(key) == -1:
            total += int(session.redis.memory_usage(key, samples=0) or 0)
    return total


def pending_bytes(workdir: Path, manifest: Path) -> float:
    """Redis bytes per item of a batch just started, with no worker to take its items."""
    stack = bench_stack(
        workdir, SANDBOX, provider=PROVIDER, polling=POLLING, workers=0
    )  # the start call itself uploads and feeds
    with stack, connected(stack) as session:
        assert stack.settings is not None
        plan = plan_of(manifest, stack.settings)
        before = _used_memory(session)
        session.control.start(plan, name="pending")
        return (_used_memory(session) - before) / len(plan.items)


def _command_ms(settings: Settings, *args: str) -> float:
    """The median wall time of `lipdub ARGS` as a fresh process (what a user waits for), with
    bytecode caches as a user's install has them (`bench_cli`)."""
    argv = [sys.executable, "-m", "workers.cli", *args]
    return median_ms({"command": argv}, command_env(settings), COMMAND_RUNS)["command"]


def lapse_within(session: Session, within_s: int) -> int:
    """Delete the keys that would lapse within `within_s` (as Redis would by then): what a
    ledger holds that much later, without waiting for it. Returns how many."""
    lapsing = [
        key
        for key in session.redis.scan_iter(count=1000)
        if 0 < int(session.redis.ttl(key)) <= within_s
    ]
    for start in range(0, len(lapsing), 1000):
        session.redis.delete(*lapsing[start : start + 1000])
    return len(lapsing)


def run_size(workdir: Path, items: int) -> dict[str, Any]:
    """One size: pending bytes, then the batch through 2 workers, then what is left."""
    manifest, _ = write_catalog(workdir / "catalog", items)
    pending = pending_bytes(workdir / "pending", manifest)
    stack = bench_stack(workdir / "stack", SANDBOX, provider=PROVIDER, polling=POLLING)
    with stack, connected(stack) as session:
        assert stack.settings is not None
        plan = plan_of(manifest, stack.settings)
        empty = _used_memory(session)
        empty_parts = _memory_parts(session)
        batch_id = session.control.start(plan, name=f"scale-{items}")
        wait_finished(session, batch_id, timeout_s=items * 2 + 300)
        batch = session.ledger.batch(batch_id)
        assert batch is not None and batch.finished_at and batch.created_at
        wall_s = batch.finished_at - batch.created_at
        finished = (_used_memory(session) - empty) / items
        start = time.perf_counter()
        status = batch_status(session.ledger, batch_id)
        status_read_ms = (time.perf_counter() - start) * 1000
        status_cli_ms = _command_ms(stack.settings, "status", batch_id)
        batches_cli_ms = _command_ms(stack.settings, "batches")
        lasting_before = lasting_bytes(session)
        # The day compaction is due by default (`ledger.retention_days` after the batch
        # finished): the keys that lapse sooner (the gates' start log, the watch's marks:
        # minutes) gone, then the batch compacted as the sweep does that day, on its clock
        # (the index entries of predictions the provider no longer lists go with it; those
        # submitted in the batch's last 5 minutes stay until they lapse, on day 8)
        retention_s = stack.settings.ledger.retention_days * 86_400
        lapse_within(session, retention_s)
        compact(session.ledger, batch_id, now=batch.finished_at + retention_s)
        when_due = (_used_memory(session) - empty) / items
        compacted_parts = _memory_parts(session)
        lasting = lasting_bytes(session) / items
        families = {
            family: round(found["bytes"] / items)
            for family, found in key_families(session).items()
            if found["bytes"] >= items  # a byte or more per item
        }
        # The provider's history window later (the prediction index and every other key
        # that lapses within it gone; the compacted items and the claims still there)
        lapse_within(session, keys.CLAIM_TTL_S + 3600)
        after_history = (_used_memory(session) - empty) / items
    return {
        "items": items,
        "completed": status["counts"]["completed"],
        "wall_s": round(wall_s, 2),
        "items_per_s": round(items / wall_s, 2),
        "redis_bytes_per_item": {
            "pending": round(pending),
            "finished": round(finished),
            # compacted when due by default (`ledger.retention_days`, 7, after it finished)
            "compacted_when_due": round(when_due),
            # from the day the provider's history lapses (8 days after the batch finished)
            # until the claims do (30 days after its items were collected)
            "compacted_after_8_days": round(after_history),
            # once the compacted items have lapsed with their pairs' claims (30 days)
            "lasting": round(lasting),
            "lasting_before_compaction": round(lasting_before / items),
        },
        "compacted_bytes_per_item_by_key": families,
        # INFO memory on the empty stack and after compaction: Redis's own split of what grew
        # (clients' buffers, scripts, overhead, data) and its latency histograms
        "redis_memory_parts": {"empty": empty_parts, "compacted": compacted_parts},
        "status_read_ms": round(status_read_ms, 2),
        "status_cli_ms": status_cli_ms,
        "batches_cli_ms": batches_cli_ms,
    }


MARGINAL = ("pending", "finished", "compacted", "compacted_when_due", "compacted_after_8_days")
"""(`compacted`, at once: runs before the bench compacted on the due day.)"""


def marginal_bytes(small: dict[str, Any], large: dict[str, Any]) -> dict[str, int]:
    """Redis bytes each item past the smaller batch added (two sizes' totals, same run): what
    grows with the items, without what any stack holds once it has served a batch (Redis's
    latency histograms, the scripts, the workers' records), which the per-item figures of a
    1,000-item batch carry most of.

    >>> marginal_bytes({"items": 1000, "redis_bytes_per_item": {"pending": 1200}},
    ...                {"items": 3000, "redis_bytes_per_item": {"pending": 1000}})
    {'pending': 900}
    """
    added = large["items"] - small["items"]
    if added <= 0:
        return {}
    b_small, b_large = small["redis_bytes_per_item"], large["redis_bytes_per_item"]
    return {
        name: round((b_large[name] * large["items"] - b_small[name] * small["items"]) / added)
        for name in MARGINAL
        if name in b_small and name in b_large
    }


def run(workdir: Path, large: int, small: int = SMALL) -> list[dict[str, Any]]:
    """`small` items (1,000), then `large`; the larger one also says what each item past the
    smaller batch added (`marginal_bytes`)."""
    rows = [run_size(workdir / f"n{n}", n) for n in (small, large)]
    rows[-1]["redis_bytes_per_item_marginal"] = marginal_bytes(rows[0], rows[-1])
    return rows
