"""Benchmark: planning a catalog cold (hash + probe every file) vs. warm (the probe cache).

Prints one table and writes tests/bench/results/<date>-plan.json. Run: `make bench`
(or `python -m tests.bench.bench_plan --items 400`). The suite asserts none of this.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from pipeline.media import MediaInspector, ProbeCache
from pipeline.planning import plan_manifest
from pipeline.pricing import PriceModel
from pipeline.samples import write_audio, write_video
from pipeline.settings import MediaSettings


def build_catalog(root: Path, items: int, video_s: float) -> Path:
    """`items` distinct video/audio pairs (distinct bytes, so nothing is shared by accident)."""
    rows = ["id,video,audio,sync_mode"]
    for i in range(items):
        video = write_video(root / f"v{i:04d}.mp4", video_s + i * 0.04, width=320, height=192)
        audio = write_audio(root / f"a{i:04d}.wav", video_s + 0.5 + i * 0.01, frequency_hz=200 + i)
        rows.append(f"item{i},{video.name},{audio.name},loop")
    manifest = root / "catalog.csv"
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return manifest


def timed_plan(manifest: Path, cache: ProbeCache | None) -> tuple[float, MediaInspector]:
    inspector = MediaInspector(cache)
    start = time.perf_counter()
    plan_manifest(manifest, media=MediaSettings(), price=PriceModel(), inspector=inspector)
    return time.perf_counter() - start, inspector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=120)
    parser.add_argument("--video-s", type=float, default=4.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        manifest = build_catalog(root, args.items, args.video_s)
        catalog_mb = sum(p.stat().st_size for p in root.iterdir()) / 1e6
        no_cache_s, _ = timed_plan(manifest, None)
        cache = ProbeCache(root / "cache.sqlite3")
        cold_s, cold = timed_plan(manifest, cache)
        warm_s, warm = timed_plan(manifest, cache)
    rows = [
        ("no cache (baseline)", no_cache_s, "-", "-"),
        ("cold cache", cold_s, cold.stats.hashed, cold.stats.probed),
        ("warm cache", warm_s, warm.stats.hashed, warm.stats.probed),
    ]
    print(
        f"plan {args.items} items ({catalog_mb:.1f} MB of media) on {platform.machine()}, {platform.python_version()}"
    )
    print(f"{'run':<22}{'seconds':>10}{'vs baseline':>13}{'hashed':>8}{'probed':>8}")
    for name, seconds, hashed, probed in rows:
        print(f"{name:<22}{seconds:>10.3f}{seconds / no_cache_s:>12.2f}x{hashed!s:>8}{probed!s:>8}")
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    (results / f"{stamp}-plan.json").write_text(
        json.dumps(
            {
                "benchmark": "plan",
                "date": stamp,
                "items": args.items,
                "catalog_mb": round(catalog_mb, 1),
                "seconds": {name: round(s, 4) for name, s, _, _ in rows},
                "warm_vs_baseline": round(warm_s / no_cache_s, 3),
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
