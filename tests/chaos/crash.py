"""SIGKILL a worker at a chosen point of an item's life, once, through its injected clients.

The crash is not a patch of lipdub's code: a worker started with `tests.chaos.crash_app`
builds its Runtime as usual, with two injected clients that watch the traffic: an httpx
transport (the provider's calls and the output download) and a boto3 event hook (every S3
call). When the traffic reaches the point, the switch writes a marker file (O_EXCL, so it
fires once per test however many processes share it) and kills:

- scope `worker`: the whole worker, its main process and pool, as if the machine died. Its
  unacknowledged tasks come back only after Redis's visibility timeout.
- scope `pool`: only the pool process running the task, as the kernel's OOM killer would.
  Celery rejects the task (`task_reject_on_worker_lost`) and it runs again at once.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


@dataclass(frozen=True)
class CrashPoint:
    """Where to die: before or after the `nth` request of a kind, counted per process."""

    name: str
    description: str
    via: str
    """`http`: a request through the transport; `s3`: an S3 write (PutObject or a multipart start)."""
    match: str
    """For http, `METHOD path-suffix`; for s3, a key segment such as `/media/`."""
    when: str = "before"
    nth: int = 1


CRASH_POINTS: dict[str, CrashPoint] = {
    point.name: point
    for point in (
        CrashPoint(
            "before_post",
            "after the submit intent is recorded, before the POST",
            "http",
            "POST /api/v3/sync/lipsync-3",
        ),
        CrashPoint(
            "after_post",
            "after the POST, before the prediction id is recorded",
            "http",
            "POST /api/v3/sync/lipsync-3",
            when="after",
        ),
        CrashPoint("poll", "while polling", "http", "GET /result"),
        CrashPoint(
            "collect", "while collecting, the output half copied into the bucket", "s3", "outputs/"
        ),
        CrashPoint("finalize", "while finalizing, some reports written", "s3", "reports/", nth=2),
    )
}


QUEUED_POST = CrashPoint(
    "before_queued_post",
    "before the process's second POST (with one processing, the one that goes to the provider's "
    "queue holding the turn, `pipeline.gates`)",
    "http",
    "POST /api/v3/sync/lipsync-3",
    nth=2,
)
ALL_CRASH_POINTS = {**CRASH_POINTS, QUEUED_POST.name: QUEUED_POST}
"""Every point a crashing worker knows: `CRASH_POINTS` (each item's life, which the chaos
run and the kill tests go through) and the points of a single test."""


class CrashSwitch:
    """Fires once: records where in `marker`, then kills this process or its whole group."""

    def __init__(self, point: CrashPoint, marker: Path, scope: str) -> None:
        if scope not in ("worker", "pool"):
            raise ValueError(f"scope must be worker or pool, not {scope!r}")
        self.point = point
        self.marker = marker
        self.scope = scope
        self.seen = 0

    def observe(self, via: str, what: str, when: str) -> None:
        """Count a matching event; at the `nth`, fire."""
        point = self.point
        if via != point.via or when != point.when or not _matches(point, what):
            return
        self.seen += 1
        if self.seen == point.nth:
            self.fire(what)

    def fire(self, what: str) -> None:
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return  # fired already in this test
        record = {"point": self.point.name, "scope": self.scope, "at": what, "pid": os.getpid()}
        os.write(fd, json.dumps(record).encode())
        os.fsync(fd)
        os.close(fd)
        if self.scope == "pool":
            os.kill(os.getpid(), signal.SIGKILL)
        # The worker runs in a session of its own (see worker_processes): never kill the
        # test runner's group by mistake.
        if os.getpgrp() != os.getsid(0):
            raise RuntimeError("refusing to kill a process group that is not the worker's own")
        os.killpg(os.getpgrp(), signal.SIGKILL)


def _matches(point: CrashPoint, what: str) -> bool:
    if point.via == "http":
        method, _, suffix = point.match.partition(" ")
        got_method, _, path = what.partition(" ")
        return got_method == method and path.endswith(suffix)
    return point.match in what


class CrashingTransport(httpx.BaseTransport):
    """An httpx transport that tells the switch about each request, before and after."""

    def __init__(self, switch: CrashSwitch, inner: httpx.BaseTransport | None = None) -> None:
        self.switch = switch
        self.inner = inner or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        what = f"{request.method} {request.url.path}"
        self.switch.observe("http", what, "before")
        response = self.inner.handle_request(request)
        if self.switch.point.when == "after":
            response.read()  # the provider answered in full: the prediction exists
            self.switch.observe("http", what, "after")
        return response

    def close(self) -> None:
        self.inner.close()


def hook_s3(s3: Any, switch: CrashSwitch) -> Any:
    """Register the switch on the client's writes (boto3's own event system)."""

    def before_call(model: Any, params: dict[str, Any], **_: Any) -> None:
        if model.name in ("PutObject", "CreateMultipartUpload"):
            switch.observe("s3", str(params.get("Key", "")), "before")

    s3.meta.events.register("before-parameter-build.s3", before_call)
    return s3
