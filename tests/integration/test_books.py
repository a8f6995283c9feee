"""Every charge of a batch is in its report, including those lipdub did not mean to make: a
prediction that completed after its item timed out, and failed predictions the provider
charged. lipdub's spend, the unattributed and the unbooked charges add up to the bill."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import httpx
import pytest

from tests.conftest import start_sandbox
from tests.integration.stack import accepted_submits, in_process_worker, plan, write_manifest

pytestmark = pytest.mark.slow


def billed_usd(url: str) -> Decimal:
    return Decimal(httpx.get(f"{url}/_sandbox/bill", timeout=5).json()["billed_usd"])


def wait_billed(url: str, timeout_s: float = 30.0) -> Decimal:
    """Wait (the test, not a worker) until the provider has charged something."""
    deadline = time.monotonic() + timeout_s
    while (bill := billed_usd(url)) == 0:
        assert time.monotonic() < deadline, "the sandbox charged nothing"
        time.sleep(0.1)
    return bill


def books_usd(report_or_audit: dict, spent_usd: str) -> Decimal:
    return (
        Decimal(spent_usd)
        + Decimal(report_or_audit["unattributed_usd"])
        + Decimal(report_or_audit["unbooked_usd"])
    )


def test_a_prediction_that_completes_after_its_item_timed_out_is_in_the_books(
    cli, make_stack, tmp_path
):
    # Given a provider slower than the item's deadline
    manifest = write_manifest(tmp_path / "m", [("late", 1.0, 1.0, "bounce")])
    with start_sandbox(tmp_path / "box", processing_fixed_s=4.0) as box:
        env = {"LIPDUB_PROVIDER__BASE_URL": box.url}
        stack = make_stack(box, polling={"item_deadline_s": 1.0, "learn": False})
        with in_process_worker(stack):
            batch_id = stack.control.start(plan(manifest, stack.settings))
            status = stack.wait(batch_id)
            # Then the item timed out, booking nothing, and the report already names its
            # prediction as one that may still be charged, at the item's price
            assert status["counts"]["failed"] == 1, status
            report = stack.control.report(batch_id)
            (held,) = report["audit"]["unbooked"]
            (submit,) = accepted_submits(box.url)
            assert held["id"] == submit["prediction_id"] and held["item_id"] == "late"
            assert held["pending"] is True
            assert Decimal(held["cost_usd"]) == Decimal(report["items_detail"][0]["estimate_usd"])
            # When the prediction completes and is charged, a later audit reads the charge
            bill = wait_billed(box.url)
            audited = cli("audit", batch_id, "--json", **env)
            assert audited.returncode == 0, audited.stderr
            audit = json.loads(audited.stdout)
            assert audit["unbooked"][0]["pending"] is False
            assert audit["charges_from"] == "billing"
            assert Decimal(report["spent_usd"]) == 0
            assert books_usd(audit, report["spent_usd"]) == bill
            text = cli("audit", batch_id, **env).stdout
            assert f"{submit['prediction_id']} of late completed" in text
            assert "NOT IN THE ITEMS' COSTS" in cli("report", batch_id, **env).stdout
            # And retrying the item collects that same prediction: booked once, nothing more
            stack.control.retry_failed(batch_id)
            status = stack.wait(batch_id)
            assert status["counts"]["completed"] == 1, status
            after = json.loads(cli("audit", batch_id, "--json", **env).stdout)
        submits = accepted_submits(box.url)
        final_bill = billed_usd(box.url)
    report = stack.control.report(batch_id)
    assert len(submits) == 1
    assert after["unbooked"] == [] and after["unattributed"] == []
    assert Decimal(report["spent_usd"]) == bill == final_bill


def test_failed_predictions_the_provider_charged_are_in_the_books(cli, make_stack, tmp_path):
    # Given a provider whose tasks all fail, and that charges failed tasks (WaveSpeed does
    # not document whether it does)
    items = [(f"doomed-{n}", 1.0 + n / 10, 1.0, "bounce") for n in range(3)]
    manifest = write_manifest(tmp_path / "m", items)
    with start_sandbox(
        tmp_path / "box", faults={"task_failure_rate": 1.0}, charge_failed=True
    ) as box:
        stack = make_stack(box)
        with in_process_worker(stack):
            batch_id = stack.control.start(plan(manifest, stack.settings))
            status = stack.wait(batch_id)
        bill = billed_usd(box.url)
        submits = accepted_submits(box.url)
    # Then lipdub booked nothing, but its report names every charged prediction with its
    # item, and the books meet the bill to the cent
    assert status["counts"]["failed"] == 3, status
    report = stack.control.report(batch_id)
    audit = report["audit"]
    assert Decimal(report["spent_usd"]) == 0 < bill
    assert sorted(u["id"] for u in audit["unbooked"]) == sorted(s["prediction_id"] for s in submits)
    assert all(u["status"] == "failed" and not u["pending"] for u in audit["unbooked"])
    assert books_usd(audit, report["spent_usd"]) == bill
