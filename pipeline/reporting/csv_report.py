"""The report as CSV: one row per item, safe to open in a spreadsheet.

A cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return would be read as a
formula by Excel, LibreOffice or Google Sheets (CSV injection); such cells get a leading `'`,
which the spreadsheet shows as text. Manifest metadata becomes one column per key.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pipeline.reporting.summary import PHASE_NAMES

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")

COLUMNS = (
    "id", "row", "state", "sync_mode", "video", "audio", "video_s", "audio_s",
    "expected_output_s", "output_s", "billable_s", "estimate_usd", "cost_usd", "output",
    "output_uri", "prediction_id", "attempts", "polls", "reused_from", "error_kind", "error",
    "hint",
)  # fmt: skip


def neutralise(value: object) -> str:
    """The cell text for `value`, with a formula-starting text made inert.

    >>> neutralise("=HYPERLINK(\\"http://x\\")")
    '\\'=HYPERLINK("http://x")'
    >>> neutralise(1.5), neutralise(None)
    ('1.5', '')
    """
    if value is None:
        return ""
    text = str(value)
    if text.startswith(FORMULA_TRIGGERS):
        return "'" + text
    return text


def metadata_columns(keys: Iterable[str]) -> list[tuple[str, str]]:
    """(column title, metadata key) for these metadata keys, renamed when one clashes."""
    taken = set(COLUMNS) | {f"{phase}_s" for phase in PHASE_NAMES}
    return [(f"metadata_{key}" if key in taken else key, key) for key in sorted(set(keys))]


def header(extra: list[tuple[str, str]]) -> list[str]:
    """The header row, with the metadata columns `extra` last."""
    return [*COLUMNS, *(f"{phase}_s" for phase in PHASE_NAMES), *(title for title, _ in extra)]


def row(item: dict[str, Any], extra: list[tuple[str, str]]) -> list[str]:
    """One item's row, every cell neutralised."""
    phases = [item["phases"].get(phase, {}).get("seconds") for phase in PHASE_NAMES]
    metadata = [item["metadata"].get(key) for _, key in extra]
    return (
        [neutralise(item.get(column)) for column in COLUMNS]
        + [neutralise(value) for value in phases]
        + [neutralise(value) for value in metadata]
    )
