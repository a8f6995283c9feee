"""The sandbox's provider logic, apart from HTTP: keys, limits, tasks, money, audit, webhooks.

Tasks over the concurrency limit wait in a queue (status `created`), as the real service
does; starts beyond `starts_per_minute` in a sliding 60 s window are refused with a wait.
Every submit, accepted or not, is one line of the JSONL audit log.
"""

from __future__ import annotations

import bisect
import builtins
import collections
import hashlib
import json
import logging
import math
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import av
import av.error
import httpx

from pipeline.errors import MediaError
from pipeline.media import MediaInfo, probe
from pipeline.provider import webhooks
from pipeline.sandbox.config import SandboxConfig
from pipeline.sandbox.faults import DOWNLOAD_FAILED_CODE, FaultPlan, content_key
from pipeline.sandbox.render import render
from pipeline.sync_modes import ALLOWED_SYNC_MODES, SyncMode

log = logging.getLogger("lipdub.sandbox")


class InputRejected(Exception):
    """The submit's body is not acceptable (a field missing or of the wrong form): answered
    400 with this message, before anything is created."""


class DownloadFailed(Exception):
    """An input could not be fetched: the task is created, then fails with code 1402."""


class MediaRejected(Exception):
    """An input was fetched and is not media the model takes (unreadable, a stream missing,
    over a limit): the task is created, then fails with code 1401. The provider can only tell
    once it has the file, which its docs put after the task's creation (a download that fails
    is a failed task, `DOWNLOAD_FAILED_CODE`), so this is no refused submit either."""

    def __init__(self, message: str, video_s: float = 0.0) -> None:
        super().__init__(message)
        self.video_s = video_s
        """The video's duration where it could be read (a failed task's charge is priced on
        it), else 0."""


INVALID_MEDIA_CODE = 1401
"""WaveSpeed's "Invalid Parameter: the parameter value is invalid" (docs/error-codes)."""


@dataclass
class Task:
    """One prediction as the sandbox keeps it."""

    id: str
    model: str
    key: str
    """Fault key: the inputs' content and which submit of them this was (`<content>#<n>`),
    so a re-submitted pair meets fresh faults while a replayed run meets the same ones."""
    inputs: dict[str, str]
    created_at: datetime
    """UTC, at the microsecond precision the API shows, so list filters match it exactly."""
    video_path: Path
    audio_path: Path
    video_s: float
    status: str = "created"
    outputs: list[str] = field(default_factory=list)
    error: str = ""
    code: int = 0
    """WaveSpeed's error code of a failed task (0 otherwise): 1xxx input, 5xxx service."""
    download_error: str = ""
    """Set when the inputs could not be fetched: the task fails with code 1402."""
    media_error: str = ""
    """Set when a fetched input is not acceptable media: the task fails with code 1401."""
    charged_usd: Decimal = Decimal(0)
    started_at: float | None = None
    finished_at: float | None = None
    inference_ms: int | None = None
    webhook_url: str | None = None
    polls: int = 0

    def to_data(self, base_url: str, *, include_input: bool) -> dict[str, Any]:
        """The prediction object as the API shows it."""
        data: dict[str, Any] = {
            "id": self.id,
            "model": self.model,
            "outputs": list(self.outputs),
            "urls": {"get": f"{base_url}/api/v3/predictions/{self.id}/result"},
            "has_nsfw_contents": [False for _ in self.outputs],
            "status": self.status,
            "created_at": self.created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "error": self.error,
            "code": self.code,
            "timings": {"inference": self.inference_ms} if self.inference_ms is not None else {},
        }
        if include_input:
            data["input"] = dict(self.inputs)
        return data


class StartAnswer(NamedTuple):
    """The per-minute window's answer to a submit."""

    wait_s: float | None
    """None when the start is taken, else how long until one is free."""
    stamp: float
    """The taken start's name for `answered_start` / `release_start` (0.0 when refused)."""
    counted_ts: tuple[float, ...] = ()
    """Refused: when each start in the window was counted (wall-clock seconds), for the
    audit: what a client's pacing is checked against."""


class SandboxEngine:
    """State and behaviour of the emulated provider. Thread-safe."""

    def __init__(self, config: SandboxConfig, base_url: Callable[[], str]) -> None:
        self.config = config
        self.base_url = base_url
        self.faults = FaultPlan(config.faults)
        self._own_workdir = config.workdir is None
        self.workdir = config.workdir or Path(tempfile.mkdtemp(prefix="lipdub-sandbox-"))
        for sub in ("inputs", "outputs", "uploads"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._tasks: dict[str, Task] = {}
        self._starts: list[float] = []
        """When each start in the window was counted, oldest first."""
        self._wall_offset_s = time.time() - time.monotonic()
        self._submits_per_key: collections.Counter[str] = collections.Counter()
        self._audit: list[dict[str, Any]] = []
        self.balance_usd = config.initial_balance_usd
        self.billed_usd = Decimal(0)
        self.webhook_deliveries: list[dict[str, Any]] = []
        self.stats: collections.Counter[str] = collections.Counter()
        """in_flight / peak_in_flight (tasks not yet final, queued ones too), processing /
        peak_processing (tasks started: never more than `max_concurrent`), rate_limited
        (429s), polls, lists (list calls)."""
        self._pool = ThreadPoolExecutor(config.max_concurrent, thread_name_prefix="sandbox-task")
        self._http = httpx.Client(timeout=config.fetch_timeout_s, follow_redirects=True)

    # ------------------------------------------------------------ account

    def key_ok(self, authorization: str | None) -> bool:
        """True when the Authorization header carries an accepted bearer key."""
        if not authorization or not authorization.startswith("Bearer "):
            return False
        return authorization.removeprefix("Bearer ").strip() in self.config.api_keys

    def reserve_start(self) -> StartAnswer:
        """Take a start from the per-minute window. The stamp names the start to
        `answered_start` and `release_start`. The clock is read under the lock: a reading
        taken before it, in a thread that then waits for the lock, would judge the window as
        it was earlier and count a start that had just left it."""
        with self._lock:
            now = time.monotonic()
            window_s = self.config.rate_window_s
            while self._starts and now - self._starts[0] >= window_s:
                self._starts.pop(0)
            if len(self._starts) >= self.config.starts_per_minute:
                self.stats["rate_limited"] += 1
                return StartAnswer(
                    max(0.0, window_s - (now - self._starts[0])),
                    0.0,
                    tuple(self._wall(t) for t in self._starts),
                )
            bisect.insort(self._starts, now)
            self.stats["max_starts_in_window"] = max(
                self.stats["max_starts_in_window"], len(self._starts)
            )
            return StartAnswer(None, now)

    def answered_start(self, stamp: float) -> float:
        """The POST of the start taken at `stamp` is being answered: with
        `starts_counted_at = "answer"`, its window runs from now instead. Returns when the
        start is counted from (wall-clock seconds), for the audit."""
        with self._lock:
            if self.config.starts_counted_at == "answer" and stamp in self._starts:
                self._starts.remove(stamp)
                stamp = time.monotonic()
                bisect.insort(self._starts, stamp)
            return self._wall(stamp)

    def _wall(self, monotonic_s: float) -> float:
        """A monotonic reading as wall-clock seconds (the audit's and lipdub's clock), to
        the millisecond."""
        return round(monotonic_s + self._wall_offset_s, 3)

    def release_start(self, stamp: float) -> None:
        """Give back the start taken at `stamp` (the submit was refused after all)."""
        with self._lock:
            if stamp in self._starts:
                self._starts.remove(stamp)
            self.stats["released_starts"] += 1

    # ------------------------------------------------------------ submit

    def count_submit(self, key: str) -> int:
        """How many submits of this content key came before this one (0 for the first)."""
        with self._lock:
            seen = self._submits_per_key[key]
            self._submits_per_key[key] += 1
            return seen

    def fetch_inputs(self, body: dict[str, Any]) -> tuple[Path, Path, str, str, str]:
        """Validate the body and download both inputs: (video, audio, sha256s, content key).

        Raises InputRejected for a body that is wrong (answered 400), DownloadFailed when
        an input cannot be fetched (the task is created and fails with code 1402) and
        MediaRejected for an input over `max_input_mb` (created, then failed with 1401).
        """
        video_url, audio_url = body.get("video"), body.get("audio")
        mode = body.get("sync_mode", SyncMode.CUT_OFF.value)
        for name, value in (("video", video_url), ("audio", audio_url)):
            if not isinstance(value, str) or not value:
                raise InputRejected(f"{name} is required")
            if not value.startswith(("http://", "https://")):
                raise InputRejected(f"{name} must be an http(s) URL")
        if mode not in ALLOWED_SYNC_MODES:
            raise InputRejected(
                f"sync_mode must be one of {', '.join(ALLOWED_SYNC_MODES)}, got {mode!r}"
            )
        assert isinstance(video_url, str) and isinstance(audio_url, str)
        video_path, video_sha = self._download(video_url, "video")
        audio_path, audio_sha = self._download(audio_url, "audio")
        key = content_key(video_sha, audio_sha, mode)
        return video_path, audio_path, video_sha, audio_sha, key

    def _download(self, url: str, name: str) -> tuple[Path, str]:
        """Stream one input to the work directory, hashing it; a partial file never stays."""
        digest = hashlib.sha256()
        target = self.workdir / "inputs" / uuid.uuid4().hex
        limit = self.config.max_input_mb * 1024 * 1024
        try:
            with self._http.stream("GET", url) as response:
                if response.status_code != 200:
                    raise DownloadFailed(name)
                received = 0
                with target.open("wb") as out:
                    for chunk in response.iter_bytes():
                        received += len(chunk)
                        if received > limit:
                            raise MediaRejected(
                                f"{name} is larger than {self.config.max_input_mb} MB"
                            )
                        digest.update(chunk)
                        out.write(chunk)
        except httpx.HTTPError as err:
            target.unlink(missing_ok=True)
            raise DownloadFailed(name) from err
        except (MediaRejected, DownloadFailed):
            target.unlink(missing_ok=True)
            raise
        sha = digest.hexdigest()
        final = target.with_name(sha)
        target.replace(final)
        return final, sha

    def validate_media(self, video_path: Path, audio_path: Path) -> tuple[MediaInfo, MediaInfo]:
        """What the real service fails a task for once it has the inputs (MediaRejected):
        unreadable media, missing streams, limits."""
        try:
            video = probe(video_path)
        except MediaError as err:
            raise MediaRejected("invalid video: not a readable media file") from err
        try:
            audio = probe(audio_path)
        except MediaError as err:
            raise MediaRejected(
                "invalid audio: not a readable media file", video.duration_s
            ) from err
        if not video.has_video:
            raise MediaRejected("invalid video: no video stream", video.duration_s)
        if not audio.has_audio:
            raise MediaRejected("invalid audio: no audio stream", video.duration_s)
        if (video.width or 0) > self.config.max_width or (
            video.height or 0
        ) > self.config.max_height:
            raise MediaRejected(
                f"video resolution {video.width}x{video.height} exceeds "
                f"{self.config.max_width}x{self.config.max_height}",
                video.duration_s,
            )
        for label, info in (("video", video), ("audio", audio)):
            if info.duration_s <= 0:
                raise MediaRejected(f"invalid {label}: zero duration", video.duration_s)
            if info.duration_s > self.config.max_duration_s:
                raise MediaRejected(
                    f"{label} is {info.duration_s:.1f}s, over the {self.config.max_duration_s:.0f}s limit",
                    video.duration_s,
                )
        return video, audio

    def create(
        self,
        body: dict[str, Any],
        video_path: Path,
        audio_path: Path,
        key: str,
        video_s: float,
        webhook_url: str | None,
        *,
        download_error: str = "",
        media_error: str = "",
    ) -> Task:
        """Create a task and queue it for processing (one whose inputs could not be fetched
        fails with code 1402 once processed, as WaveSpeed documents; one whose inputs are not
        acceptable media, with code 1401)."""
        task = Task(
            id=uuid.uuid4().hex,
            model=self.config.model_path,
            key=key,
            inputs={
                "video": str(body["video"]),
                "audio": str(body["audio"]),
                "sync_mode": str(body.get("sync_mode", SyncMode.CUT_OFF.value)),
            },
            created_at=datetime.now(UTC),
            video_path=video_path,
            audio_path=audio_path,
            video_s=video_s,
            webhook_url=webhook_url,
            download_error=download_error,
            media_error=media_error,
        )
        if self.faults.hits("pending", key):
            task.status = "pending"
        with self._lock:
            self._tasks[task.id] = task
            self.stats["in_flight"] += 1
            self.stats["peak_in_flight"] = max(
                self.stats["peak_in_flight"], self.stats["in_flight"]
            )
        self._pool.submit(self._process, task)
        return task

    def audit(self, entry: dict[str, Any]) -> None:
        """Record one submit (any outcome) in memory and in the JSONL log."""
        entry = {"ts": time.time(), **entry}
        log.info(
            "submit %s%s",
            entry.get("outcome"),
            f" {entry['prediction_id']} ({entry.get('sync_mode')})"
            if entry.get("prediction_id")
            else "",
        )
        with self._lock:
            self._audit.append(entry)
            if self.config.audit_log is not None:
                self.config.audit_log.parent.mkdir(parents=True, exist_ok=True)
                with self.config.audit_log.open("a", encoding="utf-8") as out:
                    out.write(json.dumps(entry, sort_keys=True) + "\n")

    def stats_snapshot(self) -> dict[str, int]:
        """A copy of the counters (in_flight, peak_in_flight, processing, peak_processing,
        rate_limited, polls), and how many times each fault happened as `fault_<name>`."""
        with self._lock:
            counters = dict(self.stats)
        return counters | {f"fault_{k}": v for k, v in self.faults.injected_counts().items()}

    def task_states(self) -> list[dict[str, Any]]:
        """Every task's id, status, created_at, charge, and when it started and ended
        processing (epoch s, or None), for tests that judge what was paid (a completed task
        was charged, a failed one was not unless `charge_failed`, and one still running may
        yet be) and how the account's slots were used."""
        with self._lock:
            return [
                {
                    "prediction_id": task.id,
                    "status": task.status,
                    "code": task.code,
                    "created_at": task.created_at.isoformat(),
                    "charged_usd": str(task.charged_usd),
                    "started_at": task.started_at,
                    "finished_at": task.finished_at,
                }
                for task in self._tasks.values()
            ]

    def bill(self) -> dict[str, str]:
        """What the account was charged in all, and its balance, as decimal strings."""
        with self._lock:
            return {"billed_usd": str(self.billed_usd), "balance_usd": str(self.balance_usd)}

    def quote_usd(self, inputs: dict[str, Any]) -> Decimal:
        """The price of one task with these inputs (`POST /api/v3/model/pricing`): the
        formula applied to `inputs.duration`, the video's seconds. Raises InputRejected
        when the duration is missing (the formula needs it)."""
        duration = inputs.get("duration")
        if isinstance(duration, bool) or not isinstance(duration, int | float) or duration < 0:
            raise InputRejected("inputs.duration (seconds of input video) is required")
        return self.config.pricing.price_usd(float(duration))

    def audit_entries(self) -> list[dict[str, Any]]:
        """A copy of every audit entry so far."""
        with self._lock:
            return list(self._audit)

    # ------------------------------------------------------------ processing

    def _process(self, task: Task) -> None:
        try:
            self._run(task)
        except Exception:  # a sandbox bug must not kill the pool thread silently
            log.exception("sandbox task %s crashed", task.id)
            self._finish(task, "failed", error="Internal sandbox error. Please retry.")

    def _run(self, task: Task) -> None:
        if self._stop.is_set():
            return
        started = time.monotonic()
        with self._lock:
            task.status = "processing"
            task.started_at = time.time()
            self.stats["processing"] += 1
            self.stats["peak_processing"] = max(
                self.stats["peak_processing"], self.stats["processing"]
            )
        if task.download_error or task.media_error:
            if self._stop.wait(self.config.processing_fixed_s):
                return
            if task.download_error:
                self._finish(task, "failed", error=task.download_error, code=DOWNLOAD_FAILED_CODE)
            else:
                self._finish(task, "failed", error=task.media_error, code=INVALID_MEDIA_CODE)
            return
        if self.faults.hits("never_finish", task.key):
            return  # stays `processing`; frees its slot
        duration_s = self.config.processing_s(task.video_s, task.audio_path.name)
        error, code = self._task_error(task)
        output: Path | None = None
        if error is None:
            output = self.workdir / "outputs" / f"{task.id}.mp4"
            render(
                task.video_path,
                task.audio_path,
                SyncMode(task.inputs["sync_mode"]),
                output,
                max_width=self.config.output_max_width,
                memory_budget_mb=self.config.render_memory_mb,
            )
        remaining = duration_s - (time.monotonic() - started)
        if remaining > 0 and self._stop.wait(remaining):
            return
        task.inference_ms = int((time.monotonic() - started) * 1000)
        if error is not None:
            self._finish(task, "failed", error=error, code=code)
        elif self.faults.hits("odd_status", task.key):
            self._finish(task, self.faults.odd_status(task.key))
        else:
            assert output is not None
            expires = math.ceil(time.time() + self.config.output_url_ttl_s)
            self._finish(
                task,
                "completed",
                outputs=[f"{self.base_url()}/files/outputs/{output.name}?expires={expires}"],
            )

    def _task_error(self, task: Task) -> tuple[str | None, int]:
        """The error a task fails with and its code, or (None, 0)."""
        marker = self.config.no_face_marker
        if marker:
            try:
                with av.open(str(task.video_path)) as container:
                    if marker in str(container.metadata.get("comment", "")):
                        return (
                            "No face detected in the video. Use a video with a clearly visible face.",
                            1403,
                        )
            except av.error.FFmpegError:
                return "invalid video: not a readable media file", 1401
        if self.faults.hits("download_failure", task.key):
            return "Failed to download video from the provided URL.", DOWNLOAD_FAILED_CODE
        if self.faults.hits("task_failure", task.key):
            return self.faults.task_error(task.key)
        return None, 0

    def _finish(
        self,
        task: Task,
        status: str,
        *,
        error: str = "",
        code: int = 0,
        outputs: list[str] | None = None,
    ) -> None:
        with self._lock:
            self.stats["in_flight"] -= 1
            if task.started_at is not None:
                self.stats["processing"] -= 1
            task.status = status
            task.error = error
            task.code = code
            task.outputs = outputs or []
            task.finished_at = time.time()
            if status == "completed" or self.config.charge_failed:
                task.charged_usd = self.config.pricing.price_usd(task.video_s)
                self.balance_usd -= task.charged_usd
                self.billed_usd += task.charged_usd
        if task.webhook_url:
            threading.Thread(target=self._deliver_webhook, args=(task,), daemon=True).start()

    def _deliver_webhook(self, task: Task) -> None:
        """POST the finished prediction to its webhook, retrying a failed delivery. Every try
        carries the same `webhook-id` (the prediction's, as in WaveSpeed's example delivery)
        with a fresh timestamp and signature."""
        assert task.webhook_url is not None
        body = json.dumps(
            task.to_data(self.base_url(), include_input=self.config.webhook_includes_inputs)
        ).encode()
        for attempt in range(1, self.config.webhook_attempts + 1):
            signed = webhooks.sign(self.config.webhook_secret, task.id, int(time.time()), body)
            record: dict[str, Any] = {"prediction_id": task.id, "attempt": attempt}
            try:
                response = self._http.post(
                    task.webhook_url,
                    content=body,
                    headers={"Content-Type": "application/json", **signed.as_dict()},
                )
                record["status_code"] = response.status_code
                ok = 200 <= response.status_code < 300
            except httpx.HTTPError as err:
                record["error"] = type(err).__name__
                ok = False
            with self._lock:
                self.webhook_deliveries.append(record)
            if ok or self._stop.wait(0.5 * attempt):
                return

    # ------------------------------------------------------------ queries

    def get(self, prediction_id: str) -> Task | None:
        """The task with this id, counting the poll."""
        with self._lock:
            task = self._tasks.get(prediction_id)
            if task is not None:
                task.polls += 1
                self.stats["polls"] += 1
            return task

    def snapshot(self, task: Task) -> dict[str, Any]:
        """The task's API view (the submit's and the result call's), taken under the lock."""
        with self._lock:
            return task.to_data(self.base_url(), include_input=self.config.result_includes_inputs)

    def list(
        self,
        *,
        created_after: datetime | None,
        created_before: datetime | None,
        model: str | None,
        status: str | None,
    ) -> list[dict[str, Any]]:
        """Every task matching the filters, most recent first, as API objects."""
        with self._lock:
            self.stats["lists"] += 1
            tasks = sorted(self._tasks.values(), key=lambda t: t.created_at, reverse=True)
            out = []
            for task in tasks:
                if created_after and task.created_at < created_after:
                    continue
                if created_before and task.created_at > created_before:
                    continue
                if model and task.model != model:
                    continue
                if status and task.status != status:
                    continue
                out.append(
                    task.to_data(self.base_url(), include_input=self.config.list_includes_inputs)
                )
            return out

    def billings(self, prediction_ids: set[str] | None) -> builtins.list[dict[str, Any]]:
        """Billing records (`POST /api/v3/billings/search`), most recent first: one `deduct`
        per task from its creation, its order `pre` while the price is held, `done` once
        charged, `released` when the task ended uncharged (WaveSpeed documents `pre` and
        `done`; the release is the sandbox's reading of a failed task that costs nothing)."""
        with self._lock:
            tasks = sorted(self._tasks.values(), key=lambda t: t.created_at, reverse=True)
            out = []
            for task in tasks:
                if prediction_ids is not None and task.id not in prediction_ids:
                    continue
                ended = task.status in ("completed", "failed", "cancelled", "timeout", "deleted")
                state = "pre" if not ended else "done" if task.charged_usd else "released"
                price = task.charged_usd or self.config.pricing.price_usd(task.video_s)
                out.append(self._billing_record(task, "deduct", price, state, "0"))
            return out

    def _billing_record(
        self, task: Task, kind: str, price_usd: Decimal, state: str, n: str
    ) -> dict[str, Any]:
        price: float | int = float(price_usd)
        if self.config.billing_price_unit == "micro_usd":
            price = int(price_usd * 1_000_000)
        stamp = task.created_at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        return {
            "uuid": f"{task.id}b{n}",
            "billing_type": kind,
            "price": price,
            "created_at": stamp,
            "updated_at": stamp,
            "order": {"uuid": f"{task.id}o", "state": state, "price": price, "origin_price": price},
            "prediction": {"uuid": task.id, "model_uuid": task.model, "status": task.status},
        }

    def stop(self) -> None:
        """Stop processing (queued tasks are dropped) and free the work directory if ours."""
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._http.close()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
