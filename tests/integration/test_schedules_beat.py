"""`lipdub beat` for real: two beat processes, a `lipdub worker`, a schedule every two seconds,
a manifest dropped in a local inbox, and a local listener for the notification. Then the
active beat is killed and the other one takes over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import redis

from pipeline.ledger import Ledger
from pipeline.settings import to_environment
from tests.integration.conftest import LIPDUB, Cli
from tests.integration.listener import Listener
from tests.integration.stack import ROOT, Stack, accepted_submits, stack_settings, write_manifest


def wait_for(condition, timeout_s: float, what: str) -> None:
    """The test waits (workers never do)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout_s} s")
        time.sleep(0.2)


def start_beat(env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [*LIPDUB, "beat"],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_two_beats_start_a_dropped_manifest_once_file_it_with_its_report_and_notify(
    tmp_path, sandbox_server, redis_url, s3_server, bucket
):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with Listener() as listener:
        schedules = {
            "schedules": {
                "every2s": {
                    "cron": "* * * * * */2",
                    "timezone": "UTC",
                    "inbox": str(inbox),
                    "notify_url": listener.json_url,
                }
            }
        }
        settings = stack_settings(
            sandbox_url=sandbox_server.url,
            redis_url=redis_url,
            s3_url=s3_server.url,
            bucket=bucket,
            media={"cache_dir": tmp_path / "cache"},
            schedule={
                "yaml": json.dumps(schedules),
                "tick_s": 0.5,
                "lock_timeout_s": 3.0,
                "inbox_settle_s": 0.5,
            },
        )
        Stack(settings).close()  # makes the bucket
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIPDUB_")}
        env.update(to_environment(settings))
        env["PYTHONPATH"] = str(ROOT)
        cli = Cli(env, tmp_path)
        with cli.worker(tmp_path / "worker.log"):
            # Given two beat processes started together (one by mistake)
            beats = [start_beat(env, tmp_path, tmp_path / f"beat-{n}.log") for n in range(2)]
            try:
                # When a manifest is dropped in the inbox
                items = [(f"n{n}", 1.0, 1.0 + n / 10, "cut_off") for n in range(3)]
                write_manifest(inbox, items)
                # Then it is picked up, run, and filed in done/ with its report beside it
                done = inbox / "done"
                wait_for(lambda: (done / "manifest.report.json").exists(), 120, "the filed report")
                wait_for(lambda: listener.bodies, 30, "the notification")
                # And the beats keep ticking without starting it again
                time.sleep(3)
                # When the active beat is killed, the one standing by takes over
                logs = [tmp_path / f"beat-{n}.log" for n in range(2)]
                [active] = [n for n in range(2) if "now the active" in logs[n].read_text()]
                os.killpg(beats[active].pid, signal.SIGKILL)
                beats[active].wait()
                text = write_manifest(inbox / "second", [("m0", 1.2, 1.0, "loop")]).read_text()
                partial = inbox / ".second.csv.part"  # hidden: never picked up half-written
                partial.write_text(text.replace(",m0.", ",second/m0."))
                partial.rename(inbox / "second.csv")
                wait_for(lambda: (done / "second.report.json").exists(), 120, "the standby's run")
                standby = logs[1 - active].read_text()
                assert "now the active scheduler" in standby
            finally:
                for beat in beats:
                    stop(beat)
    logs = [(tmp_path / f"beat-{n}.log").read_text() for n in range(2)]
    worker_log = (tmp_path / "worker.log").read_text()
    ledger = Ledger(redis.Redis.from_url(redis_url, decode_responses=True))
    batch_ids = ledger.batch_ids(10)
    assert len(batch_ids) == 2, "one batch per manifest"
    batch_id = next(b for b in batch_ids if ledger.batch(b).inbox_manifest == "manifest.csv")
    assert len(accepted_submits(sandbox_server.url)) == 4, "each pair paid for once"
    assert (inbox / "done" / "manifest.csv").exists()
    assert not (inbox / "manifest.csv").exists()
    assert not (inbox / "processing" / "manifest.csv").exists()
    report = json.loads((inbox / "done" / "manifest.report.json").read_text())
    assert report["batch_id"] == batch_id and report["counts"]["completed"] == 3
    # One notification per batch: its end, as Markdown in a Slack-compatible body.
    texts = listener.texts()
    assert len(texts) == 2
    assert sum(f"batch `{batch_id}` finished: 3/3 completed" in t for t in texts) == 1
    # One beat acted; the other stood by until the first was killed.
    assert any("standing by" in log for log in logs), logs
    # The notification URL is a secret: in no log.
    for text_log in (*logs, worker_log):
        assert "secret-token" not in text_log
    # `lipdub schedule list` shows the last outcome.
    listed = cli("schedule", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert row["name"] == "every2s" and row["last"]["trigger"].startswith("run")
