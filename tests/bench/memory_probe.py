"""Run by bench_memory in a process of its own: upload a file and collect a URL the way a
worker does (pipeline.storage), printing the process's peak RSS after each, as JSON."""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import time
from pathlib import Path

import httpx

from pipeline.remote import make_s3_client
from pipeline.settings import StorageSettings
from pipeline.storage import Storage


def peak_rss_mb() -> float:
    """This process's peak resident set so far: VmHWM, which exec resets (getrusage's
    ru_maxrss would carry the parent's peak from before the fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--s3", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--file", type=Path, required=True)
    parser.add_argument("--url", required=True)
    args = parser.parse_args()
    storage = Storage(
        make_s3_client(endpoint_url=args.s3, region="us-east-1"),
        StorageSettings(bucket=args.bucket, endpoint_url=args.s3),
    )
    storage.exists("warm-up")  # the client's lazy imports and connection, before measuring
    figures = {"baseline_mb": peak_rss_mb()}
    digest = hashlib.sha256()
    with args.file.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    start = time.perf_counter()
    storage.upload_file(args.file, f"media/{args.file.name}", digest.hexdigest())
    figures["upload_s"] = round(time.perf_counter() - start, 2)
    figures["after_upload_mb"] = peak_rss_mb()
    start = time.perf_counter()
    with httpx.Client(timeout=60) as http:
        storage.copy_from_url(args.url, f"outputs/{args.file.name}", http)
    figures["collect_s"] = round(time.perf_counter() - start, 2)
    figures["after_collect_mb"] = peak_rss_mb()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
