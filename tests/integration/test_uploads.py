"""`lipdub run` puts the manifest's local files in the bucket from where they are, before its
items are sent: workers that cannot see those files (another machine, another tree) complete
the batch, each file is sent once, and a re-run sends nothing."""

from __future__ import annotations

import json
import time

import pytest

from pipeline import keys
from pipeline.batches import BatchControl
from tests.integration.conftest import Cli
from tests.integration.stack import accepted_submits, in_process_worker, plan, write_manifest

pytestmark = pytest.mark.slow

ITEMS = [("intro", 1.0, 1.4, "loop"), ("outro", 1.2, 0.8, "cut_off"), ("promo", 0.8, 0.8, "remap")]


def wait_finished(cli: Cli, batch_id: str, timeout_s: float = 90.0) -> dict:
    """Wait (the test, not a worker) until `lipdub status` says the batch finished."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = json.loads(cli("status", batch_id, "--json").stdout)
        if status["state"] == "finished":
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.5)


def test_workers_that_cannot_see_the_files_complete_the_batch(cli, stack, sandbox_server, tmp_path):
    # Given a catalog on the user's machine, and no worker running yet
    laptop = tmp_path / "laptop"
    manifest = write_manifest(laptop / "catalog", ITEMS)
    # When the user starts the batch
    started = cli("run", str(manifest), "--yes", "--detach")
    assert started.returncode == 0, started.stderr + started.stdout
    # (six files, five contents: outro's and promo's audio are the same 0.8 s, sent once)
    assert "Uploaded 5 of 5 local files" in started.stderr
    batch_id = started.stdout.split("Started batch ")[1].split(":")[0]
    # and the files are gone from every path the manifest names before a worker starts,
    # in a tree of its own
    laptop.rename(tmp_path / "elsewhere")
    assert not manifest.exists()
    server_side = tmp_path / "server"
    server_side.mkdir()
    with Cli(cli.env, server_side).worker(tmp_path / "worker.log"):
        status = wait_finished(cli, batch_id)
    # Then every item completed from the bucket's copies, each file sent once
    assert status["counts"]["completed"] == 3, status
    assert len(stack.keys("media/sha256/")) == 5
    assert len(accepted_submits(sandbox_server.url)) == 3
    for item_id, *_ in ITEMS:
        record = stack.ledger.item(batch_id, item_id)
        for ref in (record["video_ref"], record["audio_ref"]):
            assert ref.startswith(f"s3://{stack.settings.storage.bucket}/media/sha256/")
    # And running the manifest again (its files back where they were) sends no byte and
    # pays for nothing
    (tmp_path / "elsewhere").rename(laptop)
    with Cli(cli.env, server_side).worker(tmp_path / "worker2.log"):
        again = cli("run", str(manifest), "--yes", "--detach")
        assert again.returncode == 0, again.stderr + again.stdout
        assert "Uploaded 0 of 5 local files (0.0 MB); 5 were in the bucket already" in (
            again.stderr
        )
        second = wait_finished(cli, again.stdout.split("Started batch ")[1].split(":")[0])
    assert second["counts"]["completed"] == 3
    assert len(accepted_submits(sandbox_server.url)) == 3


def test_a_worker_refuses_a_local_file_nobody_uploaded(stack, sandbox_server, tmp_path):
    # Given a batch recorded with a local input but no bucket copy (a start that skipped
    # the upload: e.g. a batch recorded before lipdub uploaded from the client)
    manifest = write_manifest(tmp_path / "catalog", ITEMS[:1])
    planned = plan(manifest, stack.settings)
    bare = BatchControl(stack.ledger, stack.control.dispatcher, stack.settings)
    with pytest.raises(ValueError, match="storage"):
        bare.start(planned)
    batch_id = stack.control.start(planned)
    record = stack.ledger.item(batch_id, "intro")
    video = json.loads(record["video"])
    assert video["stored"].startswith("s3://")
    del video["stored"]
    stack.redis.hset(keys.item(batch_id, "intro"), "video", json.dumps(video))
    # When a worker prepares it
    with in_process_worker(stack):
        status = stack.wait(batch_id)
    # Then the item fails for its input, saying why, and nothing is paid
    assert status["counts"]["failed"] == 1, status
    failed = stack.ledger.item(batch_id, "intro")
    assert "not put in the bucket" in failed["error"]
    assert accepted_submits(sandbox_server.url) == []


def test_an_item_waits_while_its_start_uploads_and_fails_clearly_if_the_start_stopped(
    stack, sandbox_server, tmp_path
):
    # Given a batch whose start recorded it and then stopped before uploading one file (its
    # item has no bucket copy and was never told its files are there)
    manifest = write_manifest(tmp_path / "catalog", ITEMS[:2])
    batch_id = stack.control.start(plan(manifest, stack.settings))
    video = json.loads(stack.ledger.item(batch_id, "intro")["video"])
    stack.storage.delete(video["stored"].split("/", 3)[3])
    stack.redis.hdel(keys.item(batch_id, "intro"), "inputs_ready")
    # while the start still says it is uploading
    stack.ledger.update_batch(batch_id, {"uploading": True, "uploads_beat_at": time.time()})
    with in_process_worker(stack):
        # Then the item waits for its file, while the other completes
        deadline = time.monotonic() + 30
        while stack.ledger.item(batch_id, "outro")["state"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert stack.ledger.item(batch_id, "intro")["state"] == "pending"
        # When the start has not said so for longer than it ever would
        stack.ledger.update_batch(batch_id, {"uploads_beat_at": time.time() - 60})
        status = stack.wait(batch_id, timeout_s=30)
    # Then the item fails for its input, naming the file and what to do, unpaid
    failed = stack.ledger.item(batch_id, "intro")
    assert status["counts"] == {**status["counts"], "completed": 1, "failed": 1}
    assert "intro.mp4 is not in the bucket" in failed["error"]
    assert "lipdub run" in failed["hint"]
    assert len(accepted_submits(sandbox_server.url)) == 1
