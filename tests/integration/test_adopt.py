"""A person settles the items that need attention with `lipdub adopt`: nothing is submitted
again, the predictions are collected, and the spend meets the provider's bill."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest

from pipeline.storage import media_sha256
from tests.conftest import start_sandbox
from tests.integration.stack import accepted_submits, in_process_worker, plan, write_manifest

pytestmark = pytest.mark.slow


def test_a_person_adopts_the_predictions_nothing_could_tell_apart(cli, make_stack, tmp_path):
    # Given two lost submits nothing observable tells apart (see test_pipeline_gates)
    items = [("blind-a", 1.0, 1.0, "bounce"), ("blind-b", 1.1, 1.0, "bounce")]
    manifest = write_manifest(tmp_path / "m", items)
    with start_sandbox(tmp_path / "box", faults={"submit_drop_rate": 1.0}) as box:
        env = {"LIPDUB_PROVIDER__BASE_URL": box.url}
        stack = make_stack(box)
        with in_process_worker(stack):
            batch_id = stack.control.start(plan(manifest, stack.settings))
            status = stack.wait(batch_id)
            assert status["counts"]["needs_attention"] == 2, status
            # The report's audit shows both predictions in no lipdub item's books, each
            # maybe either item's
            audit = stack.control.report(batch_id)["audit"]
            assert sorted(u["id"] for u in audit["unattributed"]) == sorted(
                s["prediction_id"] for s in accepted_submits(box.url)
            )
            assert all(sorted(u["may_be"]) == ["blind-a", "blind-b"] for u in audit["unattributed"])
            # and costed from the provider's billing records, to the cent
            bill = Decimal(httpx.get(f"{box.url}/_sandbox/bill", timeout=5).json()["billed_usd"])
            assert audit["charges_from"] == "billing"
            assert Decimal(audit["unattributed_usd"]) == bill > 0
            # (what the dashboard would tell a person: which prediction had which video)
            made = {s["video_sha256"]: s["prediction_id"] for s in accepted_submits(box.url)}
            theirs = {
                item_id: made[
                    media_sha256(
                        json.loads(stack.ledger.item(batch_id, item_id)["video"])["stored"]
                    )
                ]
                for item_id, *_ in items
            }
            # When a person gives a wrong id, or an item that does not need attention
            unknown = cli("adopt", batch_id, "blind-a", "no-such-prediction", **env)
            assert unknown.returncode == 2 and "knows no prediction" in unknown.stderr
            # And then adopts each item's own prediction
            for item_id, prediction_id in theirs.items():
                adopted = cli("adopt", batch_id, item_id, prediction_id, **env)
                assert adopted.returncode == 0, adopted.stderr
            taken = cli("adopt", batch_id, "blind-a", theirs["blind-b"], **env)
            status = stack.wait(batch_id)
            audited = json.loads(cli("audit", batch_id, "--json", **env).stdout)
        bill = Decimal(httpx.get(f"{box.url}/_sandbox/bill", timeout=5).json()["billed_usd"])
        submits = accepted_submits(box.url)
    # Then a second adoption is refused, both complete from their own predictions, nothing
    # was submitted again, and lipdub's spend is the provider's bill
    assert taken.returncode == 2 and "only an item that needs attention" in taken.stderr
    assert status["counts"]["completed"] == 2, status
    assert len(submits) == 2
    report = stack.control.report(batch_id)
    assert {i["id"]: i["prediction_id"] for i in report["items_detail"]} == theirs
    assert Decimal(report["spent_usd"]) == bill
    # And the audit now finds every prediction in an item's books
    assert audited["unattributed"] == [] and audited["predictions"] == 2
    assert report["audit"]["unattributed"] == []
