"""The reports a batch writes, opened as a person would: the HTML page in headless Chromium,
the CSV as a spreadsheet would read it. Hostile manifest metadata must come out inert."""

from __future__ import annotations

import csv
import io
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pipeline.reporting import render
from tests.integration.stack import in_process_worker, plan, write_manifest

pytestmark = pytest.mark.slow

HTML_PAYLOADS = [
    '<script>console.error("script ran")</script>',
    "<img src=x onerror=\"console.error('img ran')\">",
    '"><svg onload=console.error(1)>',
]
FORMULA_PAYLOADS = [
    '=HYPERLINK("http://evil.example","x")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1)",
]
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str:
    """Debian's chromium; CI installs it (.ci/run), so there a missing browser is a failure."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium is missing: .ci/run installs Debian's chromium package")
    pytest.skip("no chromium on this machine (apt install chromium); CI installs it")
    raise AssertionError  # unreachable


@contextmanager
def chromium_page() -> Iterator[tuple[Any, list[str], list[str]]]:
    """A headless Chromium page, the problems it reports (console messages, errors, dialogs)
    and the URLs it requests."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            problems: list[str] = []
            page.on("console", lambda m: problems.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
            page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            yield page, problems, requests
        finally:
            browser.close()


def hostile_manifest(folder: Path) -> Path:
    """Three items whose metadata (and name) carry HTML and formula payloads."""
    manifest = write_manifest(
        folder, [("a", 1.0, 1.2, "loop"), ("b", 0.8, 0.8, "cut_off"), ("c", 1.0, 0.6, "remap")]
    )
    rows = list(csv.reader(io.StringIO(manifest.read_text(encoding="utf-8"))))
    rows[0] += ["title", "note"]
    for n, row in enumerate(rows[1:]):
        row += [HTML_PAYLOADS[n % len(HTML_PAYLOADS)], FORMULA_PAYLOADS[n % len(FORMULA_PAYLOADS)]]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    manifest.write_text(buffer.getvalue(), encoding="utf-8")
    return manifest


@pytest.fixture
def hostile_batch(tmp_path, make_stack, sandbox):
    stack = make_stack(sandbox)
    manifest = hostile_manifest(tmp_path / "catalog")
    with in_process_worker(stack):
        batch_id = stack.control.start(plan(manifest, stack.settings), name=HTML_PAYLOADS[0])
        stack.wait(batch_id, timeout_s=60)
    return stack, batch_id


def test_html_report_renders_in_chromium_with_payloads_as_text(hostile_batch, tmp_path):
    # Given the HTML report the batch's finalizer wrote to the bucket
    stack, batch_id = hostile_batch
    page_path = tmp_path / "report.html"
    page_path.write_bytes(stack.storage.get_bytes(f"reports/{batch_id}/report.html"))
    # When Chromium opens it, with no network
    with chromium_page() as (page, problems, requests):
        page.goto(page_path.as_uri())
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        text = page.inner_text("body")
        injected = page.evaluate(
            "document.querySelectorAll('body script:not(#items-data):not(#items-code), "
            "body img, body svg:not([role=img])').length"
        )
        rows = page.locator("#items-body tr").count()
        table = page.inner_text("#items")
    # Then it rendered with no console message, error or dialog, and fetched nothing else
    assert problems == []
    assert requests == [page_path.as_uri()]
    # and every payload is shown as the text it is, never run
    assert injected == 0
    for payload in HTML_PAYLOADS:
        assert payload in text
        assert payload in table  # the script-built item table sets them as text too
    assert rows == 3
    assert "3 / 3" in text and "Cost by sync_mode" in text and "Timeline" in text
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_csv_and_markdown_reports_neutralise_payloads(hostile_batch):
    stack, batch_id = hostile_batch
    rows = list(
        csv.DictReader(
            io.StringIO(stack.storage.get_bytes(f"reports/{batch_id}/report.csv").decode())
        )
    )
    assert [r["note"] for r in rows] == ["'" + p for p in FORMULA_PAYLOADS[:3]]
    assert [r["title"] for r in rows] == HTML_PAYLOADS
    for row in rows:
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@")), value
    markdown = render(stack.control.report(batch_id), "md").decode()
    assert "<script>" not in markdown and "&lt;script&gt;" in markdown


def test_a_10000_item_report_is_one_screen_of_summary_and_a_searchable_table(tmp_path):
    from pipeline.reporting import render
    from tests.unit.test_reporting import item, report

    # Given the report of a 10,000-item batch, some failed, some reused
    items = [
        item(n, "failed" if n % 97 == 0 else "completed", cost=f"0.{n % 9000 + 1000:04d}")
        for n in range(10_000)
    ]
    for n in range(0, 10_000, 50):
        items[n]["reused_from"] = "b0:earlier"
    page_path = tmp_path / "report.html"
    page_path.write_bytes(render(report(items), "html"))
    with chromium_page() as (page, problems, _):
        # When a person opens it
        started = time.perf_counter()
        page.goto(page_path.as_uri())
        page.wait_for_selector("#items-body tr")
        opened_s = time.perf_counter() - started
        first_page = page.locator("#items-body tr").count()
        histogram_items = page.get_attribute("#histogram", "data-items")
        summary_px = page.evaluate("document.querySelector('h2:last-of-type').offsetTop")
        # and searches for one item
        page.fill("#items-search", "item-7777")
        found = page.locator("#items-body tr").all_inner_texts()
        info = page.inner_text("#items-info")
        # and sorts the whole table by cost, most expensive first
        page.fill("#items-search", "")
        cost = page.locator("#items-head th", has_text="cost")
        cost.click()
        cost.click()
        top = page.locator("#items-body tr").first.inner_text()
        page.click("#items-next")
        second_info = page.inner_text("#items-info")
    print(f"10,000-row report: {page_path.stat().st_size / 1e6:.1f} MB, opened in {opened_s:.2f} s")
    # Then it ran its one script without complaint, showing the first page of 50 rows
    assert problems == []
    assert first_page == 50
    # the histogram counts every item, and the summary above the table stays short
    assert histogram_items == "10000"
    assert summary_px < 3000
    # the search finds the one item, and the sort runs over all of them
    assert len(found) == 1 and "item-7777" in found[0]
    assert info == "items 1–1 of 1 found (10000 in all)"
    assert "item-8999" in top  # the highest cost: 0.9999
    assert second_info.startswith("items 51–100 of 10000")
