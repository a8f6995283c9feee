"""A Celery app for a worker that kills itself at one point (`celery -A tests.chaos.crash_app`).

The same app as `workers.app`, built from the same LIPDUB_ settings, with the Runtime's
clients wrapped by `tests.chaos.crash`. Which point, where the marker goes and what dies come
from CHAOS_CRASH_POINT, CHAOS_CRASH_MARKER and CHAOS_CRASH_SCOPE.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from celery import Celery

from pipeline.remote import make_s3_client
from pipeline.runtime import Runtime
from pipeline.settings import load_settings
from tests.chaos.crash import ALL_CRASH_POINTS, CrashingTransport, CrashSwitch, hook_s3
from workers.app import create_app


@functools.cache
def crashing_app() -> Celery:
    """The app, its Runtime's clients watched by a crash switch."""
    settings = load_settings()

    def crashing_runtime() -> Runtime:
        switch = CrashSwitch(
            ALL_CRASH_POINTS[os.environ["CHAOS_CRASH_POINT"]],
            Path(os.environ["CHAOS_CRASH_MARKER"]),
            os.environ.get("CHAOS_CRASH_SCOPE", "worker"),
        )
        storage = settings.storage
        s3 = make_s3_client(endpoint_url=storage.endpoint_url, region=storage.region)
        return Runtime.from_settings(
            settings, s3=hook_s3(s3, switch), transport=CrashingTransport(switch)
        )

    return create_app(settings, runtime_factory=crashing_runtime)


def __getattr__(name: str) -> Any:
    # `celery -A tests.chaos.crash_app` looks up `app`: built then, from the environment.
    if name == "app":
        return crashing_app()
    raise AttributeError(name)
