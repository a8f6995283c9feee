"""A batch run with a known API key, with the provider failing in the ways that produce
exception text: the key appears in no log line (workers at DEBUG), no CLI output, no report,
no Redis value and no Celery message (every command Redis ran, message bodies decoded)."""

from __future__ import annotations

import json
import os
import secrets

import pytest

from pipeline.settings import to_environment
from tests.chaos.secrets import RedisMonitor, leaks, redis_values
from tests.conftest import start_sandbox
from tests.integration.conftest import Cli
from tests.integration.stack import ROOT, Stack, stack_settings, write_manifest

pytestmark = pytest.mark.slow

FAULTS = {
    "seed": 11,
    "submit_error_rate": 0.2,
    "submit_drop_rate": 0.2,
    "result_error_rate": 0.2,
    "malformed_rate": 0.1,
    "task_failure_rate": 0.3,
}


def test_the_api_key_appears_nowhere(tmp_path, redis_url, s3_server, bucket):
    key = f"sk-live-{secrets.token_hex(16)}"
    wrong_key = f"sk-wrong-{secrets.token_hex(16)}"
    items = [(f"s-{n}", 0.6 + 0.04 * n, 0.8, "cut_off") for n in range(6)]
    manifest = write_manifest(tmp_path / "catalog", items)
    with start_sandbox(tmp_path, api_keys=[key], faults=FAULTS) as sandbox:
        settings = stack_settings(
            sandbox_url=sandbox.url,
            redis_url=redis_url,
            s3_url=s3_server.url,
            bucket=bucket,
            provider={"api_key": key},
            media={"cache_dir": tmp_path / "cache"},
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIPDUB_")}
        env |= to_environment(settings) | {"PYTHONPATH": str(ROOT), "COLUMNS": "200"}
        cli = Cli(env, tmp_path)
        # A second setup whose key the provider refuses: auth errors must not echo it either,
        # neither the CLI's refusal before any spend nor a worker's (its key wrong, the CLI's
        # right: items fail with 401)
        refused = Cli(env | {"LIPDUB_PROVIDER__API_KEY": wrong_key}, tmp_path)
        with RedisMonitor(redis_url) as monitor:
            with cli.worker(tmp_path / "worker.log", "--loglevel=DEBUG"):
                run = cli("run", str(manifest), "--yes", "--name", "secret", "--create-bucket")
                batch_id = json.loads(cli("batches", "--json").stdout)[0]["batch_id"]
                report = cli("report", batch_id, "--format", "all", "--out", str(tmp_path / "out"))
            refused_plan = refused("run", str(manifest), "--yes", "--force", "--name", "no")
            with refused.worker(tmp_path / "refused.log", "--loglevel=DEBUG"):
                refused_run = cli("run", str(manifest), "--yes", "--force", "--name", "auth")
        stack = Stack(settings)
        written = [stack.storage.get_bytes(k).decode() for k in stack.keys("reports/")]
        stack.close()
    # The runs did happen, through the paths that make error text
    assert run.returncode in (0, 6), run.stderr
    assert refused_run.returncode == 6, refused_run.stderr
    assert refused_plan.returncode == 5 and "refused the API key" in refused_plan.stderr
    assert "auth" in (tmp_path / "refused.log").read_text()
    assert len(written) == 8 and report.returncode == 0
    # And neither key is anywhere lipdub writes
    texts = [
        run.stdout,
        run.stderr,
        refused_run.stdout,
        refused_run.stderr,
        refused_plan.stdout,
        refused_plan.stderr,
        report.stdout,
        (tmp_path / "worker.log").read_text(),
        (tmp_path / "refused.log").read_text(),
        *(path.read_text() for path in (tmp_path / "out").rglob("*") if path.is_file()),
        *written,
        *monitor.commands,
        *redis_values(redis_url),
    ]
    assert len(monitor.commands) > 100, "the monitor saw too little to prove anything"
    assert any("body" in c for c in monitor.commands), "no Celery message was seen"
    for secret in (key, wrong_key):
        assert leaks(secret, texts) == []
    # And no presigned URL's signature was recorded in the ledger or a report
    recorded = [*written, *redis_values(redis_url)]
    for mark in ("Signature=", "X-Amz-Credential"):
        assert leaks(mark, recorded) == []
