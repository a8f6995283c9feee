"""The README's Python example runs as written, against the real parts: the sandbox over
HTTP, Redis, moto's S3, a real Celery worker process; and the API's handle answers in types."""

from __future__ import annotations

import re
import subprocess
import sys
from decimal import Decimal

import pytest

from pipeline.errors import BudgetExceeded, ManifestError
from tests.integration.stack import ROOT, worker_processes, write_manifest
from workers.api import Lipdub

pytestmark = pytest.mark.slow

ITEMS = [("py-a", 1.0, 1.0, "cut_off"), ("py-b", 1.2, 1.0, "loop")]


def readme_example() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- python-example:begin -->", 1)[1].split(
        "<!-- python-example:end -->"
    )[0]
    [code] = re.findall(r"```python\n(.*?)```", block, flags=re.S)
    return code


def test_the_readme_example_runs_a_batch_to_its_end(cli, settings, tmp_path):
    manifest = write_manifest(tmp_path / "catalog", ITEMS)
    (tmp_path / "catalog" / "catalog.csv").write_text(manifest.read_text(encoding="utf-8"))
    with worker_processes(settings, tmp_path, concurrency=2):
        ran = subprocess.run(
            [sys.executable, "-c", readme_example()],
            cwd=tmp_path / "catalog",
            env=cli.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert re.fullmatch(r"b\S+: 2 of 2 completed, \$0\.\d+", lines[0]), ran.stdout
    assert {line.split()[0]: line.split()[1] for line in lines[1:]} == {
        "py-a": "completed",
        "py-b": "completed",
    }
    assert all(line.split()[2].startswith("s3://") for line in lines[1:])


def test_the_api_refuses_a_bad_manifest_and_an_estimate_over_budget_before_any_spend(
    cli, settings, tmp_path, sandbox_server
):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,video,audio\nx,missing.mp4,missing.wav\n", encoding="utf-8")
    manifest = write_manifest(tmp_path / "m", ITEMS)
    with Lipdub(settings) as lipdub:
        with pytest.raises(ManifestError, match="row 1"):
            lipdub.run(bad)
        with pytest.raises(BudgetExceeded, match="nothing was spent"):
            lipdub.run(manifest, budget_usd=Decimal("0.10"))
        # And a batch started is a handle whose answers are typed
        batch = lipdub.run(manifest, name="typed")
        status = batch.status()
        cancelled = batch.cancel()
    assert status.items == 2 and isinstance(status.estimate_usd, Decimal)
    assert status.created_at is not None and status.created_at.tzinfo is not None
    assert cancelled.batch_id == batch.id and not cancelled.finished
    assert sandbox_server.engine.audit_entries() == []  # nothing was submitted: no worker ran
