"""Every batch command through the real entry point (`python -m workers.cli`), on the real parts:
a redis-server, `lipdub worker` processes, moto's S3 server and the sandbox over HTTP."""

from __future__ import annotations

import csv
import io
import json
import signal
import time
from pathlib import Path

import pytest

from pipeline.samples import write_audio, write_video
from tests.conftest import free_port
from tests.integration.listener import Listener
from tests.integration.stack import (
    accepted_submits,
    write_manifest,
)

pytestmark = pytest.mark.slow

ITEMS = [("intro", 1.0, 1.4, "loop"), ("outro", 1.2, 0.8, "cut_off"), ("promo", 0.8, 0.8, "remap")]


@pytest.fixture
def manifest(tmp_path):
    return write_manifest(tmp_path / "catalog", ITEMS)


def test_run_follows_the_batch_and_writes_every_report(
    cli, manifest, stack, sandbox_server, tmp_path
):
    # Given a worker started with `lipdub worker`
    with cli.worker(tmp_path / "worker.log"):
        # When a user runs the manifest and lets it follow to the end
        result = cli("run", str(manifest), "--yes", "--name", "de-catalog", "--out", "reports")
    # Then it exits 0 with a summary naming the reports, written locally and in the bucket
    assert result.returncode == 0, result.stderr + result.stdout
    assert "Started batch" in result.stderr and "3/3 final" in result.stderr
    batch_id = result.stderr.split("Started batch ")[1].split(":")[0]
    local = tmp_path / "reports" / batch_id
    assert sorted(p.name for p in local.iterdir()) == [
        "report.csv", "report.html", "report.json", "report.md",
    ]  # fmt: skip
    assert f"Reports: {Path('reports') / batch_id / 'report.json'}" in result.stdout
    assert "completed │     3" in result.stdout
    assert stack.keys(f"reports/{batch_id}/") == [
        f"reports/{batch_id}/report.{ext}" for ext in ("csv", "html", "json", "md")
    ]
    data = json.loads((local / "report.json").read_text())
    assert data["name"] == "de-catalog" and data["counts"]["completed"] == 3
    # The bucket's copy, which --detach, compose and schedule users read, says finished too
    written = json.loads(stack.storage.get_bytes(f"reports/{batch_id}/report.json"))
    assert written["state"] == "finished" and written["finished_at"]
    page = stack.storage.get_bytes(f"reports/{batch_id}/report.html").decode()
    assert f"{batch_id}</code> · finished" in page
    assert len(accepted_submits(sandbox_server.url)) == 3


def test_detach_status_report_and_batches_give_scripts_json(cli, manifest, tmp_path):
    # Given a batch started detached (no worker yet: it waits in the queue)
    started = cli("run", str(manifest), "--yes", "--detach", "--json")
    assert started.returncode == 0, started.stderr
    batch_id = json.loads(started.stdout)["batch_id"]
    # Then status shows it pending, and batches lists it
    status = json.loads(cli("status", batch_id, "--json").stdout)
    assert status["state"] == "running" and status["counts"]["pending"] == 3
    listed = json.loads(cli("batches", "--json").stdout)
    assert [b["batch_id"] for b in listed] == [batch_id]
    # When a worker comes, status --follow follows it to the end
    with cli.worker(tmp_path / "worker.log"):
        followed = cli("status", batch_id, "--follow", "--json", "--out", "r")
    assert followed.returncode == 0, followed.stderr
    assert json.loads(followed.stdout)["counts"]["completed"] == 3
    # And every report format is printed or written on demand
    md = cli("report", batch_id)
    assert md.returncode == 0 and "**3/3 completed**" in md.stdout
    rows = list(csv.DictReader(io.StringIO(cli("report", batch_id, "--format", "csv").stdout)))
    assert [r["id"] for r in rows] == ["intro", "outro", "promo"]
    assert {r["language"] for r in rows} == {"de"}
    html = cli("report", batch_id, "--format", "html", "--out", "page.html")
    assert html.returncode == 0 and "<!DOCTYPE html>" in (tmp_path / "page.html").read_text()
    written = cli("report", batch_id, "--format", "all", "--out", "all")
    assert written.returncode == 0 and len(list((tmp_path / "all").iterdir())) == 4
    table = cli("batches")
    assert batch_id in table.stdout and "3/3" in table.stdout


def test_cancel_then_retry_failed(cli, manifest, sandbox_server, tmp_path):
    # Given a batch started while no worker runs, then cancelled
    batch_id = json.loads(cli("run", str(manifest), "--yes", "--detach", "--json").stdout)[
        "batch_id"
    ]
    cancelled = cli("cancel", batch_id)
    assert cancelled.returncode == 0 and "nothing more will be submitted" in cancelled.stdout
    with cli.worker(tmp_path / "worker.log"):
        # When the worker comes, every item ends cancelled, and nothing was paid
        ended = cli("status", batch_id, "--follow", "--json", "--out", "r")
        assert ended.returncode == 6, ended.stderr
        assert json.loads(ended.stdout)["counts"]["cancelled"] == 3
        assert accepted_submits(sandbox_server.url) == []
        # When the user retries, the items run and complete
        retried = cli("retry-failed", batch_id, "--out", "r")
    assert retried.returncode == 0, retried.stderr
    assert "Retrying 3 items" in retried.stderr
    assert len(accepted_submits(sandbox_server.url)) == 3
    assert "nothing to retry" in cli("retry-failed", batch_id).stdout


def test_ctrl_c_while_following_leaves_the_batch_running(cli, manifest, tmp_path):
    # Given a run following a batch that no worker has picked up yet
    proc = cli.popen("run", str(manifest), "--yes")
    deadline = time.monotonic() + 60
    seen = ""
    # (it says that no worker is there yet, and follows)
    while "No worker answered yet" not in seen and time.monotonic() < deadline:
        seen += proc.stderr.readline()
    # When the user presses Ctrl-C
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    # Then it exits 130 saying how to follow again, and the batch is still there and running
    assert proc.returncode == 130, stderr
    batch_id = seen.split("Started batch ")[1].split(":")[0]
    assert f"lipdub status {batch_id} --follow" in stderr and "Traceback" not in stderr
    assert json.loads(cli("status", batch_id, "--json").stdout)["state"] == "running"
    with cli.worker(tmp_path / "worker.log"):
        assert cli("status", batch_id, "--follow", "--out", "r").returncode == 0


def test_over_budget_and_unconfirmed_runs_spend_nothing(cli, manifest, sandbox_server):
    over = cli("run", str(manifest), "--yes", "--budget", "0.10")
    assert over.returncode == 4 and "over the budget $0.1" in over.stderr
    unconfirmed = cli("run", str(manifest), LIPDUB_BUDGET__CONFIRM_ABOVE_USD="0.01")
    assert unconfirmed.returncode == 2 and "add --yes" in unconfirmed.stderr
    assert json.loads(cli("batches", "--json").stdout) == []
    assert accepted_submits(sandbox_server.url) == []


def test_errors_are_one_line_with_an_exit_code(cli, manifest):
    unknown = cli("status", "b-nope")
    assert unknown.returncode == 7 and "lipdub batches" in unknown.stderr
    assert cli("report", "b-nope").returncode == 7
    assert cli("cancel", "b-nope").returncode == 7
    dead = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    down = cli("batches", LIPDUB_REDIS__URL=dead)
    assert down.returncode == 5 and "cannot reach Redis at redis://:***@127.0.0.1" in down.stderr
    assert "s3cret" not in down.stderr and "Traceback" not in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1
    debug = cli("--debug", "batches", LIPDUB_REDIS__URL=dead)
    assert "Traceback" in debug.stderr and "s3cret" not in debug.stderr
    bad_format = cli("report", "b-nope", "--format", "pdf")
    assert bad_format.returncode == 2 and "Invalid value for '--format'" in bad_format.stderr


def test_retry_failed_asks_before_spending_and_leaves_input_errors_alone(
    cli, sandbox_server, tmp_path
):
    # Given a finished batch with an item the provider refused for its input (no face)
    folder = tmp_path / "m"
    write_manifest(folder, [("ok-1", 1.0, 1.0, "cut_off"), ("ok-2", 1.2, 1.0, "loop")])
    write_video(folder / "face.mp4", 1.0, metadata={"comment": "lipdub:no-face"})
    write_audio(folder / "face.wav", 1.0)
    manifest = folder / "manifest.csv"
    manifest.write_text(manifest.read_text() + "noface,face.mp4,face.wav,cut_off,de\n")
    batch_id = json.loads(cli("run", str(manifest), "--yes", "--detach", "--json").stdout)[
        "batch_id"
    ]
    with cli.worker(tmp_path / "worker.log"):
        finished = json.loads(cli("status", batch_id, "--follow", "--json", "--out", "r").stdout)
    assert finished["counts"]["completed"] == 2 and finished["counts"]["failed"] == 1
    submits = len(accepted_submits(sandbox_server.url))
    # When the user retries it with no terminal to ask on, above the confirmation threshold
    asked = cli(
        "retry-failed", batch_id, "--include-input-errors", LIPDUB_BUDGET__CONFIRM_ABOVE_USD="0"
    )
    # Then it spends nothing and says how to go on
    assert asked.returncode == 2 and "--yes" in asked.stderr
    # And without --include-input-errors the refused item is left alone
    assert "nothing to retry" in cli("retry-failed", batch_id, "--yes").stdout
    assert len(accepted_submits(sandbox_server.url)) == submits


def test_reports_that_cannot_be_written_locally_are_one_line_not_a_traceback(
    cli, manifest, tmp_path
):
    # Given a --out that is a file, not a folder
    (tmp_path / "taken").write_text("a file")
    with cli.worker(tmp_path / "worker.log"):
        result = cli("run", str(manifest), "--yes", "--out", "taken")
    # Then the batch's summary is still printed, and one line says where the reports are
    assert "Traceback" not in result.stderr
    assert result.returncode == 5, result.stderr
    assert "completed │     3" in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith("lipdub:")]
    assert len(lines) == 1 and "the local reports could not be written" in lines[0]
    batch_id = result.stderr.split("Started batch ")[1].split(":")[0]
    assert f"reports/{batch_id}/report.json" in lines[0]
    # And `report --out` into the same file fails in one line too
    again = cli("report", batch_id, "--format", "all", "--out", "taken")
    assert again.returncode == 5 and "Traceback" not in again.stderr
    assert again.stderr.startswith("lipdub: ") and "taken" in again.stderr


def test_a_rerun_of_a_paid_manifest_is_free_in_the_plan_the_budget_and_the_question(
    cli, manifest, sandbox_server, tmp_path
):
    # Given a manifest run to the end once
    with cli.worker(tmp_path / "worker.log"):
        first = cli("run", str(manifest), "--yes", "--out", "r")
        assert first.returncode == 0, first.stderr
        paid = len(accepted_submits(sandbox_server.url))
        # When it is planned and run again with a budget of a cent and no --yes
        planned = json.loads(cli("plan", str(manifest), "--json").stdout)
        again = cli("run", str(manifest), "--budget", "0.01", "--out", "r")
    # Then the plan says every item is paid for already, and the run is neither refused
    # nor asked about: it completes from the earlier outputs, paying nothing
    assert planned["payable_usd"] == "0" and set(planned["free"].values()) == {"paid earlier"}
    assert again.returncode == 0, again.stderr
    assert "0 (paid earlier)" in again.stdout and "Estimate: $0.00" in again.stdout
    assert len(accepted_submits(sandbox_server.url)) == paid


def test_a_pair_repeated_in_a_manifest_is_counted_once(cli, tmp_path):
    folder = tmp_path / "m"
    write_manifest(folder, [("a", 1.0, 1.0, "cut_off")])
    (folder / "twice.csv").write_text(
        "id,video,audio,sync_mode\nfirst,a.mp4,a.wav,cut_off\nsecond,a.mp4,a.wav,cut_off\n"
    )
    planned = json.loads(cli("plan", str(folder / "twice.csv"), "--json").stdout)
    prices = {i["id"]: i["price_usd"] for i in planned["items"]}
    assert planned["payable_usd"] == prices["first"]
    assert planned["free"] == {"second": "repeats first"}


def test_run_with_notify_tells_each_target_once_in_its_own_format(cli, manifest, stack, tmp_path):
    # Given a local receiver standing for a generic JSON webhook and for a Mattermost server
    with Listener() as listener, cli.worker(tmp_path / "worker.log"):
        # When a batch is run with two --notify targets
        result = cli(
            "run", str(manifest), "--yes", "--name", "told",
            "--notify", listener.json_url, "--notify", listener.mattermost_url,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr + result.stdout
        batch_id = result.stderr.split("Started batch ")[1].split(":")[0]
        deadline = time.monotonic() + 30
        while len(listener.bodies) < 2:
            assert time.monotonic() < deadline, listener.bodies
            time.sleep(0.1)
        time.sleep(1.0)  # (a duplicate would come now)
    # Then each target got one notice, in its own shape, saying how the batch ended
    by_path = dict(zip(listener.paths, listener.bodies, strict=True))
    assert len(listener.bodies) == 2
    generic = by_path["/hooks/T000/B000/secret-token"]
    assert generic["title"] == "lipdub"
    assert f"**told**: batch `{batch_id}` finished: 3/3 completed" in generic["message"]
    mattermost = by_path["/hooks/secret-token"]
    assert mattermost["username"] == "lipdub"
    assert f"batch `{batch_id}` finished: 3/3 completed" in mattermost["text"]
    # And the URLs (secrets) appear in no report, log line or batch record
    report = (tmp_path / "lipdub-reports" / batch_id / "report.json").read_text()
    for text in (report, result.stdout, result.stderr, (tmp_path / "worker.log").read_text()):
        assert "secret-token" not in text
    assert "secret-token" not in json.dumps(stack.redis.hgetall(f"lipdub:batch:{batch_id}"))


def test_run_refuses_a_notify_url_apprise_cannot_use_before_anything_is_spent(
    cli, manifest, sandbox_server
):
    result = cli("run", str(manifest), "--yes", "--notify", "https://example.com/secret-hook")
    assert result.returncode != 0
    assert "--notify #1: not a URL apprise knows" in result.stderr
    assert "secret-hook" not in result.stderr + result.stdout
    assert accepted_submits(sandbox_server.url) == []


def test_workers_notify_urls_tell_of_every_batch_and_a_failing_target_is_tried_again(
    cli, manifest, tmp_path
):
    # Given workers whose settings name two notice targets, one of which fails at first
    with Listener() as good, Listener(status=500) as flaky:
        urls = json.dumps([good.json_url, flaky.json_url])
        with cli.worker(tmp_path / "worker.log", LIPDUB_NOTIFY__URLS=urls):
            # When a batch runs without --notify, and the flaky target recovers later
            result = cli("run", str(manifest), "--yes", "--name", "plain")
            assert result.returncode == 0, result.stderr + result.stdout
            deadline = time.monotonic() + 30
            while not good.bodies:
                assert time.monotonic() < deadline, "the settings' target was not told"
                time.sleep(0.1)
            flaky.status = 200
            while not flaky.bodies:
                assert time.monotonic() < deadline + 30, "the failing target was not tried again"
                time.sleep(0.1)
            time.sleep(1.0)
    # Then both were told once: the one reached first was not sent the notice again
    assert len(good.bodies) == 1 and len(flaky.bodies) == 1
    assert "**plain**: batch" in good.texts()[0] and "3/3 completed" in good.texts()[0]


def test_prune_shrinks_finished_items_and_nothing_is_lost_or_paid_twice(
    cli, manifest, stack, sandbox_server, tmp_path
):
    # Given a finished batch
    with cli.worker(tmp_path / "worker.log"):
        started = cli("run", str(manifest), "--yes", "--detach", "--json")
        batch_id = json.loads(started.stdout)["batch_id"]
        deadline = time.monotonic() + 60
        while json.loads(cli("status", batch_id, "--json").stdout)["state"] != "finished":
            assert time.monotonic() < deadline
            time.sleep(0.5)
        full = json.loads(cli("report", batch_id, "--format", "json").stdout)
        items = [f"lipdub:item:{batch_id}:{item_id}" for item_id, *_ in ITEMS]
        before = [stack.redis.memory_usage(key) for key in items]
        claims = [f"lipdub:content:{stack.redis.hget(key, 'identity')}" for key in items]
        # When it is pruned (as workers do once it is LIPDUB_LEDGER__RETENTION_DAYS old)
        pruned = cli("prune", "--older-than", "0", "--json")
        assert json.loads(pruned.stdout) == [{"batch_id": batch_id, "items": 3}], pruned.stderr
        # Then the items' records are gone, and what each keeps is packed with its batch: a
        # few hundred bytes instead of kilobytes
        packed = f"lipdub:batch:{batch_id}:kept"
        assert not any(stack.redis.exists(key) for key in items)
        after = stack.redis.memory_usage(packed) / len(items)
        print(f"\nbytes per item: {before} -> {after:.0f}")
        assert after <= 500 < min(before)
        # And lives as long as the pairs' claims (LIPDUB_WORKER__CONTENT_TTL_DAYS, 30), no longer
        for claim in claims:
            assert stack.redis.ttl(claim) > 29 * 86_400
            assert abs(stack.redis.ttl(packed) - stack.redis.ttl(claim)) <= 5
        # And its report and status read as before (the report from the bucket)
        assert json.loads(cli("report", batch_id, "--format", "json").stdout) == full
        status = json.loads(cli("status", batch_id, "--json").stdout)
        assert status["counts"]["completed"] == 3 and status["state"] == "finished"
        # And pruning again changes nothing; running the manifest again pays for nothing
        assert json.loads(cli("prune", "--older-than", "0", "--json").stdout) == []
        again = cli("run", str(manifest), "--yes", "--json")
        assert again.returncode == 0, again.stderr
    assert len(accepted_submits(sandbox_server.url)) == 3
    # And the outputs reused from the compacted batch were checked for length as before
    rerun = json.loads(
        cli("report", json.loads(again.stdout)["batch_id"], "--format", "json").stdout
    )
    assert {(i["state"], i["reused_from"] is not None) for i in rerun["items_detail"]} == {
        ("completed", True)
    }
    assert all(i["output_s"] for i in rerun["items_detail"]), "the earlier output's length"
    # and the re-run's audit, whose time overlaps the compacted batch's, still tells that
    # batch's predictions apart from charges no lipdub item holds
    assert rerun["audit"]["unattributed"] == [], rerun["audit"]
    # And once the items have lapsed (as Redis drops them with their claims), asking for one
    # says so and where it is still told
    first = ITEMS[0][0]
    assert json.loads(cli("status", batch_id, "--item", first, "--json").stdout)["state"] == (
        "completed"
    )
    stack.redis.delete(f"lipdub:batch:{batch_id}:kept")
    gone = cli("status", batch_id, "--item", first)
    assert gone.returncode != 0 and "lapsed after batch" in gone.stderr, gone.stderr
    assert f"lipdub report {batch_id}" in gone.stderr
    assert json.loads(cli("report", batch_id, "--format", "json").stdout) == full


def test_workers_compact_a_batch_once_its_retention_is_over(cli, manifest, stack, tmp_path):
    # Given workers keeping finished batches whole for no time at all, sweeping every second
    settings = {"LIPDUB_LEDGER__RETENTION_DAYS": "0", "LIPDUB_WORKER__SWEEP_INTERVAL_S": "1"}
    with cli.worker(tmp_path / "worker.log", **settings):
        # When a batch finishes
        result = cli("run", str(manifest), "--yes")
        assert result.returncode == 0, result.stderr
        batch_id = result.stderr.split("Started batch ")[1].split(":")[0]
        # Then a worker compacts it by itself
        deadline = time.monotonic() + 30
        while not stack.redis.hget(f"lipdub:batch:{batch_id}", "compacted_at"):
            assert time.monotonic() < deadline, "the batch was never compacted"
            time.sleep(0.2)
    assert "3 completed item(s) compacted" in (tmp_path / "worker.log").read_text()
    assert not stack.redis.zscore("lipdub:retention", batch_id)
