"""`make bench`: every benchmark in one run, one table, one results file.

    python -m tests.bench.run_all [--items 200] [--plan-rows 10000] [--memory-mib 64,256,1024]

Writes tests/bench/results/<date>.json. Figures only: the test suite asserts none of them.
Targets (from the issue) are shown beside the figures, with whether this run met them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.bench import (
    bench_cli,
    bench_defaults,
    bench_memory,
    bench_order,
    bench_overhead,
    bench_plan,
    bench_reports,
    bench_scale,
    bench_throughput,
)

RESULTS = Path(__file__).parent / "results"


def _row(
    measure: str, lipdub: object, baseline: object = "", target: str = "", met: object = ""
) -> list[str]:
    mark = {True: "yes", False: "NO"}.get(met, "") if isinstance(met, bool) else str(met)
    return [measure, str(lipdub), str(baseline), target, mark]


def table(results: dict[str, Any]) -> list[list[str]]:
    """The rows of the printed table."""
    rows = [["measure", "lipdub", "baseline", "target", "met"]]
    t = results.get("throughput")
    if t:
        ours, even, sdk = t["lipdub_window"], t["lipdub_even"], t["sdk"]
        rows += [
            _row(
                f"1 makespan s, {ours['items']} items (ideal {ours['ideal_s']})",
                ours["makespan_s"],
                f"SDK {sdk['makespan_s']}",
            ),
            _row(
                "1 achieved / ideal",
                ours["achieved_vs_ideal"],
                f"SDK {sdk['achieved_vs_ideal']}",
                ">= 0.9, ahead of SDK",
                ours["achieved_vs_ideal"] >= 0.9 and ours["makespan_s"] < sdk["makespan_s"],
            ),
            _row("1 achieved / ideal, even pacing", even["achieved_vs_ideal"], "", "(option)"),
            _row(
                "2 most starts in a 60 s window (limit 120)",
                ours["most_starts_in_window"],
                f"SDK {sdk['most_starts_in_window']}",
                "<= 120",
                ours["most_starts_in_window"] <= 120,
            ),
            _row(
                "2 429 answers",
                ours["rate_limited_429"],
                f"SDK {sdk['rate_limited_429']}",
                "0",
                ours["rate_limited_429"] == 0,
            ),
            _row(
                "2 most predictions sent, not final (20 processing + 20 queued ahead)",
                f"{ours['peak_in_flight']} ({ours.get('peak_processing', '?')} processing)",
                f"SDK {sdk['peak_in_flight']}",
                "<= 40",
                ours["peak_in_flight"] <= 40,
            ),
            _row(
                f"3 polls per item mean / p95 (policy min {ours['polls_policy_min_mean']})",
                f"{ours['polls_mean']} / {ours['polls_p95']}",
                f"SDK {sdk['polls_mean']}",
                "within 1 of min",
                ours["polls_over_min_max"] <= 1,
            ),
        ]
        rerun = ours.get("rerun")
        if rerun:
            rows.append(
                _row(
                    "4 re-run: wall s / bytes uploaded / submits",
                    f"{rerun['wall_s']} / {rerun['bytes_uploaded']} / {rerun['submits']}",
                    "",
                    "0 bytes, 0 submits",
                    rerun["bytes_uploaded"] == 0 and rerun["submits"] == 0,
                )
            )
    for case in results.get("defaults", []):
        rows += _defaults_rows(case)
    order = results.get("order")
    if order:
        ours, manifest, sdk = order["lipdub"], order["lipdub_manifest_order"], order["sdk"]
        rows.append(
            _row(
                f"9 longest clip listed last, {order['items']} items: makespan s "
                f"(ideal {order['ideal_s']})",
                f"{ours['makespan_s']} / manifest order {manifest['makespan_s']}",
                f"SDK {sdk['makespan_s']}",
                "<= SDK",
                ours["makespan_s"] <= sdk["makespan_s"],
            )
        )
    o = results.get("overhead")
    if o:
        rows += [
            _row(f"5 items per second, {o['items']} items, no latency", o["items_per_s"]),
            _row(
                "5 CPU s per item: workers+redis / S3+sandbox",
                f"{o['cpu_s_per_item_workers_and_redis']} / {o['cpu_s_per_item_s3_and_sandbox']}",
                f"idle stack {sum(o['cpu_s_idle_stack'].values()):.2f} s in all",
            ),
            *(
                [
                    _row(
                        "5 workers+redis CPU per item, in runs of a fixed Python workload",
                        o["workers_and_redis_per_item_in_calibrations"],
                        "calibration CPU s (start, middle) "
                        + " / ".join(str(c) for c in o["calibration_cpu_s"]),
                    )
                ]
                if "calibration_cpu_s" in o
                else []
            ),
            *(
                [
                    _row(
                        "5 Redis calls per item (broker and ledger)",
                        o["redis_calls_per_item"]["all"],
                        ", ".join(
                            f"{name} {calls}"
                            for name, calls in list(
                                o["redis_calls_per_item"]["by_command"].items()
                            )[:4]
                        ),
                    )
                ]
                if "redis_calls_per_item" in o
                else []
            ),
            *([_floor_row(o)] if "celery_floor" in o else []),
            _row(
                "5 hottest step (share of step CPU)",
                f"{o['profile']['hottest_step']} ({o['profile']['step_seconds'][o['profile']['hottest_step']]['share']:.0%})",
            ),
        ]
        d = o.get("durability")
        if d:
            rows.append(
                _row(
                    "5 durable intent: items/s, submits/s (appendfsync always)",
                    f"{d['aof_always']['items_per_s']}, {d['aof_always']['submits_per_s']}",
                    f"none/everysec {d['none_everysec']['items_per_s']}, "
                    f"{d['none_everysec']['submits_per_s']}",
                )
            )
    m = results.get("memory")
    if m:
        peaks = " / ".join(f"{r['after_collect_mb']:.0f}" for r in m)
        sizes = " / ".join(str(r["size_mib"]) for r in m)
        worst = max(r["after_collect_mb"] for r in m)
        flat = worst - min(r["after_collect_mb"] for r in m) < 0.1 * worst + 20
        rows.append(
            _row(
                f"6 worker peak RSS MB for {sizes} MiB",
                peaks,
                f"idle {m[0]['baseline_mb']:.0f}",
                "flat, < 250",
                flat and worst < 250,
            )
        )
    r = results.get("reports")
    if r:
        small, big = r[0], r[-1]
        growth = big["streaming"]["peak_mb"] - small["streaming"]["peak_mb"]
        rows += [
            _row(
                f"8 finalize peak RSS MB, {small['items']} / {big['items']} items",
                f"{small['streaming']['peak_mb']:.0f} / {big['streaming']['peak_mb']:.0f}",
                f"whole dict {small['in_memory']['peak_mb']:.0f} / "
                f"{big['in_memory']['peak_mb']:.0f}",
                "within 20 MB",
                growth <= 20,
            ),
            _row(
                f"8 reports written s, {small['items']} / {big['items']} items",
                f"{small['streaming']['seconds']} / {big['streaming']['seconds']}",
                f"whole dict {small['in_memory']['seconds']} / {big['in_memory']['seconds']}",
            ),
            _row(
                f"8 status read ms, {small['items']} / {big['items']} items",
                f"{small['status_ms']} / {big['status_ms']}",
                "",
                "< 100, flat",
                big["status_ms"] < 100,
            ),
            _row(
                f"8 HTML report MB at {big['items']} items",
                f"{big['streaming']['html_bytes'] / 1e6:.1f}",
            ),
        ]
    scale = results.get("scale")
    if scale:
        rows += _scale_rows(scale[0], scale[-1])
    cli = results.get("cli")
    if cli:
        rows.append(_cli_row(cli))
    p = results.get("planning")
    if p:
        rows.append(
            _row(
                f"7 plan {p['rows']} rows s: warm / cold",
                f"{p['warm_cache_s']} / {p['cold_cache_s']}",
                f"no cache {p['no_cache_s']}",
                "warm < 10",
                p["warm_cache_s"] < 10,
            )
        )
    return rows


def _defaults_rows(case: dict[str, Any]) -> list[list[str]]:
    """Issue 21's rows for one case of the bench with default settings."""
    ours, hooks, sdk = case["lipdub"], case["lipdub_webhooks"], case["sdk"]
    name = f"9 defaults, {case['account']}-bound, {case['scale']:g}x, {case['items']} items"
    if case.get("runners") == "side by side":
        name += " (side by side)"
    rows = [
        _row(
            f"{name}: achieved / ideal {case['ideal_s']} s (5 s floor {case['floor_ideal_s']})",
            f"{ours['achieved_vs_ideal']} / hooks {hooks['achieved_vs_ideal']}",
            f"SDK {sdk['achieved_vs_ideal']}",
            ">= 0.95 / >= 0.98",
            ours["achieved_vs_ideal"] >= 0.95 and hooks["achieved_vs_ideal"] >= 0.98,
        ),
        _row(
            f"{name}: polls per item, 429s",
            f"{ours['polls_mean']}, {ours['rate_limited_429']}",
            f"SDK {sdk['polls_mean']}, {sdk['rate_limited_429']}",
            "<= 2, 0",
            ours["polls_mean"] <= 2 and ours["rate_limited_429"] == 0,
        ),
    ]
    if case["account"] == "concurrency":
        rows.append(
            _row(
                f"{name}: makespan s",
                f"{ours['makespan_s']} / hooks {hooks['makespan_s']}",
                f"SDK {sdk['makespan_s']}",
                "<= SDK",
                ours["makespan_s"] <= sdk["makespan_s"],
            )
        )
    return rows


def _scale_rows(small: dict[str, Any], big: dict[str, Any]) -> list[list[str]]:
    """Issue 20's rows: the same batch at two sizes."""
    sizes = f"{small['items']} / {big['items']}"
    ratio = big["items_per_s"] / small["items_per_s"]
    b_small, b_big = small["redis_bytes_per_item"], big["redis_bytes_per_item"]
    return [
        _row(
            f"10 items per second, {sizes} items",
            f"{small['items_per_s']} / {big['items_per_s']} (x{ratio:.2f})",
            "",
            ">= 0.95x",
            ratio >= 0.95,
        ),
        _row(
            f"10 Redis bytes per pending item, {sizes}",
            f"{b_small['pending']} / {b_big['pending']}",
            "",
            "<= 1000",
            b_big["pending"] <= 1000,
        ),
        _compacted_row(sizes, small, big),
        *_lasting_rows(sizes, b_small, b_big),
        _row(
            f"10 lipdub status / batches ms (a fresh process), {sizes}",
            f"{small['status_cli_ms']} / {big['status_cli_ms']}, "
            f"{small['batches_cli_ms']} / {big['batches_cli_ms']}",
            f"the read itself {small['status_read_ms']} / {big['status_read_ms']}",
            "< 100",
            max(big["status_cli_ms"], big["batches_cli_ms"]) < 100,
        ),
    ]


def _floor_row(o: dict[str, Any]) -> list[str]:
    """What the workers+Redis CPU per item is made of: Celery's own cost for the tasks an
    item runs (no-op tasks on the same stack) and the steps' own CPU in one process (no
    Celery), beside the target; both are floors the target would have to fit under."""
    floor = o["celery_floor"]
    return _row(
        "5 of which Celery's floor (no-op tasks) / the steps in one process, CPU s per item",
        f"{floor['cpu_s_per_item_workers_and_redis']} / {o['profile']['steps_cpu_s_per_item']}",
        f"{o['celery_tasks_per_item']} tasks per item x "
        f"{floor['cpu_s_per_task_workers_and_redis']} s per no-op task",
        "<= 0.015 in all",
        o["cpu_s_per_item_workers_and_redis"] <= 0.015,
    )


def _cli_row(cli: dict[str, Any]) -> list[str]:
    """The command line as a fresh process, beside the floor of its libraries' imports."""
    return _row(
        f"10 lipdub status / batches / --help ms (a fresh process), {cli['items']} items",
        f"{cli['status_ms']} / {cli['batches_ms']} / {cli['help_ms']}",
        f"Python importing redis, pydantic-settings, typer, rich {cli['libraries_ms']} "
        + (f"(redis alone {cli['redis_ms']}; " if "redis_ms" in cli else "(")
        + f"Python alone {cli['python_ms']})",
        "< 100",
        max(cli["status_ms"], cli["batches_ms"]) < 100,
    )


def _compacted_row(sizes: str, small: dict[str, Any], big: dict[str, Any]) -> list[str]:
    """Bytes per finished item, then compacted: on the day compaction is due by default, and
    what each item past the smaller batch added, which decides (runs from before those were
    measured: compacted at once, per item of the larger batch)."""
    b_small, b_big = small["redis_bytes_per_item"], big["redis_bytes_per_item"]
    added = big.get("redis_bytes_per_item_marginal") or {}
    if "compacted_when_due" not in b_big or "compacted_when_due" not in added:
        return _row(
            f"10 Redis bytes per finished item, then compacted, {sizes}",
            f"{b_small['finished']} / {b_big['finished']}, "
            f"{b_small['compacted']} / {b_big['compacted']}",
            _after_history(b_small, b_big),
            "compacted <= 500",
            b_big["compacted"] <= 500,
        )
    return _row(
        f"10 Redis bytes per finished item, then compacted when due (day 7), {sizes}",
        f"{b_small['finished']} / {b_big['finished']}, "
        f"{b_small['compacted_when_due']} / {b_big['compacted_when_due']}; "
        f"each item past {small['items']}: "
        f"{added['finished']}, {added['compacted_when_due']}",
        (
            f"compacted at once {b_small['compacted']} / {b_big['compacted']}; "
            if "compacted" in b_big
            else ""
        )
        + f"from day 8 (the index lapsed) {b_small['compacted_after_8_days']} / "
        f"{b_big['compacted_after_8_days']}, each item past: "
        f"{added.get('compacted_after_8_days', '-')}",
        "compacted, each item <= 500",
        added["compacted_when_due"] <= 500,
    )


def _after_history(b_small: dict[str, Any], b_big: dict[str, Any]) -> str:
    """Compacted bytes once the prediction index has lapsed (from 8 days after the batch
    finished until the claims lapse; runs from before that was measured have none)."""
    if "compacted_after_8_days" not in b_big:
        return ""
    return (
        f"compacted, from day 8 (the index lapsed) {b_small['compacted_after_8_days']} / "
        f"{b_big['compacted_after_8_days']}"
    )


def _lasting_rows(sizes: str, b_small: dict[str, Any], b_big: dict[str, Any]) -> list[list[str]]:
    """What stays for good, once compacted items have lapsed with their pairs' claims (runs
    from before that was measured have no such figure)."""
    if "lasting" not in b_big:
        return []
    return [
        _row(
            f"10 Redis bytes per finished item kept for good, {sizes}",
            f"{b_small['lasting']} / {b_big['lasting']}",
            f"before compaction {b_small['lasting_before_compaction']} / "
            f"{b_big['lasting_before_compaction']}",
            "<= 500",
            b_big["lasting"] <= 500,
        )
    ]


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
        if n == 0:
            print("  ".join("-" * w for w in widths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=200, help="items for throughput (to 2000)")
    parser.add_argument("--overhead-items", type=int, default=200)
    parser.add_argument("--plan-rows", type=int, default=10_000)
    parser.add_argument("--memory-mib", default="64,256,1024")
    parser.add_argument("--report-items", default="1000,10000")
    parser.add_argument(
        "--scale", type=int, default=3_000, help="the larger batch of the scale run (to 10000)"
    )
    parser.add_argument(
        "--defaults-accounts",
        default=",".join(bench_defaults.ACCOUNTS),
        help="concurrency and/or window",
    )
    parser.add_argument(
        "--defaults-scales",
        default=",".join(f"{x:g}" for x in bench_defaults.SCALES),
        help="processing time as multiples of the default expectation",
    )
    parser.add_argument(
        "--defaults-side-by-side",
        action="store_true",
        help="run the defaults runners at once (a third of the time; they share the cores)",
    )
    parser.add_argument(
        "--only",
        default="throughput,defaults,order,overhead,scale,cli,memory,planning,reports",
        help="comma-separated subset",
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    started = time.perf_counter()
    results: dict[str, Any] = {
        "date": datetime.now(tz=UTC).date().isoformat(),
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "arch": platform.machine(),
        },
        "command": "make bench",
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{results['date']}.json"
    with tempfile.TemporaryDirectory(prefix="lipdub-bench-") as scratch:
        root = Path(scratch)
        sections: dict[str, Callable[[], Any]] = {
            "throughput": lambda: {
                "lipdub_window": bench_throughput.run_lipdub(
                    root / "window", args.items, "window", rerun=True
                ),
                "lipdub_even": bench_throughput.run_lipdub(
                    root / "even", args.items, "even", rerun=False
                ),
                "sdk": bench_throughput.run_sdk(root / "sdk", args.items),
            },
            "defaults": lambda: bench_defaults.run(
                root / "defaults",
                tuple(float(x) for x in args.defaults_scales.split(",")),
                tuple(args.defaults_accounts.split(",")),
                apart=not args.defaults_side_by_side,
            ),
            "order": lambda: bench_order.run(root / "order"),
            "overhead": lambda: bench_overhead.run(root / "overhead", args.overhead_items),
            "scale": lambda: bench_scale.run(root / "scale", args.scale),
            "cli": lambda: bench_cli.run(root / "cli"),
            "memory": lambda: bench_memory.run(
                root / "memory", [int(s) for s in args.memory_mib.split(",")]
            ),
            "planning": lambda: bench_plan.run(root / "planning", args.plan_rows),
            "reports": lambda: bench_reports.run(
                root / "reports", [int(s) for s in args.report_items.split(",")]
            ),
        }
        for name, measure in sections.items():
            if name not in only:
                continue
            results[name] = measure()
            # What is measured so far is kept (and shown) even if a later part fails.
            rows = table(results)
            print_table(rows)
            out.write_text(json.dumps({**results, "table": rows}, indent=2) + "\n", "utf-8")
    results["bench_wall_s"] = round(time.perf_counter() - started, 1)
    rows = table(results)
    print()
    print(
        f"lipdub benchmarks, {results['date']}, {os.cpu_count()} cores, {results['bench_wall_s']} s"
    )
    print_table(rows)
    out.write_text(json.dumps({**results, "table": rows}, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
