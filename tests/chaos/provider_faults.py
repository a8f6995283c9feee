"""A batch against a provider that misbehaves in every documented way at once.

The sandbox's seeded fault injection: 429 storms (with and without Retry-After), 5xx with and
without the task created, connections dropped after the submit was accepted, slow and hung
answers, malformed bodies, failed tasks (with WaveSpeed's codes), inputs the provider cannot
download (failed with 1402), tasks ending cancelled/timeout/deleted or reading `pending`, and
tasks that never finish; the list hides the inputs, as WaveSpeed's does. Lipdub's timeouts
are set short so that a hung answer is a timeout, and a task that never finishes meets its
deadline.
"""

from __future__ import annotations

from typing import Any

ALL_FAULTS: dict[str, Any] = {
    "rate_limit_rate": 0.15,
    "retry_after_s": 0.5,
    "submit_error_rate": 0.1,
    "submit_drop_rate": 0.1,
    "submit_error_after_accept_rate": 0.1,
    "result_error_rate": 0.1,
    "malformed_rate": 0.05,
    "slow_rate": 0.1,
    "slow_s": 0.3,
    "hang_rate": 0.05,
    "hang_s": 2.5,
    "task_failure_rate": 0.15,
    "never_finish_rate": 0.05,
    "download_failure_rate": 0.1,
    "odd_status_rate": 0.1,
    "pending_rate": 0.3,
}
"""Every fault the sandbox knows, at rates a bad night could bring."""

FAULT_NAMES = sorted(k.removesuffix("_rate") for k in ALL_FAULTS if k.endswith("_rate"))


def sandbox_faults(seed: int) -> dict[str, Any]:
    """The sandbox's `faults` section for a run."""
    return {"seed": seed, **ALL_FAULTS}


def lipdub_settings(*, max_attempts: int, item_deadline_s: float) -> dict[str, dict[str, Any]]:
    """Lipdub's settings for the run: a hung answer times out, a stuck task meets its deadline."""
    # A hung submit is still created once its hang ends (after the sandbox fetched the inputs,
    # which takes seconds on 2 loaded cores): lipdub's grace (submit timeout plus reconcile
    # grace) must outlast that, or an absence from the list is taken for "never made" and the
    # pair is paid twice. The same holds for the real provider: see reconcile_grace_s.
    grace_s = ALL_FAULTS["hang_s"] + 7.5
    return {
        "provider": {"submit_timeout_s": 1.0, "read_timeout_s": 1.5, "cooldown_default_s": 0.5},
        "polling": {
            "item_deadline_s": item_deadline_s,
            "reconcile_grace_s": grace_s,
            # A lost submit's candidates may never finish (a fault): wait for them no longer
            # than an item waits for its own.
            "reconcile_max_wait_s": item_deadline_s,
        },
        "worker": {"max_attempts": max_attempts},
    }


def faults_injected(stats: dict[str, Any]) -> dict[str, int]:
    """The sandbox's counters of faults that happened, by fault name."""
    return {
        name.removeprefix("fault_"): int(count)
        for name, count in stats.items()
        if name.startswith("fault_")
    }
