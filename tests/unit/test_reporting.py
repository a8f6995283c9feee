"""The four report formats, rendered from a report dict: figures, escaping, neutralising."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import re
from decimal import Decimal

import pytest

from pipeline.reporting import FORMATS, render, render_all, summarize
from pipeline.reporting.csv_report import neutralise
from pipeline.reporting.markdown import md_text

SCRIPT = '<script>alert("x")</script><img src=x onerror=alert(1)>'
FORMULAS = ['=HYPERLINK("http://evil.example","click")', "+1+2", "-2+3", "@SUM(A1)", "\tx", "\rx"]


def item(n, state="completed", *, mode="loop", language="de", cost="0.1340", **extra):
    created = 1000.0 + n
    phases = {
        "upload": {"start": created, "end": created + 1, "seconds": 1.0},
        "provider": {"start": created + 1, "end": created + 4, "seconds": 3.0},
        "poll": {"start": created + 4, "end": created + 5, "seconds": 1.0},
        "collect": {"start": created + 5, "end": created + 6, "seconds": 1.0},
    }
    record = {
        "id": f"item-{n}",
        "row": n,
        "state": state,
        "sync_mode": mode,
        "video": f"v{n}.mp4",
        "audio": f"a{n}.wav",
        "video_s": 1.0,
        "audio_s": 1.2,
        "metadata": {"language": language, "title": f"Title {n}"},
        "output": f"item-{n}.mp4",
        "output_key": f"outputs/b1/item-{n}.mp4" if state == "completed" else None,
        "output_uri": f"s3://bk/outputs/b1/item-{n}.mp4" if state == "completed" else None,
        "output_s": 1.0,
        "expected_output_s": 1.0,
        "prediction_id": f"p{n}",
        "prediction_ids": [f"p{n}"],
        "attempts": 1,
        "polls": 2,
        "inference_ms": 900,
        "billable_s": 1.0 if state == "completed" else None,
        "estimate_usd": "0.134000",
        "cost_usd": cost if state == "completed" else None,
        "reused_from": None,
        "reconciled": False,
        "error": None if state == "completed" else "No face detected in the video.",
        "error_kind": None if state == "completed" else "input",
        "hint": None if state == "completed" else "Fix the input.",
        "evidence": None,
        "phases": phases if state == "completed" else {"upload": phases["upload"]},
    }
    record.update(extra)
    return record


def report(items):
    return {
        "batch_id": "b1",
        "name": "catalog",
        "state": "finished",
        "cancelled": False,
        "items": len(items),
        "done": len(items),
        "counts": {
            s: sum(1 for i in items if i["state"] == s)
            for s in ("pending", "running", "completed", "failed", "skipped")
        },
        "estimate_usd": str(Decimal("0.134") * len(items)),
        "spent_usd": "0",
        "reserved_usd": "0",
        "budget_usd": None,
        "created_at": 1000.0,
        "finished_at": 1060.0,
        "manifest": "catalog.csv",
        "model": "sync/lipsync-3",
        "bucket": "bk",
        "price_model": {"rate_per_second_usd": "0.134", "basis": "input_video"},
        "total_billable_s": 2.0,
        "items_detail": items,
    }


def test_summary_counts_money_time_and_groups():
    # Given two German loop items (one failed) and one French remap item
    data = report([item(1), item(2, "failed"), item(3, mode="remap", language="fr", cost="0.2000")])
    s = summarize(data)
    # Then the headline figures add up
    assert s.counts == {"completed": 2, "failed": 1}
    assert (s.items, s.final, s.completed) == (3, 3, 2)
    assert s.billable_s == 2.0 and s.cost_usd == Decimal("0.3340")
    assert s.wall_s == 60.0 and s.items_per_minute == 2.0
    # and cost is broken down by sync_mode and by the language column, dearest first
    assert [(g.value, g.items, g.completed, g.cost_usd) for g in s.by_sync_mode] == [
        ("remap", 1, 1, Decimal("0.2000")),
        ("loop", 2, 1, Decimal("0.1340")),
    ]
    assert [g.value for g in s.by_metadata["language"]] == ["fr", "de"]
    # a column with a different value per item (titles) is not a grouping
    assert "title" not in s.by_metadata
    # and the timeline is relative to the batch's start
    assert s.timeline[0].phases[0] == ("upload", 1.0, 2.0)
    assert s.timeline_span_s == 9.0


@pytest.mark.parametrize("payload", FORMULAS)
def test_neutralise_makes_formula_cells_text(payload):
    assert neutralise(payload) == "'" + payload


def test_csv_has_a_row_per_item_metadata_columns_and_no_live_formula():
    data = report([item(1, title=None), item(2, "failed")])
    data["items_detail"][0]["metadata"] = {"language": "de", "note": FORMULAS[0], "state": "x"}
    rows = list(csv.DictReader(io.StringIO(render(data, "csv").decode())))
    assert [r["id"] for r in rows] == ["item-1", "item-2"]
    assert rows[0]["note"] == "'" + FORMULAS[0]
    # a metadata key that clashes with a report column keeps both
    assert rows[0]["metadata_state"] == "x" and rows[0]["state"] == "completed"
    assert rows[0]["provider_s"] == "3.0" and rows[1]["error"].startswith("No face")
    for row in rows:
        for value in row.values():
            assert not (value or "").startswith(("=", "+", "-", "@", "\t", "\r")), value


def test_html_escapes_manifest_values_and_needs_no_network():
    data = report([item(1), item(2, "failed"), item(3)])
    data["name"] = SCRIPT
    data["items_detail"][0]["metadata"] = {"language": SCRIPT, "note": FORMULAS[0]}
    data["items_detail"][1]["error"] = f"bad input {SCRIPT}"
    page = render(data, "html").decode()
    # The page's only scripts are the item table's data block and its code, the one script
    # the policy allows, by its hash; a payload in the data block cannot close it
    ours = re.findall(r'<script id="items-(?:data|code)"[^>]*>.*?</script>', page, flags=re.S)
    assert len(ours) == 2
    rest = page
    for block in ours:
        rest = rest.replace(block, "")
    assert "<script" not in rest.lower() and "<img" not in page.lower()
    assert "\\u003cscript\\u003e" in ours[0] and "</" not in ours[0].split(">", 1)[1][:-9]
    code = ours[1].split(">", 1)[1][: -len("</script>")]
    digest = base64.b64encode(hashlib.sha256(code.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page  # the summary's groups
    # nothing is fetched: no external source, and a policy that forbids it anyway
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "default-src 'none'" in page
    assert "s3://bk/outputs/b1/item-1.mp4" in page and "Cost by language" in page


def test_markdown_summary_is_inert():
    data = report([item(1), item(2, "failed", error=f"[x](http://evil) | {SCRIPT}")])
    text = render(data, "md").decode()
    assert "**1/2 completed**" in text and "| loop | 2 | 1 |" in text
    assert "<script>" not in text and "](http" not in text
    assert "item\\-2 (row 2, failed)" in text
    assert md_text("a|b\nc") == "a\\|b c"


def test_json_is_the_whole_report_and_every_format_renders():
    data = report([item(1)])
    files = render_all(data)
    assert sorted(files) == sorted(f"report.{fmt}" for fmt in FORMATS)
    assert json.loads(files["report.json"]) == json.loads(json.dumps(data))


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unknown report format"):
        render(report([]), "pdf")  # type: ignore[arg-type]


def test_the_timeline_names_only_what_the_timestamps_prove():
    from pipeline.reporting.data import item_report

    record = {
        "id": "a",
        "created_at": "100",
        "prepare_started_at": "104",  # 4 s in our queue
        "uploaded_at": "105",
        "intent_at": "107",  # 2 s for the account's limits
        "submitted_at": "107.5",
        "last_unfinished_at": "112",  # the provider was still at it then
        "provider_done_at": "130",  # ... and done when our next poll looked
        "finished_at": "131",
        "inference_ms": "3000",
    }
    phases = {k: v["seconds"] for k, v in item_report(record)["phases"].items()}
    assert phases == {
        "queued": 4.0,
        "upload": 1.0,
        "limits": 2.0,
        "provider": 5.0,
        "poll": 18.0,
        "collect": 1.0,
    }
    # Without a poll that found it unfinished, the provider's own inference time is what is
    # known to be the provider's; the rest may be our wait for the poll
    del record["last_unfinished_at"]
    phases = {k: v["seconds"] for k, v in item_report(record)["phases"].items()}
    assert phases["provider"] == 3.5 and phases["poll"] == 19.5
    # A second attempt's wait is not called the limits'
    record["submits"] = "2"
    assert "retried" in item_report(record)["phases"]
    # A prediction sent into the provider's queue started when nothing says: its wait there
    # is the provider's, not a late look of ours
    record["queued"] = "1"
    phases = {k: v["seconds"] for k, v in item_report(record)["phases"].items()}
    assert phases["provider"] == 23.0 and "poll" not in phases


def test_predictions_no_item_has_are_a_red_line_in_every_format():
    data = report([item(1), item(2, "needs_attention")])
    assert "belong to no lipdub item" not in render(data, "html").decode()
    data["audit"] = {
        "predictions": 3,
        "unattributed": [
            {"id": "p-lost", "status": "completed", "may_be": ["item-2"], "estimate_usd": "0.134"}
        ],
        "unattributed_usd": "0.134",
        "complete": True,
    }
    page = render(data, "html").decode()
    assert "1 prediction(s) of the model made in the batch" in page
    assert "<code>p-lost</code> completed (may be item-2)" in page
    assert "UNATTRIBUTED: 1 prediction" in render(data, "md").decode()
    assert summarize(data).unattributed_usd == Decimal("0.134")


def test_charges_the_items_did_not_book_are_a_red_line_in_every_format():
    data = report([item(1), item(2, "failed")])
    assert "NOT IN THE ITEMS' COSTS" not in render(data, "md").decode()
    data["audit"] = {
        "predictions": 2,
        "unattributed": [],
        "unattributed_usd": "0",
        "unbooked": [
            {
                "id": "p-late",
                "item_id": "item-2",
                "status": "completed",
                "pending": False,
                "estimate_usd": "0.134",
                "charged_usd": "0.134",
                "cost_usd": "0.134",
            }
        ],
        "unbooked_usd": "0.134",
        "complete": True,
    }
    summary = summarize(data)
    assert summary.unbooked_usd == Decimal("0.134")
    assert summary.charged_usd == summary.cost_usd + Decimal("0.134")
    page = render(data, "html").decode()
    assert "<code>p-late</code> of item-2, completed" in page
    markdown = render(data, "md").decode()
    assert "NOT IN THE ITEMS' COSTS: 1 prediction\\(s\\)" in markdown
    assert "every charge of the batch: $0\\.27" in markdown


def test_the_streaming_writer_reads_each_item_once_and_writes_what_render_all_does(tmp_path):
    from pipeline.reporting.writer import write_reports

    data = report([item(n, "failed" if n % 3 == 0 else "completed") for n in range(1, 8)])
    data["finished_at"] = 1010.0
    head = {k: v for k, v in data.items() if k != "items_detail"}
    taken = []

    def items():  # a generator: a second pass would find it empty
        for entry in data["items_detail"]:
            taken.append(entry["id"])
            yield entry

    paths = write_reports(
        head, items(), tmp_path, item_count=7, metadata_keys={"language", "title"}, end_s=1010.0
    )
    assert taken == [f"item-{n}" for n in range(1, 8)]
    expected = render_all(data)
    assert {name: path.read_bytes() for name, path in paths.items()} == expected
    assert json.loads(expected["report.json"])["items_detail"] == data["items_detail"]
