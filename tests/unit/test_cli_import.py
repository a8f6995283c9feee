"""Loading the command line pauses the garbage collector and gives it back as it found it.

`workers.cli` loads its modules with the collector off and then freezes what they made (a
quarter of a command's wall time otherwise: `make bench BENCH_ARGS="--only cli"`). A worker
is started through the command line, so a collector left off would be a worker that never
collects a cycle; and one switched on where the caller had it off would be a surprise. A
program using the Python API is not the command line: what it made before importing lipdub is
never frozen. Each case runs in a fresh interpreter: the import happens once per process.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import gc
{before}
import {module}
print(gc.isenabled(), gc.get_freeze_count() > 0)
"""


def _after_import(before: str, module: str = "workers.cli") -> tuple[bool, bool]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(before=before, module=module)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    enabled, frozen = done.stdout.split()
    return enabled == "True", frozen == "True"


@pytest.mark.parametrize(
    ("before", "enabled_after"),
    [("", True), ("gc.disable()", False)],
    ids=["collector-on", "collector-off"],
)
def test_the_collector_is_left_as_the_caller_had_it(before: str, enabled_after: bool) -> None:
    enabled, frozen = _after_import(before)
    assert enabled is enabled_after
    assert frozen, "the modules' objects were not moved out of the collector's way"


def test_a_program_using_the_python_api_keeps_its_collector_untouched() -> None:
    assert _after_import("", module="workers.api") == (True, False)
