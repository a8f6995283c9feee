"""Checking a manifest's columns: input locations, sync_mode, ids, output names. Pure.

Media is not looked at here (that is `pipeline.planning`); every problem found is returned
with its row, field and what to do, so a whole file is reported at once.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from pipeline.errors import Problem
from pipeline.manifest.read import REQUIRED_COLUMNS, RawRow
from pipeline.sync_modes import ALLOWED_SYNC_MODES, SyncMode

KNOWN_COLUMNS = ("id", "video", "audio", "sync_mode", "output")
ID_PATTERN = re.compile(r"^[^\W_][\w.-]{0,127}$")
"""Letters and digits of any script, `.`, `_` and `-`: valid in S3 keys (UTF-8), Redis keys
and file names, and never a `/` or `:` (the separators lipdub's keys use)."""
URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
BARE_HOST = re.compile(r"^(www\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(:\d+)?/")
VIDEO_FORMATS = (".mp4", ".mov", ".webm", ".avi")
AUDIO_FORMATS = (".wav", ".mp3", ".ogg", ".flac", ".m4a", ".aac")


@dataclass(frozen=True)
class InputRef:
    """Where an input lives. `kind` is `local`, `s3` or `https` (or `http` when allowed)."""

    kind: str
    location: str
    """An absolute path for `local`, else the URL as written."""

    @property
    def path(self) -> Path:
        """The local path (only for `local`)."""
        if self.kind != "local":
            raise ValueError(f"{self.location} is not a local input")
        return Path(self.location)

    @property
    def name(self) -> str:
        """The file name part, for display and derived ids."""
        return (
            PurePosixPath(urlsplit(self.location).path).name
            if self.kind != "local"
            else Path(self.location).name
        )


@dataclass(frozen=True)
class ManifestRow:
    """A row whose columns are valid (its media not yet checked)."""

    row: int
    line: int | None
    id: str
    video: InputRef
    audio: InputRef
    sync_mode: SyncMode
    output: str
    metadata: dict[str, str] = field(default_factory=dict)


def check_rows(
    rows: list[RawRow],
    *,
    base_dir: Path | str,
    default_sync_mode: SyncMode,
    allow_http: bool = False,
) -> tuple[list[ManifestRow], list[Problem]]:
    """Check every row's columns (not its media). Returns the rows whose inputs could be
    parsed (to check their media next) and every problem; any problem invalidates the plan."""
    good: list[ManifestRow] = []
    problems: list[Problem] = near_misses(rows)
    first_row_of_id: dict[str, int] = {}
    first_row_of_output: dict[str, int] = {}
    for raw in rows:
        row_problems: list[Problem] = []

        def problem(
            field_name: str | None,
            message: str,
            hint: str,
            raw: RawRow = raw,
            sink: list[Problem] = row_problems,
        ) -> None:
            sink.append(Problem(raw.row, field_name, message, hint, line=raw.line))

        refs: dict[str, InputRef] = {}
        for name in REQUIRED_COLUMNS:
            value = _text(raw.values.get(name))
            if not value:
                problem(
                    name,
                    f"{name} is empty" if name in raw.values else f"{name} is missing",
                    f"Give the {'video' if name == 'video' else 'translated audio'} as a path relative to the manifest, s3://bucket/key or https:// URL.",
                )
                continue
            ref = parse_input(value, base_dir=base_dir, allow_http=allow_http)
            if isinstance(ref, str):
                problem(
                    name,
                    ref,
                    "Use a path relative to the manifest, s3://bucket/key or an https:// URL.",
                )
            else:
                refs[name] = ref
        mode_text = _text(raw.values.get("sync_mode")).lower()
        mode = default_sync_mode
        if mode_text:
            if mode_text not in ALLOWED_SYNC_MODES:
                problem(
                    "sync_mode",
                    f"unknown sync_mode {mode_text!r}",
                    f"Use one of: {', '.join(ALLOWED_SYNC_MODES)} (or leave it empty for {default_sync_mode.value}).",
                )
            else:
                mode = SyncMode(mode_text)
        output_text = _text(raw.values.get("output"))
        output_error = check_output_name(output_text) if output_text else None
        if output_error:
            problem(
                "output",
                output_error,
                "Give a plain relative name such as 'de/episode-01.mp4', without '..' or a leading '/'.",
            )
        item_id = _text(raw.values.get("id"))
        if item_id:
            if not ID_PATTERN.match(item_id):
                problem(
                    "id",
                    f"id {item_id!r} has characters that cannot be used in storage keys",
                    "Use letters and digits (of any script), '.', '_' and '-' (at most 128, "
                    "starting with a letter or digit).",
                )
            elif item_id in first_row_of_id:
                problem(
                    "id",
                    f"duplicate id {item_id!r} (first used on row {first_row_of_id[item_id]})",
                    "Give each row its own id, or leave the id empty to derive one.",
                )
            else:
                first_row_of_id[item_id] = raw.row
        problems.extend(row_problems)
        if "video" not in refs or "audio" not in refs:
            continue
        # Rows with other problems still go on, so their media is checked in the same pass;
        # any problem at all stops the plan before a single item is priced.
        video, audio = refs["video"], refs["audio"]
        repeated = False
        if not item_id or not ID_PATTERN.match(item_id):
            derived = derive_id(video, audio, mode)
            repeated = not item_id and derived in first_row_of_id
            if repeated:
                problems.append(
                    Problem(
                        raw.row,
                        "id",
                        f"this row repeats row {first_row_of_id[derived]} (same video, audio and sync_mode)",
                        "Remove the repeated row, or give both rows explicit ids.",
                        line=raw.line,
                    )
                )
            first_row_of_id.setdefault(derived, raw.row)
            item_id = derived
        metadata = {k: _text(v) for k, v in raw.values.items() if k and k not in KNOWN_COLUMNS}
        output = output_text or f"{item_id}.mp4"
        if not PurePosixPath(output).suffix:
            output = f"{output}.mp4"
        # Compared without case: outputs are downloaded to file systems that ignore it.
        clash = first_row_of_output.setdefault(output.lower(), raw.row)
        if clash != raw.row and not repeated:
            problems.append(
                Problem(
                    raw.row,
                    "output",
                    f"output {output!r} is also row {clash}'s output; one would overwrite the other",
                    "Give each row its own output name.",
                    line=raw.line,
                )
            )
        good.append(ManifestRow(raw.row, raw.line, item_id, video, audio, mode, output, metadata))
    return good, problems


def near_misses(rows: list[RawRow]) -> list[Problem]:
    """A column whose name is close to a known column that the manifest lacks is a typo
    (`ouput`, `sync-mode`), not metadata: one problem per such column, with the fix. Other
    unknown columns stay metadata.

    >>> [p.message for p in near_misses([RawRow(1, 2, {"video": "v", "ouput": "x"})])]
    ["column 'ouput' is not a column lipdub knows; did you mean 'output'?"]
    """
    present = {name for raw in rows for name in raw.values if name}
    missing = [name for name in KNOWN_COLUMNS if name not in present]
    problems = []
    for name in sorted(present - set(KNOWN_COLUMNS)):
        spelled = re.sub(r"[\s-]+", "_", name)
        close = [spelled] if spelled in missing else get_close_matches(name, missing, 1, 0.75)
        if close:
            problems.append(
                Problem(
                    None,
                    name,
                    f"column {name!r} is not a column lipdub knows; did you mean {close[0]!r}?",
                    f"Rename the column to {close[0]!r}. (Other columns are kept as metadata: "
                    "give a metadata column a name unlike lipdub's own.)",
                )
            )
    return problems


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def parse_input(value: str, *, base_dir: Path | str, allow_http: bool = False) -> InputRef | str:
    """An InputRef for a manifest value, or the reason it is not one (a string).

    `base_dir` is the folder relative paths start from: a local folder, or an `s3://`
    prefix (a manifest dropped in an S3 inbox names its inputs relative to the inbox).

    >>> parse_input("de/ep1.wav", base_dir="s3://media/inbox/")
    InputRef(kind='s3', location='s3://media/inbox/de/ep1.wav')
    """
    match = URL_SCHEME.match(value)
    if match:
        scheme = match.group(1).lower()
        parts = urlsplit(value)
        if scheme == "s3":
            if not parts.netloc or not parts.path.strip("/"):
                return f"{value!r} is not a complete s3:// location (s3://bucket/key)"
            return InputRef("s3", value)
        if scheme == "https" or (scheme == "http" and allow_http):
            if not parts.hostname:
                return f"{value!r} has no host"
            return InputRef(scheme, value)
        if scheme == "http":
            return (
                f"plain http:// is not accepted ({value!r}); the provider fetches inputs over "
                "https (set LIPDUB_MEDIA__ALLOW_HTTP_URLS=true for a server on your network)"
            )
        return f"unsupported URL scheme {scheme}:// in {value!r}"
    if value.startswith("//"):
        return f"{value!r} has no scheme; write https://..."
    if isinstance(base_dir, str):
        relative = PurePosixPath(value)
        if relative.is_absolute() or ".." in relative.parts:
            return (
                f"{value!r} is not inside the inbox: in an s3:// inbox, name inputs relative "
                "to the inbox (without '..') or as s3://bucket/key"
            )
        return InputRef("s3", base_dir.rstrip("/") + "/" + relative.as_posix())
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    if BARE_HOST.match(value) and not path.exists():
        return f"{value!r} looks like a web address without a scheme; write https://{value}"
    return InputRef("local", str(path.absolute()))


def check_output_name(name: str) -> str | None:
    """Why an output name is unsafe (escapes its folder, absolute...), or None when fine."""
    if "\x00" in name or any(ord(ch) < 32 for ch in name):
        return f"output {name!r} contains control characters"
    if "\\" in name:
        return f"output {name!r} contains a backslash"
    pure = PurePosixPath(name)
    if pure.is_absolute() or re.match(r"^[A-Za-z]:", name):
        return f"output {name!r} is an absolute path and would escape the batch's folder"
    if any(part == ".." for part in pure.parts):
        return f"output {name!r} would escape the batch's folder ('..')"
    if not pure.name or pure.name in (".", ""):
        return f"output {name!r} has no file name"
    if pure.suffix and pure.suffix.lower() != ".mp4":
        return f"output {name!r} must end in .mp4 (lipsync-3 returns MP4)"
    return None


def derive_id(video: InputRef, audio: InputRef, mode: SyncMode) -> str:
    """A stable, readable id for a row without one: file stems plus a short hash of the inputs.

    >>> derive_id(InputRef("local", "/m/ep1.mp4"), InputRef("local", "/m/ep1-de.wav"), SyncMode.LOOP)[:11]
    'ep1-ep1-de-'
    >>> derive_id(InputRef("local", "/m/Überfall 07.mp4"), InputRef("local", "/m/第1話.wav"), SyncMode.LOOP)[:16]
    'Überfall-07-第1話-'
    """
    stem = f"{Path(video.name).stem}-{Path(audio.name).stem}"
    slug = re.sub(r"[^\w.-]+", "-", stem).strip("-._")[:80] or "item"
    digest = hashlib.sha256(
        f"{video.location}\n{audio.location}\n{mode.value}".encode()
    ).hexdigest()[:8]
    return f"{slug}-{digest}"
