"""The item rows of a batch's earlier report, for a finalize that runs after its items were
compacted (`pipeline.retention`): a retry of a compacted batch's failed items.

A compacted item keeps only what "never pay twice" needs; the report its batch wrote before
has its whole row (inputs, phases, errors, cost). The new report takes those rows from the
earlier one instead of rows made of what compaction kept. `pipeline.reporting.writer` writes
`report.json` with one item per line, in manifest order, the order the finalizer reads the
items in, so the rows are matched by walking the file once beside the items: memory flat in
the batch's size. A report laid out otherwise (hand-edited, an older lipdub's) is read whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ITEMS_OPENING = '"items_detail": ['
ITEM_LINE = '    {"'
"""How the writer's item lines start (its header's nested objects open on a line of their own)."""


def rows_of(path: Path) -> Iterator[dict[str, Any]]:
    """The item rows of a `report.json` file, in its order.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> streamed = folder / "a.json"
    >>> _ = streamed.write_text('{\\n  "id": "b",\\n  "items_detail": [\\n    {"id": "x"},\\n'
    ...                         '    {"id": "y"}\\n  ]\\n}\\n')
    >>> [row["id"] for row in rows_of(streamed)]
    ['x', 'y']
    >>> whole = folder / "b.json"
    >>> _ = whole.write_text(json.dumps({"items_detail": [{"id": "x"}]}, indent=2))
    >>> [row["id"] for row in rows_of(whole)]
    ['x']
    """
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip() == ITEMS_OPENING:
                break
        streamed = False
        for line in lines:
            if not line.startswith(ITEM_LINE):
                break
            streamed = True
            yield json.loads(line.rstrip().removesuffix(","))
    if not streamed:
        with path.open(encoding="utf-8") as whole:
            yield from json.load(whole).get("items_detail") or []


class EarlierRows:
    """An earlier report's item rows, asked for in the batch's order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._rows = rows_of(path)
        self._read = 0
        self._ahead: tuple[int, dict[str, Any]] | None = None  # (position, row) read ahead

    def row(self, item_id: str, row: int, position: int) -> dict[str, Any] | None:
        """The earlier row of item `item_id`: found by its manifest row `row`, or where that is
        not known (0: an item whose kept fields have lapsed) by its `position` in the batch
        (a report lists every item of its batch, in the batch's order); None when the report
        does not have it. Asked for in the batch's order: the rows before it (items that were
        not compacted) are passed over.

        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "r.json"
        >>> _ = path.write_text(json.dumps({"items_detail": [{"id": "a", "row": 1},
        ...     {"id": "b", "row": 2}, {"id": "d", "row": 4}, {"id": "f", "row": 6}]}))
        >>> rows = EarlierRows(path)
        >>> rows.row("b", 2, 1), rows.row("c", 3, 9), rows.row("d", 4, 2), rows.row("e", 5, 9)
        ({'id': 'b', 'row': 2}, None, {'id': 'd', 'row': 4}, None)
        >>> rows.row("x", 0, 3), rows.row("f", 0, 3)
        (None, {'id': 'f', 'row': 6})
        """
        wanted, by_row = (row, True) if row else (position, False)
        while True:
            if self._ahead is None:
                found = next(self._rows, None)
                if found is None:
                    return None
                self._ahead, self._read = (self._read, found), self._read + 1
            at_position, found = self._ahead
            at = int(found.get("row") or 0) if by_row else at_position
            if at < wanted:
                self._ahead = None
                continue
            if at == wanted and found.get("id") == item_id:
                self._ahead = None
                return found
            return None  # a later item's: kept for it

    def metadata_keys(self) -> set[str]:
        """Every metadata key of the earlier rows (the CSV's columns)."""
        found: set[str] = set()
        for row in rows_of(self.path):
            found.update(row.get("metadata") or {})
        return found
