"""`lipdub demo`, the command `make demo` runs, through its real entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.integration.stack import ROOT

pytestmark = pytest.mark.slow


def processes_with(marker: str) -> list[int]:
    """Pids of live processes whose environment holds `marker` (children inherit it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            status = (entry / "status").read_text()
        except OSError:
            continue
        if marker.encode() in environ and "State:\tZ" not in status:
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to find leftover processes")
def test_demo_runs_a_batch_end_to_end_and_leaves_no_process(tmp_path):
    # Given a marker that every process the demo starts inherits
    marker = f"LIPDUBDEMOTEST={uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIPDUB_")}
    env.pop("WAVESPEED_API_KEY", None)
    env.update(dict([marker.split("=")]), PYTHONPATH=str(ROOT), COLUMNS="160")
    # When the demo runs
    result = subprocess.run(
        [sys.executable, "-m", "workers.cli", "demo", "--workdir", str(tmp_path / "demo")],
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
    )
    # Then it succeeded, printed the summary and the reports it wrote
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    assert "6/6 final" in result.stderr
    assert "completed │     5" in result.stdout and "failed    │     1" in result.stdout
    assert "b-roll (row 6): No face detected" in result.stdout
    reports = list((tmp_path / "demo" / "reports").iterdir())
    assert len(reports) == 1
    files = sorted(p.name for p in reports[0].iterdir())
    assert files == ["report.csv", "report.html", "report.json", "report.md"]
    data = json.loads((reports[0] / "report.json").read_text())
    assert {i["sync_mode"] for i in data["items_detail"]} == {
        "bounce", "loop", "cut_off", "silence", "remap",
    }  # fmt: skip
    assert data["counts"]["completed"] == 5 and data["counts"]["failed"] == 1
    # presigned URLs (signatures) never reach the terminal
    assert "Signature=" not in result.stdout + result.stderr
    # And nothing it started is still running
    assert processes_with(marker) == []
