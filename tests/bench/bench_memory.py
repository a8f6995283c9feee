"""Memory: a worker's peak RSS while it uploads an input and collects an output, by file size.

Each size runs in a fresh process (tests/bench/memory_probe.py) against moto's S3 server; the
output is served by a local HTTP server. Flat means the peak does not grow with the file.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pipeline.local_servers import S3Server
from pipeline.remote import make_s3_client

ROOT = Path(__file__).resolve().parents[2]
MIB = 1 << 20


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def write_file(path: Path, size_mib: int) -> Path:
    """A file of `size_mib` MiB of random-looking bytes (one random MiB, repeated)."""
    block = os.urandom(MIB)
    with path.open("wb") as out:
        for n in range(size_mib):
            out.write(n.to_bytes(8, "big") + block[8:])
    return path


def run(workdir: Path, sizes_mib: list[int]) -> list[dict[str, Any]]:
    """Peak RSS figures for each size."""
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    handler = functools.partial(_QuietHandler, directory=str(workdir))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # moto takes any credentials; never real ones.
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
    os.environ.pop("AWS_PROFILE", None)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        for size in sizes_mib:
            path = write_file(workdir / f"file-{size}.bin", size)
            # A fresh S3 server per size: moto keeps every object in memory.
            with S3Server() as s3:
                client = make_s3_client(endpoint_url=s3.url, region="us-east-1")
                client.create_bucket(Bucket="bench")
                probe = subprocess.run(
                    [
                        sys.executable, "-m", "tests.bench.memory_probe", "--s3", s3.url,
                        "--bucket", "bench", "--file", str(path),
                        "--url", f"http://127.0.0.1:{server.server_port}/{path.name}",
                    ],
                    env=env, capture_output=True, text=True, check=True, timeout=1800,
                )  # fmt: skip
            figures = json.loads(probe.stdout.strip().splitlines()[-1])
            path.unlink()
            results.append({"size_mib": size, **figures})
    finally:
        server.shutdown()
        server.server_close()
    return results
