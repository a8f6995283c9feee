"""`lipdub metrics` serves the ledger's figures to Prometheus: scraped over HTTP and parsed
with prometheus_client's own parser, after a real batch (and a real 429)."""

from __future__ import annotations

import subprocess
import threading
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline import keys
from pipeline.local_servers import free_port
from tests.conftest import start_sandbox
from tests.integration.conftest import LIPDUB
from tests.integration.stack import Stack, in_process_worker, plan, worker_processes, write_manifest

pytestmark = pytest.mark.slow


def scrape(url: str, timeout_s: float = 30.0) -> dict[tuple[str, tuple], float]:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            text = httpx.get(url, timeout=5).text
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the exporter never answered"
            time.sleep(0.2)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_exporter_shows_a_finished_batch_and_the_deployment(cli, settings, tmp_path):
    stack = Stack(settings)
    manifest = write_manifest(
        tmp_path / "m", [("m0", 1.0, 1.0, "loop"), ("m1", 1.2, 1.0, "cut_off")]
    )
    with in_process_worker(stack):
        batch_id = stack.control.start(plan(manifest, settings))
        stack.wait(batch_id)
        # (the account's watch ends at its next look, once nothing is followed)
        due = keys.due(settings.worker.queue)
        deadline = time.monotonic() + 30
        while stack.redis.zcard(due) and time.monotonic() < deadline:
            time.sleep(0.1)
    # (one 429, as a worker's submit would record it)
    from pipeline.gates import Gates

    Gates(stack.redis, settings.redis.url, settings.provider, slot_lease_s=60).cool_down(1.0)
    port = free_port()
    exporter = subprocess.Popen(
        [*LIPDUB, "metrics", "--port", str(port)], cwd=tmp_path, env=cli.env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        figures = scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        exporter.terminate()
        exporter.wait(timeout=30)
    batch = (("batch", batch_id),)
    assert figures[("lipdub_items", (*batch, ("state", "completed")))] == 2
    assert figures[("lipdub_items", (*batch, ("state", "failed")))] == 0
    assert figures[("lipdub_spent_usd", batch)] == pytest.approx(0.402)  # 1 s + 2 s at $0.134
    assert figures[("lipdub_polls", batch)] >= 2
    assert figures[("lipdub_rate_limited_total", ())] == 1
    assert figures[("lipdub_workers_alive", ())] == 0
    assert figures[("lipdub_queue_messages", ())] == 0
    assert figures[("lipdub_due_steps", ())] == figures[("lipdub_running_steps", ())] == 0
    assert 0 < figures[("lipdub_provider_seconds", batch)] < 60
    stack.close()


def test_workers_send_the_task_events_flower_shows(tmp_path, make_stack):
    # Given a receiver of Celery's events, as Flower listens
    with start_sandbox(tmp_path) as sandbox:
        stack = make_stack(sandbox)
        seen: list[dict] = []
        with stack.app.connection_for_read() as connection:
            receiver = stack.app.events.Receiver(connection, handlers={"*": seen.append})
            listening = threading.Thread(target=lambda: receiver.capture(limit=None, timeout=60))
            listening.start()
            try:
                # When a real worker runs a batch with the default settings
                manifest = write_manifest(tmp_path / "m", [("e0", 1.0, 1.0, "loop")])
                with worker_processes(stack.settings, tmp_path, concurrency=1):
                    stack.wait(stack.control.start(plan(manifest, stack.settings)))
                    deadline = time.monotonic() + 10
                    while not any(e.get("type") == "task-succeeded" for e in seen):
                        assert time.monotonic() < deadline, "no task event came"
                        time.sleep(0.1)
            finally:
                receiver.should_stop = True
                listening.join(timeout=10)
    # Then each step was announced sent, started and succeeded, naming its batch and item
    names = {e.get("name") for e in seen if e.get("type") == "task-sent"}
    assert {"lipdub.prepare", "lipdub.submit", "lipdub.poll", "lipdub.collect"} <= names
    started = [e for e in seen if e.get("type") == "task-started"]
    assert started and {e.get("type") for e in seen} >= {"task-received", "task-succeeded"}
