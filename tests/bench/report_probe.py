"""Run by bench_reports in a process of its own: write one batch's four reports from the
ledger, streaming as the finalizer does (or, with --in-memory, the way it did before: the
whole report as one dict), printing the time and the process's peak RSS as JSON."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import redis

from pipeline.ledger import Ledger
from pipeline.reporting import write_local
from pipeline.reporting.data import batch_report, metadata_keys, report_head, report_items
from pipeline.reporting.writer import write_reports
from tests.bench.memory_probe import peak_rss_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--batch", required=True)
    parser.add_argument("--in-memory", action="store_true")
    args = parser.parse_args()
    ledger = Ledger(redis.Redis.from_url(args.redis, decode_responses=True))
    idle_mb = peak_rss_mb()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        if args.in_memory:
            write_local(batch_report(ledger, args.batch), Path(folder))
        else:
            head = report_head(ledger, args.batch)
            write_reports(
                head,
                report_items(ledger, args.batch, head["bucket"]),
                Path(folder),
                item_count=int(head["items"]),
                metadata_keys=metadata_keys(ledger, args.batch),
                end_s=head["finished_at"],
            )
        sizes = {p.name: p.stat().st_size for p in Path(folder).iterdir()}
    figures = {
        "seconds": round(time.perf_counter() - started, 2),
        "idle_mb": idle_mb,
        "peak_mb": peak_rss_mb(),
        "html_bytes": sizes.get("report.html", 0),
        "json_bytes": sizes.get("report.json", 0),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
