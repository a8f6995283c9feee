"""Put a plan's local inputs in the bucket from where the files are, while its items start.

Workers never read the filesystem of whoever started the batch: `lipdub run` on a laptop
can drive workers elsewhere. Each distinct file goes once to its content-addressed key
(`storage.media_key`: the sha256 planning measured), skipped when the bucket has it, so a
re-run sends no bytes. A few files go at once (`storage.upload_files_at_once`), in manifest
order; boto3 splits a big one into parts. The key is known before the bytes are sent, so the
batch is recorded first and each item is sent to the workers as soon as its own files are in
the bucket: the provider works on the first items while the rest upload.

A file that cannot be sent (S3 refuses it, it changed since planning) fails only its items,
with the reason; the others go on. `BatchControl` drives this (`pipeline.batches`).

    plan = with_stored(plan, storage)                      # every local input's s3:// copy
    sent = upload_files(local_files(plan, storage.prefix), storage, on_file=ready)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.errors import InputChanged, StorageError
from pipeline.planning import Plan, PlannedInput, PlannedItem
from pipeline.storage import Storage, media_key

Progress = Callable[[int, int], None]
"""Told (bytes done, bytes in all) as uploads go; done counts files found in the bucket too."""
FileDone = Callable[[str, StorageError | None], None]
"""Told (key, None) when a file is in the bucket, or (key, the error) when it cannot be
(InputChanged when its bytes changed since planning)."""

BEAT_EVERY_S = 5.0
"""How often a start that is uploading says so (the batch's `uploads_beat_at`)."""
AHEAD = 8
"""Files handed to the upload threads beyond those going at once, so that a thread that
finishes finds its next file waiting."""
UPLOADER_LAPSE_S = 30.0
"""A start that has not said so for this long stopped: its items' missing files never come."""


def uploader_stopped(batch: Mapping[str, str], now: float) -> bool:
    """True when the batch's start was uploading and has been silent too long (`batch`: the
    batch record's fields)."""
    beat_at = float(batch.get("uploads_beat_at") or 0)
    return batch.get("uploading") == "1" and now - beat_at >= UPLOADER_LAPSE_S


@dataclass(frozen=True)
class Uploaded:
    """What putting a plan's local inputs in the bucket did."""

    files: int
    """Distinct local files the plan names."""
    uploaded: int
    """Of those, sent now."""
    uploaded_bytes: int
    present: int
    """Of those, already in the bucket (sent by an earlier run, or by another batch)."""
    refused: int = 0
    """Of those, not put in the bucket (their items fail, saying why)."""

    def to_fields(self) -> dict[str, int]:
        """The batch record's fields."""
        return {
            "inputs_local": self.files,
            "inputs_uploaded": self.uploaded,
            "inputs_uploaded_bytes": self.uploaded_bytes,
            "inputs_present": self.present,
            "inputs_refused": self.refused,
        }


@dataclass(frozen=True)
class LocalFile:
    """One distinct local file and the key its bytes go to."""

    path: Path
    key: str
    sha256: str
    size_bytes: int


def stored_location(storage: Storage, planned: PlannedInput) -> str:
    """Where a local input's bytes go in the bucket: `s3://bucket/media/sha256/<hex>.<ext>`."""
    return (
        f"s3://{storage.bucket}/{media_key(storage.prefix, planned.sha256, planned.ref.location)}"
    )


def with_stored(plan: Plan, storage: Storage) -> Plan:
    """The plan with each local input's `stored` location set (nothing is sent yet)."""

    def one(planned: PlannedInput) -> PlannedInput:
        if planned.ref.kind != "local":
            return planned
        return replace(planned, stored=stored_location(storage, planned))

    def item(entry: PlannedItem) -> PlannedItem:
        return replace(entry, video=one(entry.video), audio=one(entry.audio))

    return replace(plan, items=tuple(item(entry) for entry in plan.items))


def local_files(plan: Plan, prefix: str) -> dict[str, LocalFile]:
    """The plan's distinct local files by key, in manifest order."""
    files: dict[str, LocalFile] = {}
    for item in plan.items:
        for planned in (item.video, item.audio):
            if planned.ref.kind != "local":
                continue
            key = media_key(prefix, planned.sha256, planned.ref.location)
            if key not in files:
                path = planned.ref.path
                files[key] = LocalFile(path, key, planned.sha256, _size(path))
    return files


def upload_files(
    files: Mapping[str, LocalFile],
    storage: Storage,
    *,
    files_at_once: int = 4,
    on_file: FileDone | None = None,
    on_progress: Progress | None = None,
    beat: Callable[[], None] | None = None,
    executor: Callable[[int], Executor] = ThreadPoolExecutor,
) -> Uploaded:
    """Put these files in the bucket (each skipped when there), `files_at_once` at a time in
    their order. `on_file` is told of each as it ends, in this thread; `beat` is called at
    least every `BEAT_EVERY_S` while files are under way. A refused call is tried again by
    the storage's S3 client itself (a starting process's: `wiring.starter_s3_client`); a file
    still refused fails its items.

    Only a few more files than go at once are handed to the `executor` (threads by default)
    ahead of time (`AHEAD`): waiting on every file of a 10,000-item batch at once made each
    wait cost time in proportion to the files left, quadratic in all (docs/performance.md)."""
    total = sum(f.size_bytes for f in files.values())
    done = 0
    lock = threading.Lock()

    def advance(n_bytes: int) -> None:
        nonlocal done
        with lock:
            done += n_bytes
            if on_progress is not None:
                on_progress(done, total)

    def put(file: LocalFile) -> bool:
        sent = 0

        def on_bytes(n_bytes: int) -> None:
            nonlocal sent
            sent += n_bytes
            advance(n_bytes)

        try:
            uploaded = storage.upload_file(file.path, file.key, file.sha256, on_bytes=on_bytes)
        except InputChanged:
            raise
        except StorageError as err:
            raise StorageError(f"{file.path} could not be put in the bucket: {err}") from err
        advance(file.size_bytes - sent)  # a file found in the bucket counts as done
        return uploaded

    if on_progress is not None:
        on_progress(0, total)
    sent: list[LocalFile] = []
    refused = 0
    at_once = max(1, files_at_once)
    waiting = iter(enumerate(files.items()))
    with executor(at_once) as pool:
        # Each future with its file's place and key; only `at_once + AHEAD` at a time.
        pending: dict[Future[bool], tuple[int, str]] = {}

        def hand_over() -> None:
            for n, (key, file) in waiting:
                pending[pool.submit(put, file)] = (n, key)
                if len(pending) >= at_once + AHEAD:
                    return

        hand_over()
        while pending:
            finished, _ = wait(pending, timeout=BEAT_EVERY_S, return_when=FIRST_COMPLETED)
            if beat is not None:
                beat()
            for future in sorted(finished, key=lambda f: pending[f][0]):
                _, key = pending.pop(future)
                error = future.exception()
                if error is not None and not isinstance(error, StorageError):
                    raise error
                if error is None and future.result():
                    sent.append(files[key])
                refused += error is not None
                if on_file is not None:
                    on_file(key, error)
            hand_over()
    return Uploaded(
        files=len(files),
        uploaded=len(sent),
        uploaded_bytes=sum(f.size_bytes for f in sent),
        present=len(files) - len(sent) - refused,
        refused=refused,
    )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # upload_file says why it cannot be read
