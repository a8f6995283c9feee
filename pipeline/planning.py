"""Plan a batch: manifest -> validated, probed, priced items. Spends nothing.

`plan_manifest` reads the manifest, checks every column, then every input (exists, is a
file, not too big, a readable media file of the right kind, within the duration and
resolution limits), and prices each item. It reports every problem in the file at once by
raising ManifestError; a plan it returns is safe to pay for.

Local inputs are hashed and probed through `MediaInspector` (cached by content). Remote
inputs (`s3://`, `https://`) are probed over the network by a `RemoteProbe` (`pipeline.remote.RemoteProber`), which the
caller provides (it needs an S3 client); without one they are reported as problems.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipeline.errors import LipdubError, ManifestError, MediaError, Problem
from pipeline.manifest import (
    AUDIO_FORMATS,
    VIDEO_FORMATS,
    InputRef,
    ManifestRow,
    check_rows,
    read_manifest,
)
from pipeline.media import MediaInfo, MediaInspector
from pipeline.pricing import PriceModel, billable_seconds, price_usd, total_usd
from pipeline.quotes import QUOTE_BASIS, ProviderQuotes, describe_failure, quote_key
from pipeline.settings import MediaSettings
from pipeline.sync_modes import SyncMode, expected_output_s

RemoteProbe = Callable[[InputRef], tuple[str, MediaInfo]]
"""Probe a remote input: returns (content identity, media info) or raises MediaError."""


@dataclass(frozen=True)
class PlannedInput:
    """One input of an item: where it is, its content identity, what it holds."""

    ref: InputRef
    sha256: str
    """sha256 of the bytes for local files; for remote ones, of a stable fingerprint."""
    info: MediaInfo
    stored: str = ""
    """For a local file: where it was put in the bucket before the batch started
    (`pipeline.uploads`); workers fetch it from there, never from the path."""


@dataclass(frozen=True)
class PlannedItem:
    """One item ready to submit: inputs, mode, expected output and price."""

    row: int
    id: str
    video: PlannedInput
    audio: PlannedInput
    sync_mode: SyncMode
    output: str
    metadata: dict[str, str]
    expected_output_s: float
    billable_s: float
    price_usd: Decimal

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (money as a decimal string)."""
        return {
            "row": self.row,
            "id": self.id,
            "sync_mode": self.sync_mode.value,
            "video": {
                "location": self.video.ref.location,
                "kind": self.video.ref.kind,
                "sha256": self.video.sha256,
                "duration_s": self.video.info.duration_s,
                "width": self.video.info.width,
                "height": self.video.info.height,
            },
            "audio": {
                "location": self.audio.ref.location,
                "kind": self.audio.ref.kind,
                "sha256": self.audio.sha256,
                "duration_s": self.audio.info.duration_s,
            },
            "output": self.output,
            "metadata": dict(self.metadata),
            "expected_output_s": round(self.expected_output_s, 3),
            "billable_s": round(self.billable_s, 3),
            "price_usd": str(self.price_usd),
        }


@dataclass(frozen=True)
class Plan:
    """A validated, priced batch."""

    manifest: Path
    items: tuple[PlannedItem, ...]
    price_model: PriceModel
    total_usd: Decimal
    total_billable_s: float
    by_sync_mode_usd: dict[str, Decimal] = field(default_factory=dict)
    price_basis: str = ""
    """What priced the items: the provider's quotes, or the price model (and why)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view of the whole plan."""
        return {
            "manifest": str(self.manifest),
            "items": [item.to_dict() for item in self.items],
            "count": len(self.items),
            "total_billable_s": round(self.total_billable_s, 3),
            "total_usd": str(self.total_usd),
            "by_sync_mode_usd": {k: str(v) for k, v in self.by_sync_mode_usd.items()},
            "price_model": self.price_model.model_dump(mode="json"),
            "price_basis": self.price_basis,
        }


def plan_manifest(
    manifest: Path,
    *,
    media: MediaSettings,
    price: PriceModel,
    default_sync_mode: SyncMode = SyncMode.CUT_OFF,
    sync_mode_override: SyncMode | None = None,
    inspector: MediaInspector | None = None,
    remote: RemoteProbe | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    base_dir: Path | str | None = None,
    quotes: ProviderQuotes | None = None,
) -> Plan:
    """Validate, probe and price every row. Raises ManifestError listing every problem.

    Relative inputs start from the manifest's folder, or from `base_dir` (a folder or an
    `s3://` prefix) for a manifest read away from its media (an inbox's `processing/`).

    `progress(done, total)` is called from the planning threads as each distinct input has
    been checked (the first plan of a big catalog reads every byte once).

    With `quotes`, each item is priced by the provider's quote endpoint; when it does not
    answer, by the price model. The plan's `price_basis` says which.
    """
    manifest = manifest.expanduser().absolute()
    raw_rows, problems = read_manifest(manifest)
    rows, row_problems = check_rows(
        raw_rows,
        base_dir=manifest.parent if base_dir is None else base_dir,
        default_sync_mode=default_sync_mode,
        allow_http=media.allow_http_urls,
    )
    problems += row_problems
    if sync_mode_override is not None:
        rows = [_with_mode(r, sync_mode_override) for r in rows]
    inspector = inspector or MediaInspector()
    checker = _InputChecker(media, inspector, remote)
    refs = {ref.location: ref for row in rows for ref in (row.video, row.audio)}
    pool_size = workers or min(8, (os.cpu_count() or 2) * 2)
    counter = _Counter(len(refs), progress)
    with ThreadPoolExecutor(max_workers=pool_size) as pool:
        outcomes = pool.map(lambda ref: counter.tick(checker.inspect(ref)), refs.values())
        results = dict(zip(refs, outcomes, strict=True))
    items: list[PlannedItem] = []
    for row in rows:
        planned: dict[str, PlannedInput] = {}
        for name, ref in (("video", row.video), ("audio", row.audio)):
            outcome = results[ref.location]
            if isinstance(outcome, str):
                problems.append(Problem(row.row, name, *_split(outcome), line=row.line))
                continue
            issue = _kind_problem(name, ref, outcome, media)
            if issue:
                problems.append(Problem(row.row, name, *_split(issue), line=row.line))
                continue
            planned[name] = outcome
        if len(planned) == 2:
            items.append(_price(row, planned["video"], planned["audio"], price))
    if problems:
        problems.sort(key=lambda p: (p.row or 0, p.field or ""))
        raise ManifestError(problems)
    items, basis = _quoted(items, quotes, price)
    by_mode: dict[str, Decimal] = {}
    for item in items:
        by_mode[item.sync_mode.value] = (
            by_mode.get(item.sync_mode.value, Decimal(0)) + item.price_usd
        )
    return Plan(
        manifest=manifest,
        items=tuple(items),
        price_model=price,
        total_usd=total_usd(i.price_usd for i in items),
        total_billable_s=sum(i.billable_s for i in items),
        by_sync_mode_usd=dict(sorted(by_mode.items())),
        price_basis=basis,
    )


def describe_price_model(price: PriceModel) -> str:
    """The price model in words.

    >>> describe_price_model(PriceModel())
    'price model: $0.134/s of input video, exact seconds'
    """
    rounding = {"exact": "exact seconds", "ceil_second": "rounded up to the second"}.get(
        price.rounding.value, "rounded up to the frame"
    )
    text = (
        f"price model: ${price.rate_per_second_usd}/s of {price.basis.value.replace('_', ' ')}, "
        f"{rounding}"
    )
    if price.minimum_billable_s:
        text += f", at least {price.minimum_billable_s:g} s"
    return text


def _quoted(
    items: list[PlannedItem], quotes: ProviderQuotes | None, price: PriceModel
) -> tuple[list[PlannedItem], str]:
    """The items priced by the provider's quotes when it gives them, and the basis."""
    model_basis = describe_price_model(price)
    if quotes is None or not items:
        return items, model_basis
    keys = [quote_key(i.sync_mode, i.video.info.duration_s) for i in items]
    try:
        prices = quotes.price_all(keys)
    except LipdubError as err:
        return items, f"{model_basis} ({describe_failure(err)})"
    return [
        replace(item, price_usd=prices[key]) for item, key in zip(items, keys, strict=True)
    ], QUOTE_BASIS


def _with_mode(row: ManifestRow, mode: SyncMode) -> ManifestRow:
    return ManifestRow(
        row.row, row.line, row.id, row.video, row.audio, mode, row.output, row.metadata
    )


def _split(text: str) -> tuple[str, str]:
    """'message|hint' -> (message, hint)."""
    message, _, hint = text.partition("|")
    return message, hint


def _price(
    row: ManifestRow, video: PlannedInput, audio: PlannedInput, price: PriceModel
) -> PlannedItem:
    video_s, audio_s = video.info.duration_s, audio.info.duration_s
    billable = billable_seconds(price, row.sync_mode, video_s, audio_s)
    return PlannedItem(
        row=row.row,
        id=row.id,
        video=video,
        audio=audio,
        sync_mode=row.sync_mode,
        output=row.output,
        metadata=row.metadata,
        expected_output_s=expected_output_s(row.sync_mode, video_s, audio_s),
        billable_s=billable,
        price_usd=price_usd(price, billable),
    )


class _Counter:
    """Counts checked inputs across threads and reports them to an optional callback."""

    def __init__(self, total: int, callback: Callable[[int, int], None] | None) -> None:
        self.total = total
        self.done = 0
        self._callback = callback
        self._lock = threading.Lock()

    def tick(self, outcome: PlannedInput | str) -> PlannedInput | str:
        if self._callback is not None:
            with self._lock:
                self.done += 1
                self._callback(self.done, self.total)
        return outcome


class _InputChecker:
    """Checks one input location; returns a PlannedInput or a 'message|hint' string."""

    def __init__(
        self, media: MediaSettings, inspector: MediaInspector, remote: RemoteProbe | None
    ) -> None:
        self.media = media
        self.inspector = inspector
        self.remote = remote

    def inspect(self, ref: InputRef) -> PlannedInput | str:
        if ref.kind != "local":
            if self.remote is None:
                return (
                    f"{ref.location} cannot be checked without storage access|"
                    "Configure LIPDUB_STORAGE__* (for s3://) or use a local file."
                )
            try:
                identity, info = self.remote(ref)
            except MediaError as err:
                return f"{err}|Check that the URL is reachable and points at a media file."
            return PlannedInput(ref, identity, info)
        path = ref.path
        if not path.exists():
            return (
                f"file not found: {path}|Check the path; it is relative to the manifest's folder."
            )
        if path.is_dir():
            return f"{path} is a directory, not a file|Point at the media file inside it."
        size = path.stat().st_size
        if size == 0:
            return f"{path.name} is empty (0 bytes)|Re-export the file."
        if size > self.media.max_file_size_bytes:
            return (
                f"{path.name} is {size / 1024 / 1024:.0f} MB, over the {self.media.max_file_size_mb} MB limit|"
                "Compress it, or raise LIPDUB_MEDIA__MAX_FILE_SIZE_MB."
            )
        try:
            sha, info = self.inspector.inspect(path)
        except MediaError as err:
            return f"not a media file: {err}|Check that the file is a complete, playable video or audio."
        return PlannedInput(ref, sha, info)


def _kind_problem(
    name: str, ref: InputRef, planned: PlannedInput, media: MediaSettings
) -> str | None:
    """Why this input cannot be the `name` of an item, as 'message|hint', or None."""
    info = planned.info
    label = ref.name
    suffix = Path(label).suffix.lower()
    if name == "video":
        if not info.has_video:
            return f"{label} has no video stream|Give a video file (mp4, mov, webm or avi) in the video column."
        if ref.kind == "local" and suffix not in VIDEO_FORMATS:
            return (
                f"{label}: {suffix or 'no extension'} is not a video format lipsync-3 accepts|"
                f"Convert it to one of {', '.join(VIDEO_FORMATS)} (e.g. ffmpeg -i in out.mp4)."
            )
        if (info.width or 0) > media.max_width or (info.height or 0) > media.max_height:
            return (
                f"{label} is {info.width}x{info.height}, over the {media.max_width}x{media.max_height} limit|"
                "Scale it down (e.g. to 1920x1080)."
            )
    else:
        if not info.has_audio:
            return f"{label} has no audio stream|Give the translated audio (wav, mp3, ogg, flac or m4a) in the audio column."
        if ref.kind == "local" and suffix not in AUDIO_FORMATS:
            return (
                f"{label}: {suffix or 'no extension'} is not an audio format lipsync-3 accepts|"
                f"Convert it to one of {', '.join(AUDIO_FORMATS)}."
            )
    if info.duration_s <= 0:
        return f"{label} has zero duration|Re-export the file; it holds no playable media."
    if info.duration_s > media.max_duration_s:
        return (
            f"{label} lasts {info.duration_s:.1f} s, over the {media.max_duration_s:.0f} s limit|"
            "Split it, or raise LIPDUB_MEDIA__MAX_DURATION_S if your plan allows longer inputs."
        )
    return None
