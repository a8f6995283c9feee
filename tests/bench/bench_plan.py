"""Planning: a large manifest with no cache (the baseline), a cold probe cache and a warm one.

Every row has its own video and audio file (distinct bytes: a trailing chunk the format
ignores), so nothing is shared by accident. Standalone: `python -m tests.bench.bench_plan
--rows 10000`; `make bench` runs it as part of tests/bench/run_all.py.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.media import MediaInspector, ProbeCache
from pipeline.planning import plan_manifest
from pipeline.pricing import PriceModel
from pipeline.samples import write_audio, write_video
from pipeline.settings import MediaSettings
from tests.bench.stack import distinct_copies


def build_catalog(root: Path, rows: int) -> Path:
    """`rows` rows, each with its own small video and audio file."""
    video = write_video(root / "base.mp4", 0.4, width=64, height=48).read_bytes()
    audio = write_audio(root / "base.wav", 0.6).read_bytes()
    lines = ["id,video,audio,sync_mode"]
    for n in range(rows):
        (root / f"v{n:05d}.mp4").write_bytes(distinct_copies(video, "mp4", n))
        (root / f"a{n:05d}.wav").write_bytes(distinct_copies(audio, "wav", n))
        lines.append(f"row{n:05d},v{n:05d}.mp4,a{n:05d}.wav,loop")
    manifest = root / "catalog.csv"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return manifest


def timed_plan(manifest: Path, cache: ProbeCache | None) -> tuple[float, MediaInspector]:
    """Seconds to plan, and the inspector (its stats: files hashed and probed)."""
    inspector = MediaInspector(cache)
    start = time.perf_counter()
    plan_manifest(manifest, media=MediaSettings(), price=PriceModel(), inspector=inspector)
    return time.perf_counter() - start, inspector


def run(workdir: Path, rows: int) -> dict[str, Any]:
    """The three timings and what each run had to hash and probe."""
    workdir.mkdir(parents=True, exist_ok=True)
    manifest = build_catalog(workdir, rows)
    catalog_mb = sum(p.stat().st_size for p in workdir.iterdir()) / 1e6
    no_cache_s, plain = timed_plan(manifest, None)
    cache = ProbeCache(workdir / "cache.sqlite3")
    cold_s, cold = timed_plan(manifest, cache)
    warm_s, warm = timed_plan(manifest, cache)
    return {
        "rows": rows,
        "catalog_mb": round(catalog_mb, 1),
        "no_cache_s": round(no_cache_s, 2),
        "cold_cache_s": round(cold_s, 2),
        "warm_cache_s": round(warm_s, 2),
        "warm_vs_no_cache": round(warm_s / no_cache_s, 3),
        "hashed": {
            "no cache": plain.stats.hashed,
            "cold": cold.stats.hashed,
            "warm": warm.stats.hashed,
        },
        "probed": {
            "no cache": plain.stats.probed,
            "cold": cold.stats.probed,
            "warm": warm.stats.probed,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        print(json.dumps(run(Path(folder), args.rows), indent=2))


if __name__ == "__main__":
    main()
