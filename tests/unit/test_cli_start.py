"""`lipdub status` and `lipdub batches` start without what only other commands use.

A fresh `lipdub` process pays for every module its command module imports; the media prober
(PyAV), the provider's HTTP client, Celery, boto3, the notices (apprise) and the report
templates together doubled the start of the commands that only read the ledger (issue 20).
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("av", "httpx", "celery", "boto3", "botocore", "apprise", "jinja2", "croniter")


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    shown = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout
    loaded = set(json.loads(shown.splitlines()[-1]))
    return [name for name in HEAVY if name in loaded]


def test_the_command_line_loads_none_of_the_heavy_parts_until_a_command_needs_them():
    assert _loaded_after("import workers.cli") == []


def test_a_session_that_only_reads_the_ledger_builds_no_celery_app_or_bucket_client():
    code = (
        "from pipeline.settings import Settings\n"
        "from workers.session import Session\n"
        "import redis\n"
        "from pipeline.ledger import Ledger\n"
        "s = Session(Settings(), redis.Redis(), Ledger(redis.Redis()))\n"
        "s.ledger, s.settings"
    )
    assert _loaded_after(code) == []


def test_the_probe_sees_a_heavy_import():
    # The check above would pass vacuously if the probe could not see an import at all.
    assert _loaded_after("import celery, av") == ["av", "celery"]
