"""Money before the first paid call and after the last: the estimate is what the provider
bills, and `lipdub run` refuses, spending nothing, when the account or the bucket is wrong.
Through the real entry point, on the real parts."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest

from tests.conftest import start_sandbox
from tests.integration.stack import accepted_submits, write_manifest

pytestmark = pytest.mark.slow

ITEMS = [("intro", 1.0, 1.4, "loop"), ("outro", 1.2, 0.8, "cut_off"), ("promo", 0.8, 0.8, "remap")]
ROUNDED = {"round_up_to_second": True, "minimum_s": 2.0, "rate_per_second_usd": "0.134"}
"""A provider formula unlike the product page's exact seconds: 2 s at least, whole seconds."""


@pytest.fixture
def manifest(tmp_path):
    return write_manifest(tmp_path / "catalog", ITEMS)


def test_the_estimate_is_the_bill_to_the_cent_and_the_report_says_why(cli, manifest, tmp_path):
    # Given a provider whose formula rounds up to whole seconds and bills at least 2 s
    with start_sandbox(tmp_path / "box", pricing=ROUNDED) as box:
        env = {"LIPDUB_PROVIDER__BASE_URL": box.url}
        planned = cli("plan", str(manifest), "--json", **env)
        assert planned.returncode == 0, planned.stderr
        plan = json.loads(planned.stdout)
        estimate = Decimal(plan["total_usd"])
        # (three items of 2 s each by that formula; the product page's exact seconds: 3.0 s)
        assert estimate == Decimal("0.804") and plan["price_basis"].startswith("provider quote")
        # When the batch runs to its end
        with cli.worker(tmp_path / "worker.log", **env):
            result = cli("run", str(manifest), "--yes", "--json", "--out", "reports", **env)
        assert result.returncode == 0, result.stderr
        bill = Decimal(httpx.get(f"{box.url}/_sandbox/bill", timeout=5).json()["billed_usd"])
    # Then the provider billed exactly the estimate, and the report says so and why
    assert bill == estimate
    batch_id = json.loads(result.stdout)["batch_id"]
    report = json.loads((tmp_path / "reports" / batch_id / "report.json").read_text())
    assert Decimal(report["spent_usd"]) == bill
    assert report["price_basis"].startswith("provider quote")
    # Every prediction the provider made in the batch's time is in an item's books
    assert report["audit"]["predictions"] == 3 and report["audit"]["unattributed"] == []
    before, after = Decimal(report["balance_before_usd"]), Decimal(report["balance_after_usd"])
    assert before - after == bill
    page = (tmp_path / "reports" / batch_id / "report.html").read_text()
    assert "Priced by the provider quote" in page
    assert "balance fell by $0.80 while the batch ran; lipdub&#39;s spend: $0.80" in page
    assert "balance fell by" in (tmp_path / "reports" / batch_id / "report.md").read_text()


def test_without_quotes_the_price_model_prices_the_plan_and_says_so(cli, manifest):
    # Given quotes turned off and the price model set to the provider's formula
    planned = cli(
        "plan",
        str(manifest),
        "--json",
        LIPDUB_PRICE__QUOTES="false",
        LIPDUB_PRICE__ROUNDING="ceil_second",
        LIPDUB_PRICE__MINIMUM_BILLABLE_S="2",
    )
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    # Then the estimate follows the model, and the plan names its basis
    assert Decimal(plan["total_usd"]) == Decimal("0.804")
    assert plan["price_basis"].startswith("price model: $0.134/s of input video, rounded up")


def test_a_quote_endpoint_that_does_not_answer_falls_back_to_the_price_model(cli, manifest):
    # Given a key the provider refuses (so its quotes are refused too)
    planned = cli("plan", str(manifest), "--json", LIPDUB_PROVIDER__API_KEY="sk-wrong")
    plan = json.loads(planned.stdout)
    assert planned.returncode == 0
    assert Decimal(plan["total_usd"]) == Decimal("0.402")
    assert "the quote endpoint did not answer" in plan["price_basis"]
    assert "sk-wrong" not in planned.stdout + planned.stderr


def _refused(result) -> str:
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_run_refuses_a_key_the_provider_refuses_and_spends_nothing(cli, manifest, sandbox_server):
    result = cli("run", str(manifest), "--yes", LIPDUB_PROVIDER__API_KEY="sk-wrong")
    assert result.returncode == 5
    line = _refused(result)
    assert "refused the API key" in line and "WAVESPEED_API_KEY" in line
    assert "sk-wrong" not in result.stdout + result.stderr
    assert json.loads(cli("batches", "--json").stdout) == []
    assert accepted_submits(sandbox_server.url) == []


def test_run_refuses_when_the_balance_is_below_the_estimate(cli, manifest, tmp_path):
    with start_sandbox(tmp_path / "box", initial_balance_usd="0.30") as box:
        result = cli("run", str(manifest), "--yes", LIPDUB_PROVIDER__BASE_URL=box.url)
        submits = accepted_submits(box.url)
    assert result.returncode == 4
    line = _refused(result)
    assert "balance $0.30 is below the estimate $0.54" in line  # 1 + 2 + 1 s, rounded up
    assert json.loads(cli("batches", "--json").stdout) == [] and submits == []


def test_run_refuses_a_bucket_that_does_not_exist_unless_asked_to_create_it(
    cli, manifest, stack, sandbox_server
):
    result = cli("run", str(manifest), "--yes", LIPDUB_STORAGE__BUCKET="lipdub-typo")
    assert result.returncode == 5
    line = _refused(result)
    assert "bucket 'lipdub-typo' does not exist" in line and "--create-bucket" in line
    assert json.loads(cli("batches", "--json").stdout) == []
    assert "lipdub-typo" not in [b["Name"] for b in stack.s3.list_buckets()["Buckets"]]
    # With --create-bucket it is created, and the batch starts
    started = cli(
        "run", str(manifest), "--yes", "--detach", "--create-bucket",
        LIPDUB_STORAGE__BUCKET="lipdub-typo",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert "lipdub-typo" in [b["Name"] for b in stack.s3.list_buckets()["Buckets"]]
