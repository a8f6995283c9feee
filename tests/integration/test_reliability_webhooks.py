"""Webhooks as the fast path, polling as the safety net: real sandbox deliveries to the
receiver, real worker processes. Forged, stale and replayed deliveries are refused over HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import httpx
import pytest
from pydantic import SecretStr

from pipeline.due import DueSteps
from pipeline.provider.webhooks import sign
from pipeline.sandbox.config import SandboxConfig
from pipeline.webhook_inbox import WebhookInbox
from tests.conftest import free_port, start_sandbox
from tests.integration.conftest import LIPDUB
from tests.integration.stack import accepted_submits, plan, worker_processes, write_manifest
from workers.tasks import CeleryDispatcher
from workers.webhooks import WebhookServer

pytestmark = pytest.mark.slow

ITEMS = [("w-0", 0.6, 0.8, "loop"), ("w-1", 0.8, 0.8, "bounce"), ("w-2", 1.0, 0.8, "remap")]
FIRST_POLL_S = 6.0
SECRET = SandboxConfig().webhook_secret


def _late_polls(webhook_url: str) -> dict[str, dict[str, object]]:
    """Polls that come late (6 s after the submit), so a webhook visibly comes first."""
    return {
        "provider": {"webhook_url": webhook_url},
        "polling": {
            "first_poll_min_s": FIRST_POLL_S,
            "max_interval_s": FIRST_POLL_S,
            "expected_fixed_s": FIRST_POLL_S,
            # Without the account's watch, which would see every end within a second too
            "watch_every_s": 0.0,
        },
    }


def _receiver(stack, port=0):
    """`lipdub webhooks` for the stack, on `port`."""
    inbox = WebhookInbox(stack.ledger, SecretStr(SECRET))
    return WebhookServer(
        inbox,
        CeleryDispatcher(
            stack.app,
            stack.settings.worker.queue,
            due=DueSteps(stack.redis, stack.settings.worker.queue),
        ),
        port=port,
    )


def _waits_s(stack, batch_id):
    """Per item, seconds from the prediction id to the start of collecting."""
    records = [stack.ledger.item(batch_id, item_id) for item_id, *_ in ITEMS]
    return [float(r["collect_started_at"]) - float(r["submitted_at"]) for r in records]


def test_a_webhook_is_the_fast_path_and_forgeries_and_replays_are_refused(tmp_path, make_stack):
    port = free_port()
    manifest = write_manifest(tmp_path / "m", ITEMS)
    with start_sandbox(tmp_path) as sandbox:
        stack = make_stack(sandbox, **_late_polls(f"http://127.0.0.1:{port}/webhooks"))
        with (
            _receiver(stack, port) as receiver,
            worker_processes(stack.settings, tmp_path, concurrency=2),
        ):
            batch_id = stack.control.start(plan(manifest, stack.settings))
            status = stack.wait(batch_id, timeout_s=60)
            prediction_id = stack.ledger.item(batch_id, "w-0")["prediction_id"]
            # When deliveries the provider did not sign, or signed long ago, or already sent,
            # arrive at the receiver over HTTP
            body = json.dumps({"id": prediction_id, "status": "completed"}).encode()
            now = int(time.time())
            answers = {
                name: httpx.post(receiver.url, content=body, headers=headers).status_code
                for name, headers in [
                    ("valid", sign(SECRET, "msg_t1", now, body).as_dict()),
                    ("replayed", sign(SECRET, "msg_t1", now, body).as_dict()),
                    ("forged", sign("whsec_attacker", "msg_t2", now, body).as_dict()),
                    ("stale", sign(SECRET, "msg_t3", now - 3600, body).as_dict()),
                ]
            }
        delivered = [v for v in receiver.verdicts if v.wake is not None]
        submits = accepted_submits(sandbox.url)
    # Then every item completed long before its first scheduled poll: the webhook woke it
    assert status["counts"]["completed"] == len(ITEMS), status
    assert max(_waits_s(stack, batch_id)) < FIRST_POLL_S / 2, _waits_s(stack, batch_id)
    assert len(delivered) >= len(ITEMS)
    # And the forged, stale and replayed deliveries were refused
    assert answers == {"valid": 202, "replayed": 409, "forged": 401, "stale": 401}
    assert len(submits) == len(ITEMS)


def test_a_missed_webhook_is_covered_by_polling(tmp_path, make_stack):
    # Given a webhook URL where nothing listens (the receiver is down)
    manifest = write_manifest(tmp_path / "m", ITEMS)
    with start_sandbox(tmp_path, webhook_attempts=1) as sandbox:
        stack = make_stack(sandbox, **_late_polls(f"http://127.0.0.1:{free_port()}/webhooks"))
        with worker_processes(stack.settings, tmp_path, concurrency=2):
            batch_id = stack.control.start(plan(manifest, stack.settings))
            status = stack.wait(batch_id, timeout_s=60)
        deliveries = list(sandbox.engine.webhook_deliveries)
    # Then the deliveries failed, and the scheduled polls completed every item anyway
    assert len(deliveries) == len(ITEMS) and all("error" in d for d in deliveries), deliveries
    assert status["counts"]["completed"] == len(ITEMS), status
    assert min(_waits_s(stack, batch_id)) >= FIRST_POLL_S - 0.5, _waits_s(stack, batch_id)


def test_lipdub_webhooks_serves_through_the_entry_point(cli, tmp_path):
    # `lipdub webhooks` asks the provider for the secret, listens, and refuses a forgery
    proc = subprocess.Popen(
        [*LIPDUB, "webhooks", "--port", "0"],
        cwd=tmp_path,
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, (line, proc.stderr)
        url = line.split("listening on ", 1)[1].split(";", 1)[0]
        body = b'{"id": "p1"}'
        forged = sign("whsec_attacker", "m1", int(time.time()), body).as_dict()
        answer = httpx.post(url, content=body, headers=forged)
        assert answer.status_code == 401 and "signature" in answer.text
        real = sign(SECRET, "m2", int(time.time()), body).as_dict()
        assert httpx.post(url, content=body, headers=real).status_code == 202
    finally:
        proc.send_signal(signal.SIGTERM)
        out, errors = proc.communicate(timeout=20)
    assert proc.returncode == 0, errors
    assert "webhooks stopped" in out


def test_lost_submits_nothing_else_tells_apart_are_settled_by_their_deliveries(
    tmp_path, make_stack
):
    # Given two lost submits whose outputs last the same (so polling alone cannot tell them
    # apart: see test_pipeline_gates), a list without inputs, and the receiver running
    port = free_port()
    items = [("blind-a", 1.0, 1.0, "bounce"), ("blind-b", 1.1, 1.0, "bounce")]
    manifest = write_manifest(tmp_path / "m", items)
    with start_sandbox(tmp_path, faults={"submit_drop_rate": 1.0}) as sandbox:
        stack = make_stack(sandbox, provider={"webhook_url": f"http://127.0.0.1:{port}/webhooks"})
        with (
            _receiver(stack, port) as receiver,
            worker_processes(stack.settings, tmp_path, concurrency=2),
        ):
            batch_id = stack.control.start(plan(manifest, stack.settings))
            status = stack.wait(batch_id, timeout_s=90)
        submits = accepted_submits(sandbox.url)
    # Then each delivery's inputs settled its submit: both completed, each posted once
    assert status["counts"] == {**status["counts"], "completed": 2}, status
    assert len(submits) == 2
    assert sum("its inputs are kept" in v.message for v in receiver.verdicts) == 2
    report = stack.control.report(batch_id)["items_detail"]
    assert all(i["reconciled"] for i in report)
    assert sorted(i["prediction_id"] for i in report) == sorted(s["prediction_id"] for s in submits)


def test_a_chunked_delivery_is_read_whole(tmp_path, make_stack, sandbox):
    stack = make_stack(sandbox)
    stack.ledger.index_prediction("p-chunked", "b1:ep1")
    body = json.dumps({"id": "p-chunked", "status": "completed"}).encode()
    headers = sign(SECRET, "p-chunked", int(time.time()), body).as_dict()

    def chunks():
        yield body[:10]
        yield body[10:]

    with _receiver(stack) as receiver:
        answer = httpx.post(receiver.url, content=chunks(), headers=headers)
    assert answer.status_code == 202, answer.text
    assert "polling b1:ep1" in answer.text


def test_hundreds_of_idle_and_slow_connections_do_not_keep_a_delivery_out(cli, tmp_path):
    import socket

    import psutil

    # Given `lipdub webhooks` as deployed
    proc = subprocess.Popen(
        [*LIPDUB, "webhooks", "--port", "0"], cwd=tmp_path, env=cli.env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    held: list[socket.socket] = []
    try:
        line = proc.stdout.readline()
        url = line.split("listening on ", 1)[1].split(";", 1)[0]
        port = int(url.split(":")[2].split("/")[0])
        receiver = psutil.Process(proc.pid)
        threads_before = receiver.num_threads()
        # When 500 clients connect and send nothing, and 20 more send half a request
        for n in range(520):
            conn = socket.create_connection(("127.0.0.1", port))
            if n >= 500:
                conn.sendall(b"POST /webhooks HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            held.append(conn)
        # Then a signed delivery is still taken
        body = b'{"id": "p-busy"}'
        real = sign(SECRET, "m-busy", int(time.time()), body).as_dict()
        started = time.monotonic()
        answer = httpx.post(url, content=body, headers=real, timeout=10)
        took_s = time.monotonic() - started
        assert answer.status_code == 202, answer.text
        # And the receiver holds no thread per connection, and little memory for them
        assert receiver.num_threads() <= threads_before + 8
        memory_mb = receiver.memory_info().rss / 1e6
        print(
            f"\ndelivery taken in {took_s * 1000:.0f} ms beside 520 open connections; "
            f"{receiver.num_threads()} threads, {memory_mb:.0f} MB"
        )
        # And the idle ones are closed by the receiver after its idle timeout
        deadline = time.monotonic() + 30
        while len([c for c in receiver.net_connections() if c.status == "ESTABLISHED"]) > 20:
            assert time.monotonic() < deadline, "idle connections were never closed"
            time.sleep(0.5)
    finally:
        for conn in held:
            conn.close()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    assert proc.returncode == 0
