"""The command line's own wait (issue 20): `lipdub status`, `lipdub batches` and `lipdub --help`
as a user runs them (a fresh process each), beside the floor that any command written on
lipdub's libraries pays before it does anything: Python starting and importing redis-py,
pydantic-settings, Typer and rich's table, measured the same way in the same run. What lipdub
adds is the difference. And the floor of any Python command that reads Redis with redis-py
(the client the project builds on): Python starting and importing `redis` alone.

The commands run in turns (one of each per round), so that a noisy spell of the machine
weighs on all of them alike; each figure is the median of its rounds. Python writes its
bytecode caches as a user's install does (the first round is a warm-up, not counted), even
where the environment says not to (`PYTHONDONTWRITEBYTECODE`: then every run would compile
lipdub's modules again, which no user's process does).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.settings import Settings, to_environment
from tests.bench.bench_overhead import POLLING, PROVIDER, SANDBOX
from tests.bench.stack import bench_stack, connected, plan_of, write_catalog

ROUNDS = 7
LIBRARIES = "import redis, pydantic_settings, typer, rich.table"


def command_env(settings: Settings) -> dict[str, str]:
    """The environment a user's shell gives `lipdub` for this stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIPDUB_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(to_environment(settings))
    return env


def median_ms(commands: dict[str, list[str]], env: dict[str, str], rounds: int) -> dict[str, float]:
    """Each command's median wall time in ms over `rounds` turns (after one warm-up turn)."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for turn in range(rounds + 1):
        for name, argv in commands.items():
            start = time.perf_counter()
            subprocess.run(argv, env=env, check=True, capture_output=True)
            if turn:
                times[name].append(time.perf_counter() - start)
    return {name: round(statistics.median(t) * 1000, 1) for name, t in times.items()}


def run(workdir: Path, items: int = 1_000, rounds: int = ROUNDS) -> dict[str, Any]:
    """A batch of `items` waiting on a stack with no worker, and the commands against it."""
    manifest, _ = write_catalog(workdir / "catalog", items)
    stack = bench_stack(workdir / "stack", SANDBOX, provider=PROVIDER, polling=POLLING, workers=0)
    with stack, connected(stack) as session:
        assert stack.settings is not None
        batch_id = session.control.start(plan_of(manifest, stack.settings), name="cli")
        cli = [sys.executable, "-m", "workers.cli"]
        figures = median_ms(
            {
                "python_ms": [sys.executable, "-c", "pass"],
                "redis_ms": [sys.executable, "-c", "import redis"],
                "libraries_ms": [sys.executable, "-c", LIBRARIES],
                "status_ms": [*cli, "status", batch_id],
                "batches_ms": [*cli, "batches"],
                "help_ms": [*cli, "--help"],
            },
            command_env(stack.settings),
            rounds,
        )
    return {"items": items, "rounds": rounds, "libraries": LIBRARIES, **figures}
