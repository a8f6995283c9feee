"""A dead worker costs under a minute, with the settings a user has.

With lipdub's default worker and polling settings (task time limit 30 min, visibility
timeout 1 h), a worker is SIGKILLed, whole or one pool process, while it runs steps and while
steps with countdowns (first polls) wait. Before the due steps moved into Redis and running
steps were leased by the heartbeat, such a batch waited for the visibility timeout (an hour);
here it must finish in a few minutes, every pair paid once. The time each orphaned step took
to run again is printed (`make chaos` tabulates it).
"""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from pipeline.due import DueSteps, RunningSteps
from pipeline.settings import PollingSettings, StorageSettings, WorkerSettings
from tests.chaos.outcome import paid_pairs
from tests.conftest import start_sandbox
from tests.integration.stack import audit, plan, worker_processes, write_manifest

pytestmark = pytest.mark.slow

MODES = ["cut_off", "loop", "bounce", "silence", "remap"]
ITEMS = [(f"f-{n}", 1.0 + 0.2 * (n % 3), 0.8 + 0.1 * n, MODES[n % 5]) for n in range(10)]
"""Each item's output lasts a different length (0.8-1.7 s), as a catalog's clips do. Killing a
whole worker can lose two submits at once, and WaveSpeed's list shows no inputs: two lost
submits whose outputs last the same are told apart by nothing, and rightly end
`needs_attention` for a person (test_reconcile, test_adopt). With outputs of the
same length here, CI saw exactly that once (2 of 10 items)."""
FINISH_WITHIN_S = 240.0
"""Far below what the old recovery took (the visibility timeout, 3,600 s), far above what
the new one needs (a lapsed heartbeat, 30 s, plus a check, 5 s, plus the steps themselves)."""


@pytest.mark.timeout(FINISH_WITHIN_S + 120)
@pytest.mark.parametrize("scope", ["worker", "pool"])
def test_with_default_settings_a_killed_worker_holds_up_nothing_for_long(
    tmp_path, make_stack, scope
):
    # Given lipdub's own worker and polling defaults, a provider whose calls take a while
    # (so that a worker is always in the middle of one), and two workers
    defaults = {
        "worker": WorkerSettings().model_dump(),
        "polling": PollingSettings().model_dump(),
        "storage": {"presign_expiry_s": StorageSettings().presign_expiry_s},
    }
    slow = {"slow_rate": 0.5, "slow_s": 1.5}
    with start_sandbox(tmp_path, processing_fixed_s=2.0, faults=slow) as sandbox:
        stack = make_stack(sandbox, **defaults)
        running, due = RunningSteps(stack.redis), DueSteps(stack.redis, stack.settings.worker.queue)
        batch_id = stack.control.start(plan(write_manifest(tmp_path / "m", ITEMS), stack.settings))
        with worker_processes(stack.settings, tmp_path, count=2, concurrency=2, name="w") as procs:
            doomed = procs[0]
            # When the first worker is in the middle of a provider call (a submit or a poll:
            # a prepare step is over in milliseconds) while first polls wait for their time
            deadline = time.monotonic() + 60
            while True:
                held = [
                    lease
                    for lease in running.all()
                    if lease.worker.startswith("w0-") and lease.step.step in ("submit", "poll")
                ]
                if held and due.count():
                    break
                assert time.monotonic() < deadline, "the worker never held a step"
                time.sleep(0.02)
            if scope == "worker":
                os.killpg(doomed.pid, signal.SIGKILL)
            else:
                psutil.Process(doomed.pid).children()[0].kill()
            killed_at = time.time()
            status = stack.wait(batch_id, timeout_s=FINISH_WITHIN_S)
        entries = audit(sandbox.url)
    # Then the batch finished long before any broker timeout, every pair paid for once
    assert {k: v for k, v in status["counts"].items() if v} == {"completed": len(ITEMS)}, status
    assert sorted(paid_pairs(entries).values()) == [1] * len(ITEMS)
    elapsed_s = time.time() - killed_at
    print(f"\n{scope} killed holding {len(held)} step(s); batch finished {elapsed_s:.1f} s later")
