"""Schedules as configuration: `configs/schedule.yaml` (or `LIPDUB_SCHEDULE__YAML`).

    schedules:
      nightly-de:
        cron: "0 1 * * *"              # when to look in the inbox (croniter; 6th field: seconds)
        timezone: Europe/Berlin
        inbox: s3://lipdub/inbox/de/   # or a local folder, relative to the file
        window: {start: "01:00", end: "06:30"}
        nightly_budget_usd: 250
        sync_mode: cut_off
        output_prefix: nightly/de/
        missed: run_late               # or skip
        late_deadline_s: 7200

A bad file stops `lipdub beat` and `lipdub schedule ...` at start with `SettingsError`
naming the schedule, the field and what is allowed.
"""

from __future__ import annotations

import re
from datetime import time as dtime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.errors import SettingsError
from pipeline.notice_urls import NoticeUrl
from pipeline.sync_modes import SyncMode

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class MissedRun(StrEnum):
    """What a scheduler that was down at a fire time does once it is back."""

    RUN_LATE = "run_late"
    """Run it, if it is no later than `late_deadline_s` after the fire time; else skip it."""
    SKIP = "skip"
    """Skip it (logged and notified): wait for the next fire time."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WindowSpec(_Model):
    """Daily submission hours, in the schedule's time zone; `end` before `start` spans midnight."""

    start: str
    """Local time HH:MM when submits may begin."""
    end: str
    """Local time HH:MM after which nothing new is submitted (in-flight work is collected)."""

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not _CLOCK.match(value):
            raise ValueError(f"{value!r} is not a time of day: write HH:MM, e.g. 01:00")
        return value

    def times(self) -> tuple[dtime, dtime]:
        """(start, end) as times of day."""
        return dtime.fromisoformat(self.start), dtime.fromisoformat(self.end)


class ScheduleSpec(_Model):
    """One named schedule: when to pick up manifests, from where, and within what limits."""

    name: str
    cron: str
    """When to look in the inbox (croniter syntax; an optional 6th field is seconds)."""
    timezone: str = "UTC"
    """The IANA time zone of `cron` and `window`, e.g. Europe/Berlin."""
    inbox: str
    """A local folder or an `s3://bucket/prefix/` where manifests are dropped."""
    window: WindowSpec | None = None
    """Submit only within these hours (unset: any time)."""
    nightly_budget_usd: Decimal | None = Field(default=None, ge=0)
    """What every batch of this schedule may spend together per night (unset: no limit)."""
    sync_mode: SyncMode | None = None
    """The sync_mode of rows that name none (unset: the batch default)."""
    output_prefix: str = "outputs/"
    """Where outputs go in the bucket: `<storage prefix><output_prefix><batch>/<output>`."""
    missed: MissedRun = MissedRun.RUN_LATE
    """A run missed because the scheduler was down: run late, or skip."""
    late_deadline_s: float = Field(default=7_200.0, ge=0)
    """With `missed: run_late`, how late a missed run may still start."""
    notify_url: NoticeUrl | None = None
    """Where this schedule's notices go (an apprise URL: Slack, Mattermost, json://…); unset: `schedule.notify_url`."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"{value!r}: use lower-case letters, digits, '-' and '_' (it names Redis keys)"
            )
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a cron expression, e.g. '0 1 * * *' (01:00 daily)")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone, e.g. Europe/Berlin") from None
        return value

    @field_validator("output_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.strip("/")
        if not value or ".." in value.split("/"):
            raise ValueError(f"{value!r}: give a plain key prefix such as nightly/de/")
        return value + "/"

    @property
    def zone(self) -> ZoneInfo:
        """The time zone."""
        return ZoneInfo(self.timezone)

    def is_s3(self) -> bool:
        """True when the inbox is an S3 prefix."""
        return self.inbox.startswith("s3://")


def parse_schedules(text: str, *, base_dir: Path, source: str) -> dict[str, ScheduleSpec]:
    """The schedules in a YAML text. Relative local inboxes are resolved against `base_dir`."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise SettingsError(f"{source}: not valid YAML: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("schedules", {}), dict):
        raise SettingsError(f"{source}: expected `schedules:` mapping names to schedules")
    unknown = sorted(set(data) - {"schedules"})
    if unknown:
        raise SettingsError(f"{source}: unknown top-level key(s) {unknown}; only `schedules:`")
    schedules: dict[str, ScheduleSpec] = {}
    for name, body in (data.get("schedules") or {}).items():
        if not isinstance(body, dict):
            raise SettingsError(f"{source}: schedule {name!r} must be a mapping of its fields")
        values: dict[str, Any] = {**body, "name": str(name)}
        inbox = str(values.get("inbox", ""))
        if inbox and not inbox.startswith("s3://"):
            values["inbox"] = str((base_dir / Path(inbox).expanduser()).absolute())
        try:
            schedules[str(name)] = ScheduleSpec(**values)
        except ValidationError as err:
            raise SettingsError(_describe(source, str(name), err)) from None
    return schedules


def load_schedules(file: Path, inline_yaml: str = "") -> dict[str, ScheduleSpec]:
    """Schedules from `inline_yaml` when set, else from `file` ({} when it does not exist)."""
    if inline_yaml.strip():
        return parse_schedules(inline_yaml, base_dir=Path.cwd(), source="LIPDUB_SCHEDULE__YAML")
    path = file.expanduser()
    if not path.exists():
        return {}
    return parse_schedules(
        path.read_text(encoding="utf-8"), base_dir=path.absolute().parent, source=str(path)
    )


def _describe(source: str, name: str, err: ValidationError) -> str:
    problems = []
    for error in err.errors():
        field = ".".join(str(part) for part in error["loc"]) or "(schedule)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            message = "required"
        elif error["type"] == "extra_forbidden":
            message = "unknown field (see configs/schedule.yaml for the fields)"
        problems.append(f"{field}: {message}")
    return f"{source}: schedule {name!r}: " + "; ".join(problems)
