"""Retrying a compacted batch (`pipeline.retention`): its report stays whole and the batch is
compacted again; on the real parts (Redis, S3, the sandbox over HTTP, a Celery worker)."""

from __future__ import annotations

import json
import time

import pytest

from pipeline import keys
from pipeline.audit import audit_batch
from pipeline.batches import BatchControl
from pipeline.provider.client import ProviderClient
from pipeline.reporting.data import LAPSED_HINT
from pipeline.retention import compact, due
from tests.conftest import start_sandbox
from tests.integration.stack import (
    FOUR_CLIPS,
    accepted_submits,
    budget_for_two,
    in_process_worker,
    write_manifest,
)

pytestmark = pytest.mark.slow


def reporting_control(stack) -> BatchControl:
    """The batch control `lipdub` builds: a compacted batch's report is the bucket's."""
    return BatchControl(
        stack.ledger,
        stack.control.dispatcher,
        stack.settings,
        stored_report=stack.storage.get_bytes,
        storage=stack.storage,
    )


def finished_with_two_skipped(stack, control: BatchControl, manifest) -> tuple[str, list]:
    """Start a batch of four whose budget fits two (one at a time), and wait for it to
    finish: two completed, two skipped. Returns its id and the four items' prices."""
    batch_plan, prices, budget = budget_for_two(manifest, stack.settings)
    batch_id = control.start(batch_plan, budget_usd=budget, partial_budget=True)
    stack.wait(batch_id)
    return batch_id, prices


def test_retrying_a_compacted_batch_keeps_its_report_whole_and_compacts_it_again(
    tmp_path, make_stack
):
    manifest = write_manifest(tmp_path / "m", FOUR_CLIPS)
    with start_sandbox(tmp_path) as sandbox:
        stack = make_stack(sandbox, provider={"max_concurrent": 1})
        control = reporting_control(stack)
        with in_process_worker(stack):
            # Given a finished batch whose budget left two items skipped, compacted since
            batch_id, prices = finished_with_two_skipped(stack, control, manifest)
            before = control.report(batch_id)
            done = [i["id"] for i in before["items_detail"] if i["state"] == "completed"]
            compact(stack.ledger, batch_id, now=time.time())
            assert not any(stack.redis.exists(keys.item(batch_id, i)) for i in done)
            # When the skipped items are retried with a budget that fits them
            retried = control.retry_failed(batch_id, budget_usd=sum(prices))
            stack.wait(batch_id)
        after = control.report(batch_id)
        paid = len(accepted_submits(sandbox.url))
    # Then every item completed, each paid for once
    skipped = sorted(i["id"] for i in before["items_detail"] if i["state"] == "skipped")
    assert sorted(retried) == skipped and len(skipped) == 2
    assert after["counts"]["completed"] == 4 and paid == 4
    # And the report tells the items completed before the compaction as it did then (their
    # inputs, their phases), not only what compaction kept of them
    earlier = {i["id"]: i for i in before["items_detail"] if i["state"] == "completed"}
    rows = {i["id"]: i for i in after["items_detail"]}
    assert len(earlier) == 2
    for item_id, row in earlier.items():
        assert rows[item_id] == row
        assert row["video"] and row["phases"]
    assert all(rows[i]["video"] and rows[i]["state"] == "completed" for i in skipped)
    assert sum(r["cost_usd"] is not None for r in rows.values()) == 4
    # And the batch is due to be compacted again: the retried items are packed too
    batch = stack.ledger.batch(batch_id)
    assert batch is not None and due(batch, now=time.time(), older_than_s=0)
    assert compact(stack.ledger, batch_id, now=time.time()).items == 2
    assert not any(stack.redis.exists(keys.item(batch_id, i)) for i in rows)
    assert all(stack.ledger.item(batch_id, i)["state"] == "completed" for i in rows)
    assert stack.ledger.done_count(batch_id) == 4
    assert not stack.redis.exists(keys.batch_done(batch_id))
    assert control.report(batch_id) == after


def test_a_compacted_batch_whose_report_is_gone_still_finishes_when_retried(tmp_path, make_stack):
    manifest = write_manifest(tmp_path / "m", FOUR_CLIPS)
    with start_sandbox(tmp_path) as sandbox:
        stack = make_stack(sandbox, provider={"max_concurrent": 1})
        with in_process_worker(stack):
            # Given a compacted batch with skipped items, its report since deleted from the
            # bucket (a lifecycle rule, a person)
            batch_id, prices = finished_with_two_skipped(stack, stack.control, manifest)
            compact(stack.ledger, batch_id, now=time.time())
            for key in stack.keys(f"reports/{batch_id}/"):
                stack.storage.delete(key)
            # When they are retried
            stack.control.retry_failed(batch_id, budget_usd=sum(prices))
            status = stack.wait(batch_id)
    # Then the batch finishes all the same, with a report again
    assert status["counts"]["completed"] == 4
    assert stack.storage.exists(f"reports/{batch_id}/report.json")


@pytest.mark.parametrize("report_kept", [True, False])
def test_a_retried_batch_whose_compacted_items_lapsed_still_reports_them(
    tmp_path, make_stack, report_kept
):
    manifest = write_manifest(tmp_path / "m", FOUR_CLIPS)
    with start_sandbox(tmp_path) as sandbox:
        stack = make_stack(sandbox, provider={"max_concurrent": 1})
        control = reporting_control(stack)
        with in_process_worker(stack):
            # Given a compacted batch with two completed and two skipped items, whose packed
            # items have lapsed since (as Redis drops them with the latest of their pairs'
            # claims, 30 days on), its report kept in the bucket or not
            batch_id, prices = finished_with_two_skipped(stack, control, manifest)
            before = control.report(batch_id)
            compact(stack.ledger, batch_id, now=time.time())
            stack.redis.delete(keys.batch_kept(batch_id))
            if not report_kept:
                for key in stack.keys(f"reports/{batch_id}/"):
                    stack.storage.delete(key)
            # When the skipped items are retried
            control.retry_failed(batch_id, budget_usd=sum(prices))
            stack.wait(batch_id)
        report_key = f"reports/{batch_id}/report.json"
        after = json.loads(stack.storage.get_bytes(report_key))
        provider = ProviderClient.from_settings(stack.settings.provider)
        try:
            audited = audit_batch(
                stack.ledger, provider, batch_id, model=stack.settings.provider.model_path,
                now=time.time(),
            )  # fmt: skip
        finally:
            provider.close()
    completed = {i["id"]: i for i in before["items_detail"] if i["state"] == "completed"}
    rows = {i["id"]: i for i in after["items_detail"]}
    assert len(completed) == 2 and after["counts"]["completed"] == 4
    # Then the lapsed items' rows are their earlier report's, whole, where it is kept; where
    # it is gone, each row still says the item completed, and where its row is
    for item_id, row in completed.items():
        if report_kept:
            assert rows[item_id] == row
        else:
            assert rows[item_id]["id"] == item_id and rows[item_id]["state"] == "completed"
            assert rows[item_id]["hint"] == LAPSED_HINT
    assert [r["id"] for r in after["items_detail"]] == [r["id"] for r in before["items_detail"]]
    # And the audit of the batch reads its items (the lapsed ones say they completed), at its
    # finalize and later. Their predictions are no item's any more: lapsing here at once (not
    # after the provider's 7-day history, as it does by itself), the provider still lists them,
    # and the audit says so; the retried items' are theirs
    assert after["audit_error"] is None
    assert {u.id for u in audited.unattributed} == {r["prediction_id"] for r in completed.values()}
    assert {r["state"] for r in stack.ledger.items(batch_id)} == {"completed"}
    # And compacting it again packs the retried items only
    assert compact(stack.ledger, batch_id, now=time.time()).items == 2
    assert set(stack.ledger.compacted_items(batch_id)) == set(rows) - set(completed)
