"""Send order (`pipeline.send_order`): a catalog whose longest clip is listed last.

A catalog sorted by name often ends with its feature-length episode. Sent in the manifest's
order, that clip starts once the short ones ahead of it have had their turn, and the batch then
waits for it alone while the account's other slots idle. lipdub sends the longest videos first.

One concurrency-bound account (`CONCURRENT` at a time), `SHORT_ITEMS` clips of `SHORT_S` then
one of `LONG_S`, a provider that takes `FIXED_S` + `PER_VIDEO_S` per video second. Three
runners side by side, each on its own stack and sandbox, their clocks starting at their own
start calls: lipdub as shipped (longest first), lipdub with `batch.send_order = "manifest"`, and
the official SDK's `run()` in a pool of one thread per slot (the manifest's order). Each
makespan is compared with the ideal one (the better of the two orders).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from pipeline.samples import write_audio, write_video
from tests.bench.bench_defaults import lipdub_ready, side_by_side
from tests.bench.figures import ideal_either_order_s

CONCURRENT = 4
SHORT_ITEMS = 11
SHORT_S = 2.0
LONG_S = 40.0
FIXED_S = 5.0
PER_VIDEO_S = 1.0
ACCOUNT = {"starts_per_minute": 120, "max_concurrent": CONCURRENT, "items": SHORT_ITEMS + 1}
SANDBOX: dict[str, Any] = {
    "starts_per_minute": ACCOUNT["starts_per_minute"],
    "rate_window_s": 60.0,
    "max_concurrent": CONCURRENT,
    "processing_fixed_s": FIXED_S,
    "processing_per_video_s": PER_VIDEO_S,
}


def write_long_last_catalog(folder: Path) -> tuple[Path, list[float]]:
    """`SHORT_ITEMS` short clips, then the long one; distinct pairs. Returns the CSV and each
    row's video seconds."""
    folder.mkdir(parents=True, exist_ok=True)
    durations = [SHORT_S] * SHORT_ITEMS + [LONG_S]
    rows = ["id,video,audio,sync_mode"]
    for n, seconds in enumerate(durations):
        write_video(folder / f"v{n}.mp4", seconds, width=96, height=64)
        write_audio(folder / f"a{n}.wav", seconds, frequency_hz=200 + n)
        rows.append(f"clip{n:02d},v{n}.mp4,a{n}.wav,cut_off")
    manifest = folder / "catalog.csv"
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return manifest, durations


def run(workdir: Path) -> dict[str, Any]:
    """The three runners on the long-last catalog; their makespans against the ideal."""
    manifest, durations = write_long_last_catalog(workdir / "catalog")
    times = [FIXED_S + PER_VIDEO_S * seconds for seconds in durations]
    ideal = ideal_either_order_s(
        times, durations, starts_per_window=120, window_s=60.0, max_concurrent=CONCURRENT
    )
    with contextlib.ExitStack() as stacks:
        ready = {
            "lipdub": lipdub_ready(stacks, workdir / "longest", SANDBOX, ACCOUNT, hooks=False),
            "lipdub_manifest_order": lipdub_ready(
                stacks,
                workdir / "manifest",
                SANDBOX,
                ACCOUNT,
                hooks=False,
                batch={"send_order": "manifest"},
            ),
        }
        figures = side_by_side(stacks, workdir, manifest, SANDBOX, ACCOUNT, ready)
    results = {
        name: {
            **{k: v for k, v in found.items() if k != "timeline"},
            "achieved_vs_ideal": round(ideal / found["makespan_s"], 3),
        }
        for name, found in figures.items()
    }
    return {
        "items": len(durations),
        "video_s": durations,
        "processing_s": times,
        "ideal_s": round(ideal, 2),
        **results,
    }
