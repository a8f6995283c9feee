"""Reading a manifest file into raw rows: CSV, JSON (a list), JSONL or YAML, by extension.

Pure apart from reading the one file. Problems with the file itself (format, encoding,
syntax, missing columns) come back as `Problem`s with their line; nothing raises.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import Problem

REQUIRED_COLUMNS = ("video", "audio")
FORMATS = {
    ".csv": "csv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".yaml": "yaml",
    ".yml": "yaml",
}


@dataclass(frozen=True)
class RawRow:
    """One manifest row as read: 1-based `row`, its file `line` when known, raw values."""

    row: int
    line: int | None
    values: dict[str, Any]


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

    >>> header_delimiter("video;audio;language")
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
