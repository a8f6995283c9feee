"""What a person sees in a real terminal: tmux runs the live display at 80 columns and its
screen is read back. Skipped where tmux is missing, except in CI (`.ci/run` installs it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.integration.stack import ROOT

SCRIPT = """
from tests.unit.test_follow import status
from workers.cli.common import err
from workers.cli.follow import follow

steps = [status(0, pending=4)] * 3 + [status(0, running=2, pending=2)] * 3
steps += [status(2, running=2, completed=2)] * 3 + [status(4, "finished", completed=3, failed=1)]
follow(lambda: steps.pop(0), err, interval_s=0.3, clock=lambda: 140.0)
print("DONE")
"""


@pytest.fixture
def tmux():
    if shutil.which("tmux") is None:
        if os.environ.get("CI"):
            pytest.fail("tmux is missing: .ci/run installs it")
        pytest.skip("no tmux on this machine (apt install tmux); CI installs it")
    session = f"lipdub-{os.getpid()}"
    yield session
    subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, check=False)


def test_the_live_display_fits_80_columns_and_updates_in_place(tmux, tmp_path):
    script = tmp_path / "follow.py"
    script.write_text(SCRIPT)
    command = f"cd {ROOT} && PYTHONPATH={ROOT} {sys.executable} {script}; sleep 30"
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", tmux, "-x", "80", "-y", "24", command], check=True
    )
    deadline = time.monotonic() + 30
    screen = ""
    while "DONE" not in screen and time.monotonic() < deadline:
        time.sleep(0.2)
        screen = subprocess.run(
            ["tmux", "capture-pane", "-t", tmux, "-p"], capture_output=True, text=True, check=True
        ).stdout
    lines = [line for line in screen.splitlines() if line.strip()]
    # The panel was redrawn in place: one title, one bar, the last state only
    assert lines[-1] == "DONE", screen
    assert [line for line in lines if line.startswith("Batch ")] == ["Batch b1  catalog  finished"]
    assert len(lines) == 4, screen
    # Nothing cut off at 80 columns, the bar on its own line with its figures
    assert "…" not in screen
    assert lines[1].endswith("4/4 $1.00 of ~$1.00 ETA 0:00") and lines[1].startswith("━")
    assert lines[2].startswith("completed 3  failed 1")
