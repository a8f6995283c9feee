"""Manifests: read CSV, JSON (a list), JSONL or YAML into rows, and validate every row.

Columns: `video` and `audio` (required: a path relative to the manifest, `s3://bucket/key`,
or an `https://` URL), `id` (optional, derived from the inputs when absent), `sync_mode`
(optional; the batch default otherwise), `output` (optional output name). Any other column
is kept as metadata and carried to the report.

Reading and checking the columns is pure (`read_manifest`, `check_rows`); looking at the
media itself happens in `pipeline.planning`. Every problem in the file is reported at once,
with its row, field and what to do.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import yaml

from pipeline.errors import Problem
from pipeline.sync_modes import ALLOWED_SYNC_MODES, SyncMode

REQUIRED_COLUMNS = ("video", "audio")
KNOWN_COLUMNS = ("id", "video", "audio", "sync_mode", "output")
FORMATS = {
    ".csv": "csv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".yaml": "yaml",
    ".yml": "yaml",
}
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
BARE_HOST = re.compile(r"^(www\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(:\d+)?/")
VIDEO_FORMATS = (".mp4", ".mov", ".webm", ".avi")
AUDIO_FORMATS = (".wav", ".mp3", ".ogg", ".flac", ".m4a", ".aac")


@dataclass(frozen=True)
class RawRow:
    """One manifest row as read: 1-based `row`, its file `line` when known, raw values."""

    row: int
    line: int | None
    values: dict[str, Any]


@dataclass(frozen=True)
class InputRef:
    """Where an input lives. `kind` is `local`, `s3` or `https` (or `http` when allowed)."""

    kind: str
    location: str
    """An absolute path for `local`, else the URL as written."""

    @property
    def path(self) -> Path:
        """The local path (only for `local`)."""
        assert self.kind == "local", "only local inputs have a path"
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


def read_manifest(path: Path) -> tuple[list[RawRow], list[Problem]]:
    """Read a manifest by extension. Returns its rows and any problems with the file itself."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        return [], [
            Problem(
                None,
                None,
                f"unknown manifest format {path.suffix or '(none)'!r}",
                f"Name the file .csv, .json, .jsonl or .yaml (got {path.name}).",
            )
        ]
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], [Problem(None, None, f"no manifest at {path}", "Check the path.")]
    except IsADirectoryError:
        return [], [Problem(None, None, f"{path} is a directory", "Give the manifest file itself.")]
    except OSError as err:
        return [], [
            Problem(None, None, f"cannot read {path}: {err.strerror}", "Check its permissions.")
        ]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        return [], [
            Problem(
                None,
                None,
                f"the file is not UTF-8 (invalid byte at line {line})",
                "Save the manifest as UTF-8 (with or without BOM).",
                line=line,
            )
        ]
    if not text.strip():
        return [], [
            Problem(None, None, "the manifest is empty", "Add a header and one row per video.")
        ]
    reader = {"csv": _read_csv, "json": _read_json, "jsonl": _read_jsonl, "yaml": _read_yaml}[fmt]
    return reader(text)


def _read_csv(text: str) -> tuple[list[RawRow], list[Problem]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=header_delimiter(text))
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        return [], [
            Problem(None, None, "no header row", "Start the CSV with a header: id,video,audio,...")
        ]
    columns = [_column(name) for name in header]
    problems = _column_problems(columns, line=1)
    rows: list[RawRow] = []
    try:
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue
            line = reader.line_num
            number = len(rows) + 1
            if len(cells) > len(columns):
                extra = [c for c in cells[len(columns) :] if c.strip()]
                if extra:
                    problems.append(
                        Problem(
                            number,
                            None,
                            f"{len(cells)} cells but the header has {len(columns)} columns",
                            "Quote cells that contain the delimiter, or add the missing header names.",
                            line=line,
                        )
                    )
            values = {
                col: cells[i] if i < len(cells) else "" for i, col in enumerate(columns) if col
            }
            rows.append(RawRow(number, line, values))
    except csv.Error as err:
        problems.append(
            Problem(
                len(rows) + 1,
                None,
                f"the CSV cannot be parsed ({err})",
                "Check the quoting on this line.",
                line=reader.line_num,
            )
        )
    if not rows and not problems:
        problems.append(
            Problem(None, None, "the manifest has a header but no rows", "Add one row per video.")
        )
    return rows, problems


def header_delimiter(text: str) -> str:
    """The delimiter a CSV uses: whichever of `,` `;` tab is most frequent in its header line.

    Decided on the header alone, so a path containing `;` in a data row cannot change it.

    >>> header_delimiter("video;audio;language\nde;x.wav;de")
    ';'
    """
    header = text.split("\n", 1)[0]
    counts = {delimiter: header.count(delimiter) for delimiter in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _column(name: str) -> str:
    return name.strip().lower()


def _column_problems(columns: list[str], *, line: int | None) -> list[Problem]:
    problems = []
    for required in REQUIRED_COLUMNS:
        if required not in columns:
            problems.append(
                Problem(
                    None,
                    required,
                    f"missing column '{required}'",
                    f"Add a '{required}' column with a path, s3:// or https:// location for each row.",
                    line=line,
                )
            )
    seen: set[str] = set()
    for col in columns:
        if col and col in seen:
            problems.append(
                Problem(
                    None,
                    col,
                    f"column '{col}' appears twice",
                    "Keep one column of each name.",
                    line=line,
                )
            )
        seen.add(col)
    return problems


def _records(items: Any, *, where: str) -> tuple[list[RawRow], list[Problem]]:
    if isinstance(items, dict) and isinstance(items.get("items"), list):
        items = items["items"]
    if not isinstance(items, list):
        return [], [
            Problem(
                None,
                None,
                f"the {where} must be a list of objects (one per video)",
                'Write it as [{"video": ..., "audio": ...}, ...].',
            )
        ]
    rows: list[RawRow] = []
    problems: list[Problem] = []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            problems.append(
                Problem(
                    number,
                    None,
                    f"row is a {type(item).__name__}, not an object",
                    "Each row must be an object with video and audio.",
                )
            )
            continue
        rows.append(RawRow(number, None, {_column(str(k)): v for k, v in item.items()}))
    if not items:
        problems.append(Problem(None, None, "the manifest has no rows", "Add one row per video."))
    return rows, problems


def _read_json(text: str) -> tuple[list[RawRow], list[Problem]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        return [], [
            Problem(
                None,
                None,
                f"invalid JSON ({err.msg}, line {err.lineno} column {err.colno})",
                "Fix the JSON syntax there.",
                line=err.lineno,
            )
        ]
    return _records(data, where="JSON manifest")


def _read_jsonl(text: str) -> tuple[list[RawRow], list[Problem]]:
    rows: list[RawRow] = []
    problems: list[Problem] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        number = len(rows) + len([p for p in problems if p.row is not None]) + 1
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(
                Problem(
                    number,
                    None,
                    f"invalid JSON ({err.msg})",
                    "Write one JSON object per line.",
                    line=line_no,
                )
            )
            continue
        if not isinstance(item, dict):
            problems.append(
                Problem(
                    number,
                    None,
                    "line is not a JSON object",
                    "Write one JSON object per line.",
                    line=line_no,
                )
            )
            continue
        rows.append(RawRow(number, line_no, {_column(str(k)): v for k, v in item.items()}))
    if not rows and not problems:
        problems.append(
            Problem(None, None, "the manifest has no rows", "Add one JSON object per line.")
        )
    return rows, problems


def _read_yaml(text: str) -> tuple[list[RawRow], list[Problem]]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        return [], [
            Problem(
                None,
                None,
                f"invalid YAML ({getattr(err, 'problem', None) or err})",
                "Fix the YAML syntax there.",
                line=line,
            )
        ]
    return _records(data, where="YAML manifest")


# ---------------------------------------------------------------- column checks


def check_rows(
    rows: list[RawRow],
    *,
    base_dir: Path,
    default_sync_mode: SyncMode,
    allow_http: bool = False,
) -> tuple[list[ManifestRow], list[Problem]]:
    """Check every row's columns (not its media). Returns the rows whose inputs could be
    parsed (to check their media next) and every problem; any problem invalidates the plan."""
    good: list[ManifestRow] = []
    problems: list[Problem] = []
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
                    "Use letters, digits, '.', '_' and '-' (at most 128, starting with a letter or digit).",
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


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def parse_input(value: str, *, base_dir: Path, allow_http: bool = False) -> InputRef | str:
    """An InputRef for a manifest value, or the reason it is not one (a string)."""
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
                f"plain http:// is not accepted ({value!r}); the provider fetches inputs over https"
            )
        return f"unsupported URL scheme {scheme}:// in {value!r}"
    if value.startswith("//"):
        return f"{value!r} has no scheme; write https://..."
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
    """
    stem = f"{Path(video.name).stem}-{Path(audio.name).stem}"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:80] or "item"
    digest = hashlib.sha256(
        f"{video.location}\n{audio.location}\n{mode.value}".encode()
    ).hexdigest()[:8]
    return f"{slug}-{digest}"
