"""An inbox: a local folder or an `s3://` prefix where manifests are dropped.

    inbox/catalog.csv                    dropped, waiting for the schedule's next run
    inbox/processing/catalog.csv         picked up: its batch is running
    inbox/done/catalog.csv               every item completed; the report beside it:
    inbox/done/catalog.report.{md,html,csv,json}
    inbox/failed/catalog.csv             refused (catalog.errors.txt says why) or finished
                                         with items not completed (its report says which)

Only files at the top level with a manifest extension are picked up, and only once they have
not changed for `settle_s` (a copy still being written is left for the next run; an S3
object appears whole, so it needs no settling). A
manifest named like one still in `processing/` waits until that one is done. Moves are
idempotent: moving a file that has been moved already does nothing.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from pipeline.errors import StorageError
from pipeline.remote import split_s3

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


MANIFEST_SUFFIXES = (".csv", ".json", ".jsonl", ".yaml", ".yml")
FOLDERS = ("processing", "done", "failed")


@dataclass(frozen=True)
class Dropped:
    """A manifest in the inbox. `tag` changes whenever its content does."""

    name: str
    tag: str
    modified_s: float
    atomic: bool = False
    """Written in one go (an S3 PUT): never seen half-written, so no need to let it settle."""

    def settling(self, now_s: float, settle_s: float) -> bool:
        """True while it may still be being written: changed less than `settle_s` ago."""
        return not self.atomic and 0 <= now_s - self.modified_s < settle_s

    @property
    def pickup_id(self) -> str:
        """Names this drop of this manifest: the same file dropped again is a new pickup."""
        return f"{self.name}@{self.tag}"


class Inbox(Protocol):
    """Where a schedule's manifests are dropped."""

    location: str

    def dropped(self, folder: str = "") -> list[Dropped]: ...
    def exists(self, folder: str, name: str) -> bool: ...
    def move(self, source: tuple[str, str], target: tuple[str, str]) -> None: ...
    def fetch(self, name: str, folder: str, target_dir: Path) -> Path: ...
    def write(self, folder: str, name: str, body: bytes) -> None: ...
    def inputs_base(self) -> Path | str: ...


def is_manifest(name: str) -> bool:
    """A file name the inbox picks up (not hidden, not a partial upload)."""
    return not name.startswith((".", "~")) and name.lower().endswith(MANIFEST_SUFFIXES)


class LocalInbox:
    """A folder. Moves are renames (atomic on one file system)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.location = str(root)

    def dropped(self, folder: str = "") -> list[Dropped]:
        base = self.root / folder
        if not base.is_dir():
            if not folder:
                raise StorageError(
                    f"the inbox folder {self.root} does not exist: create it, or fix the "
                    "schedule's `inbox`"
                )
            return []
        found = []
        for entry in sorted(os.scandir(base), key=lambda e: e.name):
            if entry.is_file() and is_manifest(entry.name):
                try:
                    digest = hashlib.sha256(Path(entry.path).read_bytes()).hexdigest()[:16]
                    found.append(Dropped(entry.name, digest, entry.stat().st_mtime))
                except FileNotFoundError:
                    continue  # filed meanwhile by another scheduler: not dropped any more
        return found

    def exists(self, folder: str, name: str) -> bool:
        return (self.root / folder / name).is_file()

    def move(self, source: tuple[str, str], target: tuple[str, str]) -> None:
        """Move (folder, name) to (folder, name); nothing when the source is gone (moved)."""
        origin, destination = self.root.joinpath(*source), self.root.joinpath(*target)
        if origin == destination or not origin.is_file():
            return
        destination.parent.mkdir(parents=True, exist_ok=True)
        origin.replace(destination)

    def fetch(self, name: str, folder: str, target_dir: Path) -> Path:
        return self.root / folder / name

    def write(self, folder: str, name: str, body: bytes) -> None:
        target = self.root / folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.part")
        partial.write_bytes(body)
        partial.replace(target)

    def inputs_base(self) -> Path:
        return self.root


class S3Inbox:
    """An `s3://bucket/prefix/`. A move is a copy then a delete (the pickup's Redis claim,
    not the move, is what makes a pickup happen once)."""

    def __init__(self, s3: S3Client, location: str) -> None:
        self.s3 = s3
        self.location = location if location.endswith("/") else location + "/"
        self.bucket, self.prefix = split_s3(self.location)

    def dropped(self, folder: str = "") -> list[Dropped]:
        prefix = self.prefix + (f"{folder}/" if folder else "")
        found = []
        try:
            pages = self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, Delimiter="/"
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(prefix) :]
                    if is_manifest(name):
                        tag = str(obj.get("ETag", "")).strip('"')[:16]
                        modified_s = obj["LastModified"].timestamp()
                        found.append(Dropped(name, tag, modified_s, atomic=True))
        except (BotoCoreError, ClientError) as err:
            raise StorageError(f"could not list the inbox {self.location}: {err}") from err
        return sorted(found, key=lambda d: d.name)

    def exists(self, folder: str, name: str) -> bool:
        try:
            self.s3.head_object(Bucket=self.bucket, Key=self._key(folder, name))
            return True
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise StorageError(f"could not look for {name} in {self.location}: {err}") from err
        except BotoCoreError as err:
            raise StorageError(f"could not look for {name} in {self.location}: {err}") from err

    def move(self, source: tuple[str, str], target: tuple[str, str]) -> None:
        """Copy then delete; nothing when the source is gone (moved already)."""
        origin, destination = self._key(*source), self._key(*target)
        if origin == destination or not self.exists(*source):
            return
        try:
            self.s3.copy_object(
                Bucket=self.bucket,
                Key=destination,
                CopySource={"Bucket": self.bucket, "Key": origin},
            )
            self.s3.delete_object(Bucket=self.bucket, Key=origin)
        except (BotoCoreError, ClientError) as err:
            raise StorageError(f"could not move {origin} in {self.location}: {err}") from err

    def fetch(self, name: str, folder: str, target_dir: Path) -> Path:
        target = target_dir / name
        try:
            self.s3.download_file(self.bucket, self._key(folder, name), str(target))
        except (BotoCoreError, ClientError) as err:
            raise StorageError(f"could not read {name} from {self.location}: {err}") from err
        return target

    def write(self, folder: str, name: str, body: bytes) -> None:
        try:
            self.s3.put_object(Bucket=self.bucket, Key=self._key(folder, name), Body=body)
        except (BotoCoreError, ClientError) as err:
            raise StorageError(f"could not write {name} to {self.location}: {err}") from err

    def inputs_base(self) -> str:
        return self.location

    def _key(self, folder: str, name: str) -> str:
        return self.prefix + (f"{folder}/" if folder else "") + name


def open_inbox(location: str, s3: S3Client) -> Inbox:
    """The inbox a schedule names."""
    if location.startswith("s3://"):
        return S3Inbox(s3, location)
    return LocalInbox(Path(location))


def scratch_dir() -> tempfile.TemporaryDirectory[str]:
    """A temporary folder for a manifest fetched from an S3 inbox."""
    return tempfile.TemporaryDirectory(prefix="lipdub-inbox-")
