"""Schedules' pure logic: the configuration, windows and nights, when a schedule fires."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from pipeline.errors import SettingsError
from pipeline.schedules.config import ScheduleSpec, WindowSpec, load_schedules, parse_schedules
from pipeline.schedules.inbox import Dropped, is_manifest
from pipeline.schedules.timing import Verdict, decide, latest_fire_s, next_fire_s
from pipeline.schedules.window import Window

ROOT = Path(__file__).resolve().parents[2]


def at(*parts: int, zone: str = "UTC") -> float:
    return datetime(*parts, tzinfo=ZoneInfo(zone)).timestamp()  # type: ignore[misc]


def spec(**fields: object) -> ScheduleSpec:
    values: dict[str, object] = {"name": "n", "cron": "0 1 * * *", "inbox": "/in", **fields}
    return ScheduleSpec(**values)  # type: ignore[arg-type]


# ---------------------------------------------------------------- configuration


def test_the_shipped_schedule_file_is_valid():
    schedules = load_schedules(ROOT / "configs" / "schedule.yaml")
    assert list(schedules) == ["nightly"]
    nightly = schedules["nightly"]
    assert nightly.window == WindowSpec(start="01:00", end="06:30")
    assert nightly.inbox.startswith("s3://")


def test_a_local_inbox_is_relative_to_the_file(tmp_path):
    text = "schedules:\n  a:\n    cron: '0 1 * * *'\n    inbox: drop/here\n"
    [a] = parse_schedules(text, base_dir=tmp_path, source="f.yaml").values()
    assert a.inbox == str(tmp_path / "drop" / "here")


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("cron: 'every night'\n    inbox: /x", "cron: 'every night' is not a cron expression"),
        ("cron: '0 1 * * *'\n    inbox: /x\n    timezone: Mars/Olympus", "not an IANA time zone"),
        ("cron: '0 1 * * *'\n    inbox: /x\n    window: {start: '1am', end: '06:00'}", "HH:MM"),
        ("cron: '0 1 * * *'\n    inbox: /x\n    budget: 5", "budget: unknown field"),
        ("cron: '0 1 * * *'", "inbox: required"),
        ("cron: '0 1 * * *'\n    inbox: /x\n    missed: later", "missed:"),
        ("cron: '0 1 * * *'\n    inbox: /x\n    nightly_budget_usd: -1", "nightly_budget_usd:"),
        (
            "cron: '0 1 * * *'\n    inbox: /x\n    notify_url: https://example.com/tok",
            "notify_url: not a URL apprise knows: for a generic JSON webhook write json://",
        ),
    ],
)
def test_a_bad_schedule_names_the_schedule_the_field_and_the_fix(body, says):
    text = f"schedules:\n  nightly:\n    {body}\n"
    with pytest.raises(SettingsError) as caught:
        parse_schedules(text, base_dir=Path("/"), source="schedule.yaml")
    message = str(caught.value)
    assert message.startswith("schedule.yaml: schedule 'nightly': ")
    assert says in message
    assert "example.com/tok" not in message  # a notice URL is a secret


def test_bad_names_and_shapes_are_refused():
    with pytest.raises(SettingsError, match="lower-case"):
        parse_schedules(
            "schedules:\n  Bad Name:\n    cron: '0 1 * * *'\n    inbox: /x\n",
            base_dir=Path("/"),
            source="s",
        )
    with pytest.raises(SettingsError, match="only `schedules:`"):
        parse_schedules("jobs: {}\n", base_dir=Path("/"), source="s")
    with pytest.raises(SettingsError, match="not valid YAML"):
        parse_schedules("schedules: [\n", base_dir=Path("/"), source="s")


def test_inline_yaml_wins_over_the_file_and_a_missing_file_means_none(tmp_path):
    inline = "schedules:\n  x:\n    cron: '*/5 * * * *'\n    inbox: s3://b/in/\n"
    assert list(load_schedules(tmp_path / "nope.yaml", inline)) == ["x"]
    assert load_schedules(tmp_path / "nope.yaml") == {}


def test_the_output_prefix_is_normalised():
    assert spec(output_prefix="/nightly/de").output_prefix == "nightly/de/"
    with pytest.raises(ValueError, match="plain key prefix"):
        spec(output_prefix="../up")


# ---------------------------------------------------------------- windows and nights


def test_a_window_within_a_day():
    w = Window(WindowSpec(start="01:00", end="06:30"), ZoneInfo("Europe/Berlin"))
    # 00:59 Berlin is before, 01:00 opens, 06:29 is in, 06:30 is closed.
    assert not w.is_open(at(2026, 11, 24, 0, 59, zone="Europe/Berlin"))
    assert w.is_open(at(2026, 11, 24, 1, 0, zone="Europe/Berlin"))
    assert w.is_open(at(2026, 11, 24, 6, 29, zone="Europe/Berlin"))
    assert not w.is_open(at(2026, 11, 24, 6, 30, zone="Europe/Berlin"))
    after = at(2026, 11, 24, 7, 0, zone="Europe/Berlin")
    assert w.next_open_s(after) == at(2026, 11, 25, 1, 0, zone="Europe/Berlin")
    assert w.closes_at_s(at(2026, 11, 24, 2, 0, zone="Europe/Berlin")) == at(
        2026, 11, 24, 6, 30, zone="Europe/Berlin"
    )
    # Waiting work outside the window spends the night of the next opening.
    assert w.night(after) == "2026-11-25"
    assert w.night(at(2026, 11, 24, 3, 0, zone="Europe/Berlin")) == "2026-11-24"


def test_a_window_across_midnight_belongs_to_the_night_it_opened():
    w = Window(WindowSpec(start="22:00", end="05:00"), ZoneInfo("UTC"))
    assert w.is_open(at(2026, 11, 24, 23, 0)) and w.is_open(at(2026, 11, 25, 4, 59))
    assert not w.is_open(at(2026, 11, 25, 5, 0)) and not w.is_open(at(2026, 11, 24, 21, 59))
    assert w.night(at(2026, 11, 24, 23, 0)) == w.night(at(2026, 11, 25, 4, 0)) == "2026-11-24"
    assert w.next_open_s(at(2026, 11, 25, 5, 0)) == at(2026, 11, 25, 22, 0)


def test_no_window_is_always_open_and_a_night_is_a_local_day():
    w = Window(None, ZoneInfo("America/New_York"))
    now = at(2026, 11, 25, 3, 0)  # 22:00 on the 24th in New York
    assert w.is_open(now) and w.next_open_s(now) == now and w.closes_at_s(now) is None
    assert w.night(now) == "2026-11-24"
    assert w.describe() == "any time"


def test_a_window_over_a_daylight_saving_change_keeps_local_hours():
    # Berlin goes from CEST to CET on 2026-10-25 at 03:00 local.
    w = Window(WindowSpec(start="01:00", end="06:00"), ZoneInfo("Europe/Berlin"))
    opens, closes = at(2026, 10, 25, 1, 0, zone="Europe/Berlin"), None
    closes = w.closes_at_s(opens + 60)
    assert closes is not None and closes - opens == 6 * 3600  # five local hours, six real


# ---------------------------------------------------------------- fire times


def test_fire_times_follow_the_cron_in_its_time_zone():
    s = spec(timezone="Europe/Berlin")
    now = at(2026, 11, 24, 12, 0, zone="Europe/Berlin")
    assert latest_fire_s(s, now) == at(2026, 11, 24, 1, 0, zone="Europe/Berlin")
    assert next_fire_s(s, now) == at(2026, 11, 25, 1, 0, zone="Europe/Berlin")
    exactly = at(2026, 11, 24, 1, 0, zone="Europe/Berlin")
    assert latest_fire_s(s, exactly) == exactly
    seconds = spec(cron="* * * * * */3")
    assert latest_fire_s(seconds, at(2026, 11, 24, 1, 0, 4)) == at(2026, 11, 24, 1, 0, 3)


@pytest.mark.parametrize(
    ("missed", "last_handled", "now", "verdict"),
    [
        ("run_late", (2026, 11, 23, 1), (2026, 11, 24, 1, 0, 30), Verdict.RUN),
        ("run_late", (2026, 11, 24, 1), (2026, 11, 24, 1, 5), Verdict.WAIT),
        ("run_late", (2026, 11, 23, 1), (2026, 11, 24, 1, 59), Verdict.RUN_LATE),
        ("run_late", (2026, 11, 23, 1), (2026, 11, 24, 2, 1), Verdict.SKIP_MISSED),
        ("skip", (2026, 11, 23, 1), (2026, 11, 24, 1, 2), Verdict.SKIP_MISSED),
        ("skip", (2026, 11, 23, 1), (2026, 11, 24, 1, 0, 40), Verdict.RUN),
        # Down for three nights: one decision about the latest fire time, not three runs.
        ("run_late", (2026, 11, 20, 1), (2026, 11, 24, 1, 30), Verdict.RUN_LATE),
        (None, None, (2026, 11, 24, 1, 0, 30), Verdict.RUN),
        (None, None, (2026, 11, 24, 9, 0), Verdict.FIRST_SEEN),
    ],
)
def test_what_a_tick_does_about_the_latest_fire_time(missed, last_handled, now, verdict):
    s = spec(missed=missed or "run_late", late_deadline_s=3600)
    decision = decide(
        s,
        last_handled_s=at(*last_handled) if last_handled else None,
        now_s=at(*now),
        on_time_s=60,
    )
    assert decision.verdict is verdict
    assert decision.fire_at_s == at(2026, 11, 24, 1, 0)
    assert decision.runs == (verdict in (Verdict.RUN, Verdict.RUN_LATE))


# ---------------------------------------------------------------- inbox names


def test_only_manifests_are_picked_up_and_local_files_settle_first():
    assert is_manifest("catalog.csv") and is_manifest("c.JSONL") and is_manifest("x.yml")
    assert not is_manifest(".catalog.csv.part") and not is_manifest("ep1.mp4")
    assert not is_manifest("~lock.csv")
    now = datetime(2026, 11, 24, tzinfo=UTC).timestamp()
    assert Dropped("a.csv", "t", now - 2).settling(now, 10)
    assert not Dropped("a.csv", "t", now - 11).settling(now, 10)
    assert not Dropped("a.csv", "t", now - 2, atomic=True).settling(now, 10)
    assert Dropped("a.csv", "abc", now).pickup_id == "a.csv@abc"
