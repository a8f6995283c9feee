"""The figures a big batch's report needs to stay one screen: failures grouped by reason, what
reuse saved, and a histogram of items per phase over time that covers every item.

A per-item chart or list stops being readable at a few hundred items; these stay the same
size for ten or ten thousand.

    >>> items = [{"id": "a", "state": "failed", "error_kind": "input", "hint": "Fix it.",
    ...           "error": "No face detected", "reused_from": None, "estimate_usd": "0.134",
    ...           "phases": {"queued": {"start": 0.0, "end": 2.0}}}]
    >>> failure_groups(items)[0].count, phase_histogram(items, 0.0, bins=4).items
    (1, 1)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pipeline.reporting.data import PHASES

PHASE_NAMES = tuple(PHASES)
HISTOGRAM_BINS = 60
EXAMPLE_IDS = 5


@dataclass(frozen=True)
class FailureGroup:
    """Items that ended the same way, for the same kind of reason."""

    state: str
    kind: str
    hint: str
    count: int
    example_error: str
    """One of their errors, as written (they differ in names and ids)."""
    item_ids: tuple[str, ...]
    """The first few of them (`EXAMPLE_IDS`)."""


@dataclass(frozen=True)
class Reuse:
    """Items completed from an earlier payment for the same pair, and what that saved."""

    items: int
    saved_usd: Decimal


@dataclass(frozen=True)
class Histogram:
    """How many items were in each phase, per slice of the batch's time."""

    bin_s: float
    counts: Mapping[str, tuple[int, ...]]
    """Phase -> items in that phase at some point of each bin."""
    items: int
    """Items counted (every item with any recorded phase)."""

    @property
    def bins(self) -> int:
        return len(next(iter(self.counts.values()), ()))

    def totals(self) -> list[int]:
        """Items in any phase, per bin (an item changing phase in a bin counts in both)."""
        return [sum(self.counts[p][b] for p in PHASE_NAMES) for b in range(self.bins)]


class FailureTally:
    """Failure groups, added up one item at a time (as many groups as distinct reasons)."""

    def __init__(self) -> None:
        self._groups: dict[tuple[str, str, str], tuple[int, str, list[str]]] = {}

    def add(self, item: Mapping[str, Any]) -> None:
        if item.get("state") == "completed":
            return
        key = (
            str(item.get("state")),
            str(item.get("error_kind") or ""),
            str(item.get("hint") or ""),
        )
        count, example, ids = self._groups.get(key, (0, str(item.get("error") or ""), []))
        if len(ids) < EXAMPLE_IDS:
            ids.append(str(item.get("id")))
        self._groups[key] = (count + 1, example, ids)

    def groups(self) -> list[FailureGroup]:
        """Largest first."""
        out = [
            FailureGroup(state, kind, hint, count, example, tuple(ids))
            for (state, kind, hint), (count, example, ids) in self._groups.items()
        ]
        return sorted(out, key=lambda g: (-g.count, g.state, g.kind))


class HistogramTally:
    """Items per phase over [origin, end], in `bins` equal slices, added up one item at a
    time with difference arrays (memory set by the bins, not the items)."""

    def __init__(self, origin_s: float, end_s: float, bins: int = HISTOGRAM_BINS) -> None:
        span = max(end_s - origin_s, 0.0)
        self.origin_s = origin_s
        self.bin_s = _round_bin(span / bins) if span > 0 else 1.0
        self.n = max(1, min(bins, math.ceil(span / self.bin_s))) if span > 0 else 1
        self._diff = {name: [0] * (self.n + 1) for name in PHASE_NAMES}
        self.items = 0

    def add(self, item: Mapping[str, Any]) -> None:
        phases = item.get("phases") or {}
        found = False
        for name in PHASE_NAMES:
            phase = phases.get(name)
            if not phase:
                continue
            found = True
            start, end = phase["start"] - self.origin_s, phase["end"] - self.origin_s
            first = min(self.n - 1, max(0, int(start // self.bin_s)))
            last = min(self.n - 1, max(first, int(end // self.bin_s)))
            self._diff[name][first] += 1
            self._diff[name][last + 1] -= 1
        self.items += found

    def build(self) -> Histogram:
        counts = {}
        for name in PHASE_NAMES:
            running, row = 0, []
            for b in range(self.n):
                running += self._diff[name][b]
                row.append(running)
            counts[name] = tuple(row)
        return Histogram(bin_s=self.bin_s, counts=counts, items=self.items)


def failure_groups(items: Iterable[Mapping[str, Any]]) -> list[FailureGroup]:
    """Items that did not complete, grouped by (state, error kind, hint), largest first."""
    tally = FailureTally()
    for item in items:
        tally.add(item)
    return tally.groups()


def reuse(items: Iterable[Mapping[str, Any]]) -> Reuse:
    """Items completed by reusing an earlier output, and their estimates: the money saved."""
    reused = [i for i in items if i.get("reused_from")]
    saved = sum((Decimal(str(i.get("estimate_usd") or 0)) for i in reused), Decimal(0))
    return Reuse(items=len(reused), saved_usd=saved)


def phase_histogram(
    items: Iterable[Mapping[str, Any]], origin_s: float, *, bins: int = HISTOGRAM_BINS
) -> Histogram:
    """Items per phase over the batch's time, up to the last phase's end."""
    listed = list(items)
    end_s = max(
        (p["end"] for i in listed for p in (i.get("phases") or {}).values() if p),
        default=origin_s,
    )
    tally = HistogramTally(origin_s, end_s, bins)
    for item in listed:
        tally.add(item)
    return tally.build()


def _round_bin(seconds: float) -> float:
    """A bin width people read easily: 1, 2 or 5 × 10^k seconds, at least the one given.

    >>> _round_bin(0.3), _round_bin(13), _round_bin(61)
    (0.5, 20.0, 100.0)
    """
    step = 10 ** math.floor(math.log10(seconds))
    for factor in (1, 2, 5, 10):
        if step * factor >= seconds:
            return float(step * factor)
    return float(step * 10)
