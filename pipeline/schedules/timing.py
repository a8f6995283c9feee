"""When a schedule fires, and what to do about a fire time the scheduler was not there for.

Beat ticks every `schedule.tick_s`; each tick asks `decide` about the most recent fire time
of each schedule's cron expression. A fire time reached within `on_time_s` is run. One that
is older was missed (the scheduler was down, or not yet started): with `missed: run_late` it
runs if it is at most `late_deadline_s` old, otherwise, and always with `missed: skip`, it is
skipped, logged and notified. A schedule seen for the first time does not run a fire time
from before it was deployed. Never more than one run for several missed fire times, and
never a silent 09:00 run of a 01:00 schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from croniter import croniter

from pipeline.schedules.config import MissedRun, ScheduleSpec


class Verdict(StrEnum):
    """What a tick does about a schedule."""

    WAIT = "wait"
    """The latest fire time has been handled already."""
    RUN = "run"
    """On time: run it."""
    RUN_LATE = "run_late"
    """Missed, but within the late deadline: run it now."""
    SKIP_MISSED = "skip_missed"
    """Missed, and too late (or the policy is skip): record it as skipped."""
    FIRST_SEEN = "first_seen"
    """A schedule this Redis has never handled, past its latest fire time: that fire time
    predates the schedule's deployment, so it is recorded, not run and not reported missed."""


@dataclass(frozen=True)
class Decision:
    """A verdict about fire time `fire_at_s`, `late_s` after it."""

    verdict: Verdict
    fire_at_s: float
    late_s: float

    @property
    def runs(self) -> bool:
        """True when the schedule should run now."""
        return self.verdict in (Verdict.RUN, Verdict.RUN_LATE)


def latest_fire_s(spec: ScheduleSpec, now_s: float) -> float:
    """The most recent fire time at or before `now_s`."""
    # croniter's get_prev is exclusive of its start for some expressions and not for others:
    # start a millisecond on, so a fire time at exactly `now_s` counts either way.
    start = datetime.fromtimestamp(now_s + 0.001, tz=spec.zone)
    return float(croniter(spec.cron, start).get_prev(float))


def next_fire_s(spec: ScheduleSpec, now_s: float) -> float:
    """The first fire time after `now_s`."""
    return float(croniter(spec.cron, datetime.fromtimestamp(now_s, tz=spec.zone)).get_next(float))


def decide(
    spec: ScheduleSpec, *, last_handled_s: float | None, now_s: float, on_time_s: float
) -> Decision:
    """What to do about `spec` at `now_s`, given the last fire time already handled."""
    fire_s = latest_fire_s(spec, now_s)
    late_s = max(0.0, now_s - fire_s)
    if last_handled_s is not None and last_handled_s >= fire_s:
        return Decision(Verdict.WAIT, fire_s, late_s)
    if late_s <= on_time_s:
        return Decision(Verdict.RUN, fire_s, late_s)
    if last_handled_s is None:
        return Decision(Verdict.FIRST_SEEN, fire_s, late_s)
    if spec.missed is MissedRun.RUN_LATE and late_s <= spec.late_deadline_s:
        return Decision(Verdict.RUN_LATE, fire_s, late_s)
    return Decision(Verdict.SKIP_MISSED, fire_s, late_s)
