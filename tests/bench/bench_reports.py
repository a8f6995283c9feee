"""Reports at scale: a finished batch of 1,000 and of 10,000 items in a real Redis, its four
reports written by a fresh process streaming as the finalizer does, and (the baseline, in the
same run) the way it was done before: the whole report built as one dict. Also the status
read's time at each size and the Redis bytes each finished item holds.

Flat means the streaming writer's peak does not grow with the batch.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from pipeline import keys
from pipeline.ledger import Ledger
from pipeline.local_servers import RedisServer
from pipeline.reporting.data import batch_status

ROOT = Path(__file__).resolve().parents[2]
MODES = ("cut_off", "loop", "bounce", "silence", "remap")


def populate(ledger: Ledger, batch_id: str, count: int, created_s: float = 1_000.0) -> None:
    """A finished batch of `count` items shaped like a real one (inputs, metadata, the
    moments of every phase, a prediction, a cost; one in 50 failed)."""
    items: list[dict[str, object]] = []
    for n in range(count):
        media = {"kind": "local", "sha256": f"{n:064x}", "duration_s": 4.0 + n % 7}
        items.append(
            {
                "id": f"episode-{n:05d}",
                "row": n + 1,
                "identity": f"{n:064x}",
                "sync_mode": MODES[n % 5],
                "output": f"episode-{n:05d}.mp4",
                "metadata": {"language": ("de", "fr", "es")[n % 3], "title": f"Episode {n}"},
                "video": {**media, "location": f"/catalog/video/episode-{n:05d}.mp4",
                          "stored": f"s3://bucket/media/sha256/{n:064x}.mp4"},
                "audio": {**media, "location": f"/catalog/audio/de/episode-{n:05d}.wav",
                          "stored": f"s3://bucket/media/sha256/{n:064x}.wav"},
                "price_usd": "0.536",
                "expected_output_s": 4.0,
                "created_at": created_s,
            }
        )  # fmt: skip
    ledger.create_batch(
        batch_id,
        {"name": "scale", "manifest": "catalog.csv", "created_at": created_s, "model": "m",
         "bucket": "bucket", "estimate_usd": str(0.536 * count)},
        items, budget_usd=None,
    )  # fmt: skip
    client = ledger.redis
    failed = 0
    with client.pipeline(transaction=False) as pipe:
        for n, item in enumerate(items):
            t = created_s + n * 0.05
            ok = n % 50 != 7
            failed += not ok
            fields = {
                "state": "completed" if ok else "failed",
                "prepare_started_at": t, "uploaded_at": t + 0.1, "intent_at": t + 0.2,
                "submitted_at": t + 0.5, "last_unfinished_at": t + 20, "provider_done_at": t + 25,
                "finished_at": t + 27, "inference_ms": 18_000, "polls": 2, "attempts": 1,
                "submits": 1, "prediction_id": f"p{n}", "prediction_ids": json.dumps([f"p{n}"]),
                "output_key": f"outputs/b/{item['id']}.mp4" if ok else "",
                "output_s": 4.0, "billable_s_final": 4.0, "cost_usd": "0.536" if ok else "",
                "error": "" if ok else "No face detected in the video.",
                "error_kind": "" if ok else "input",
                "hint": "" if ok else "Use a clip with a visible face.",
            }  # fmt: skip
            pipe.hset(keys.item(batch_id, str(item["id"])), mapping=fields)
            if n % 1000 == 999:
                pipe.execute()
        pipe.execute()
    ledger.update_batch(
        batch_id,
        {"n:pending": 0, "n:completed": count - failed, "n:failed": failed,
         "finished_at": created_s + count * 0.05 + 30, "state": "finished"},
    )  # fmt: skip


def _probe(redis_url: str, batch_id: str, *, in_memory: bool) -> dict[str, Any]:
    command = [sys.executable, "-m", "tests.bench.report_probe", "--redis", redis_url,
               "--batch", batch_id, *(["--in-memory"] if in_memory else [])]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _item_bytes(client: redis.Redis, batch_id: str, sample: int = 200) -> float:
    ids = client.lrange(keys.batch_items(batch_id), 0, sample - 1)
    sizes = [int(client.memory_usage(keys.item(batch_id, i)) or 0) for i in ids]
    return round(sum(sizes) / len(sizes), 1)


def run(workdir: Path, sizes: list[int]) -> list[dict[str, Any]]:
    """Figures for each batch size."""
    results = []
    with RedisServer(workdir / "redis") as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        ledger = Ledger(client)
        for size in sizes:
            batch_id = f"scale-{size}"
            populate(ledger, batch_id, size)
            started = time.perf_counter()
            for _ in range(20):
                batch_status(ledger, batch_id)
            status_ms = (time.perf_counter() - started) / 20 * 1000
            results.append(
                {
                    "items": size,
                    "streaming": _probe(server.url, batch_id, in_memory=False),
                    "in_memory": _probe(server.url, batch_id, in_memory=True),
                    "status_ms": round(status_ms, 2),
                    "redis_bytes_per_finished_item": _item_bytes(client, batch_id),
                }
            )
        client.close()
    return results


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        print(json.dumps(run(Path(scratch), [1_000, 10_000]), indent=2))
