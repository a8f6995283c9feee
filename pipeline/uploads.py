"""Put a plan's local inputs in the bucket from where the files are, before its items are sent.

Workers never read the filesystem of whoever started the batch: `lipdub run` on a laptop
can drive workers elsewhere. Each distinct file goes once to its content-addressed key
(`storage.media_key`: the sha256 planning measured), skipped when the bucket has it, so an
interrupted start resumes where it stopped and a re-run sends no bytes. A few files go at
once (`storage.upload_files_at_once`); boto3 splits a big one into parts. A file whose bytes
changed since planning is refused (InputChanged) and nothing of the batch is started.

    plan, sent = upload_local_inputs(plan, storage, files_at_once=4)
    sent.files, sent.uploaded, sent.uploaded_bytes   # 12 distinct, 3 sent now, 41 MB
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.errors import InputChanged, StorageError
from pipeline.planning import Plan, PlannedInput, PlannedItem
from pipeline.storage import Storage, media_key

Progress = Callable[[int, int], None]
"""Told (bytes done, bytes in all) as uploads go; done counts files found in the bucket too."""


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

    def to_fields(self) -> dict[str, int]:
        """The batch record's fields."""
        return {
            "inputs_local": self.files,
            "inputs_uploaded": self.uploaded,
            "inputs_uploaded_bytes": self.uploaded_bytes,
            "inputs_present": self.present,
        }


@dataclass(frozen=True)
class _File:
    path: Path
    key: str
    sha256: str
    size_bytes: int


def upload_local_inputs(
    plan: Plan,
    storage: Storage,
    *,
    files_at_once: int = 4,
    on_progress: Progress | None = None,
) -> tuple[Plan, Uploaded]:
    """The plan with each local input's `stored` location (`s3://bucket/key`) set, after
    its bytes are in the bucket. Raises StorageError (nothing is started: run again to
    resume) or InputChanged (a file changed since planning)."""
    files = _distinct_files(plan, storage.prefix)
    total = sum(f.size_bytes for f in files.values())
    done = 0
    lock = threading.Lock()

    def advance(n_bytes: int) -> None:
        nonlocal done
        with lock:
            done += n_bytes
            if on_progress is not None:
                on_progress(done, total)

    def put(file: _File) -> bool:
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
    results: dict[str, bool] = {}
    if files:
        with ThreadPoolExecutor(max_workers=max(1, files_at_once)) as pool:
            futures = {pool.submit(put, file): key for key, file in files.items()}
            finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in finished if f.exception() is not None]
            if failed:
                for future in futures:
                    future.cancel()
                raise failed[0].exception()  # type: ignore[misc]
            results = {futures[f]: f.result() for f in futures}
    sent = [files[key] for key, uploaded in results.items() if uploaded]
    summary = Uploaded(
        files=len(files),
        uploaded=len(sent),
        uploaded_bytes=sum(f.size_bytes for f in sent),
        present=len(files) - len(sent),
    )
    where = {key: f"s3://{storage.bucket}/{key}" for key in files}
    items = tuple(_stored(item, storage.prefix, where) for item in plan.items)
    return replace(plan, items=items), summary


def _distinct_files(plan: Plan, prefix: str) -> dict[str, _File]:
    files: dict[str, _File] = {}
    for item in plan.items:
        for planned in (item.video, item.audio):
            if planned.ref.kind != "local":
                continue
            key = media_key(prefix, planned.sha256, planned.ref.location)
            if key not in files:
                path = planned.ref.path
                files[key] = _File(path, key, planned.sha256, _size(path))
    return files


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # upload_file says why it cannot be read


def _stored(item: PlannedItem, prefix: str, where: dict[str, str]) -> PlannedItem:
    def one(planned: PlannedInput) -> PlannedInput:
        if planned.ref.kind != "local":
            return planned
        return replace(
            planned, stored=where[media_key(prefix, planned.sha256, planned.ref.location)]
        )

    return replace(item, video=one(item.video), audio=one(item.audio))
