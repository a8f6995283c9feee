"""The baseline a user would otherwise write: the official `wavespeed` SDK's `run()` per row
in a thread pool, against a sandbox.

The SDK's defaults (1 s polls). It never re-posts a submit itself, so the user's code retries
a 429 after a second. Like lipdub, it keeps each output (the provider's URL expires): it
downloads it.
"""

from __future__ import annotations

import contextlib
import io
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from workers.demo import DEMO_API_KEY


def run_pool(sandbox_url: str, manifest: Path, outputs: Path, threads: int) -> tuple[int, float]:
    """Every row of `manifest` through the SDK in `threads` threads: (completed, seconds)."""
    from wavespeed.api.client import Client

    rows = [line.split(",") for line in manifest.read_text().splitlines()[1:]]
    client = Client(api_key=DEMO_API_KEY, base_url=sandbox_url)
    folder = manifest.parent
    outputs.mkdir(parents=True, exist_ok=True)

    def one(row: list[str]) -> bool:
        video = client.upload(str(folder / row[1]))
        audio = client.upload(str(folder / row[2]))
        while True:
            try:
                output = client.run(
                    "sync/lipsync-3", {"video": video, "audio": audio, "sync_mode": row[3]}
                )
            except RuntimeError as error:
                if "HTTP 429" not in str(error):
                    raise
                time.sleep(1.0)
                continue
            url = output["outputs"][0]
            (outputs / f"{row[0]}.mp4").write_bytes(httpx.get(url, timeout=60).content)
            return True

    start = time.perf_counter()
    # The SDK prints each retry; keep the benchmark's table readable.
    with contextlib.redirect_stdout(io.StringIO()), ThreadPoolExecutor(threads) as pool:
        done = sum(pool.map(one, rows))
    return done, time.perf_counter() - start
