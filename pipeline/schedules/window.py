"""The submission window and the night it belongs to: pure functions of a clock reading.

A window such as 01:00–06:30 (local time) opens every day; one with `end` before `start`
(22:00–05:00) spans midnight. A "night" is named by the local date its window opened, so
every submit between 22:00 on the 24th and 05:00 on the 25th spends the budget of night
2026-11-24. Without a window a night is a local calendar day.

    >>> from pipeline.schedules.config import WindowSpec
    >>> from zoneinfo import ZoneInfo
    >>> w = Window(WindowSpec(start="22:00", end="05:00"), ZoneInfo("UTC"))
    >>> w.night(_utc(2026, 11, 25, 3)), w.is_open(_utc(2026, 11, 25, 3))
    ('2026-11-24', True)
    >>> w.is_open(_utc(2026, 11, 25, 6)), w.next_open_s(_utc(2026, 11, 25, 6)) - _utc(2026, 11, 25, 6)
    (False, 57600.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from pipeline.schedules.config import WindowSpec


@dataclass(frozen=True)
class Window:
    """When submits are allowed. `spec` None: always."""

    spec: WindowSpec | None
    zone: ZoneInfo

    def is_open(self, now_s: float) -> bool:
        """True while submits are allowed."""
        return self._occurrence(now_s) is not None

    def closes_at_s(self, now_s: float) -> float | None:
        """When the open window closes (None: closed now, or no window)."""
        occurrence = self._occurrence(now_s)
        return occurrence[1] if occurrence and self.spec else None

    def last_closed_s(self, now_s: float) -> float | None:
        """When the latest window that has ended by `now_s` closed (None: no window)."""
        if self.spec is None:
            return None
        today = _local(now_s, self.zone).date()
        ends = [self._bounds(today - timedelta(days=d))[1] for d in range(3)]
        return max(end for end in ends if end <= now_s)

    def next_open_s(self, now_s: float) -> float:
        """When submits may next begin: `now_s` if open, else the next opening."""
        if self.spec is None or self.is_open(now_s):
            return now_s
        local = _local(now_s, self.zone)
        for days in (0, 1, 2):
            start = self._bounds(local.date() + timedelta(days=days))[0]
            if start > now_s:
                return start
        raise AssertionError("a daily window opens within two days")  # pragma: no cover

    def night(self, now_s: float) -> str:
        """The night `now_s` belongs to (the local date its window opened), as YYYY-MM-DD.
        Outside the window: the night of the next opening (what waiting work will spend)."""
        local = _local(now_s, self.zone)
        if self.spec is None:
            return local.date().isoformat()
        occurrence = self._occurrence(now_s)
        if occurrence is None:
            return _local(self.next_open_s(now_s), self.zone).date().isoformat()
        return _local(occurrence[0], self.zone).date().isoformat()

    def describe(self) -> str:
        """e.g. `01:00–06:30 Europe/Berlin`, or `any time`."""
        if self.spec is None:
            return "any time"
        return f"{self.spec.start}–{self.spec.end} {self.zone.key}"

    def _occurrence(self, now_s: float) -> tuple[float, float] | None:
        if self.spec is None:
            return (float("-inf"), float("inf"))
        today = _local(now_s, self.zone).date()
        for day in (today - timedelta(days=1), today):
            start, end = self._bounds(day)
            if start <= now_s < end:
                return start, end
        return None

    def _bounds(self, day: date) -> tuple[float, float]:
        """(open, close) epoch seconds of the window that opens on local date `day`."""
        assert self.spec is not None
        start_t, end_t = self.spec.times()
        start = datetime.combine(day, start_t, tzinfo=self.zone)
        end_day = day if end_t > start_t else day + timedelta(days=1)
        end = datetime.combine(end_day, end_t, tzinfo=self.zone)
        return start.timestamp(), end.timestamp()


def _local(now_s: float, zone: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(now_s, tz=zone)


def _utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    """Epoch seconds of a UTC date-time (for examples and tests)."""
    return datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()
