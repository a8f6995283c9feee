"""A provider that misbehaves in every way at once: each item ends in a final state with a
reason a person can act on, retries stay within their bounds, and no pair is paid twice."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.chaos.outcome import judge, sandbox_witness
from tests.chaos.provider_faults import (
    FAULT_NAMES,
    faults_injected,
    lipdub_settings,
    sandbox_faults,
)
from tests.conftest import client_for, start_sandbox
from tests.integration.stack import plan, worker_processes, write_manifest

pytestmark = pytest.mark.slow

MODES = ("cut_off", "loop", "bounce", "silence", "remap")
# Distinct lengths: identical media would be one pair, paid once and reused; outputs that
# differ by more than a frame, as a catalog's do, so that a lost submit's prediction can be
# told from another's by its length.
ITEMS = [(f"p-{n:02d}", 0.6 + 0.08 * n, 0.8 + 0.1 * n, MODES[n % 5]) for n in range(24)]
SEED = 5


def test_every_provider_fault_at_once_ends_every_item_clearly_and_pays_once(tmp_path, make_stack):
    # Given a sandbox with every fault on, seeded, and lipdub's bounds set
    manifest = write_manifest(tmp_path / "m", ITEMS)
    with start_sandbox(tmp_path, faults=sandbox_faults(SEED)) as sandbox:
        stack = make_stack(sandbox, **lipdub_settings(max_attempts=3, item_deadline_s=8.0))
        # When the batch runs on a real worker process
        with worker_processes(stack.settings, tmp_path, concurrency=4):
            batch_id = stack.control.start(plan(manifest, stack.settings))
            stack.wait(batch_id, timeout_s=100)
        witness = sandbox_witness(sandbox.url)
        balance_usd = client_for(sandbox).balance_usd()
    report = stack.control.report(batch_id)
    outcome = judge("provider faults", "all", report, witness, len(ITEMS), 0.0)
    # Then every fault really happened (else the seed proves nothing: pick another)
    injected = faults_injected(witness["stats"])
    assert set(injected) == set(FAULT_NAMES), (
        f"seed {SEED} missed {set(FAULT_NAMES) - set(injected)}"
    )
    # And nothing was lost or paid twice, and many items still completed
    assert outcome.lost == 0 and outcome.duplicate_submissions == 0, outcome
    # (about a third of the submits lose their answer here: those nothing observable tells
    # apart need a person, so fewer than all complete)
    assert outcome.completed >= len(ITEMS) // 3, outcome
    for item in report["items_detail"]:
        # Retries stayed within their bounds (inputs the provider could not download are
        # storage trouble, retried for a time rather than a count)
        unfetched = sum(f.get("code") == 1402 for f in item["failed_predictions"])
        assert item["attempts"] <= 3 + unfetched, item
        if item["state"] != "completed":
            # And every item that did not complete says why and what to do
            assert item["error"] and item["hint"] and item["error_kind"], item
    assert outcome.failed, "with these rates some items must fail; the test would prove less"
    # And the report accounts for every charge: lipdub's spend plus what its audit read from
    # the provider's billing records for the predictions no item has is the bill, to the
    # cent (failed tasks were charged by neither)
    ours = {p for item in report["items_detail"] for p in item["prediction_ids"]}
    unattributed = {
        t["prediction_id"]: Decimal(t["charged_usd"])
        for t in witness["tasks"]
        if t["prediction_id"] not in ours and Decimal(t["charged_usd"])
    }
    bill = Decimal("1000") - balance_usd
    audit = report["audit"]
    assert audit["charges_from"] == "billing", audit
    assert Decimal(report["spent_usd"]) + Decimal(audit["unattributed_usd"]) == bill, audit
    charged = {u["id"]: Decimal(u["charged_usd"]) for u in audit["unattributed"]}
    assert {p: c for p, c in charged.items() if c} == unattributed
    # And each of those is among the candidates of an item that needs attention
    evidence = {
        c["id"]
        for item in report["items_detail"]
        if item["state"] == "needs_attention"
        for c in item["evidence"]["candidates"]
    }
    assert set(unattributed) <= evidence
