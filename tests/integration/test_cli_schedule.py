"""`lipdub schedule ...` as a user runs it: list, run-now, and a bad schedules file."""

from __future__ import annotations

import json

from tests.integration.stack import write_manifest


def schedules_yaml(inbox, **fields) -> str:
    spec = {"cron": "0 1 * * *", "timezone": "Europe/Berlin", "inbox": str(inbox), **fields}
    return json.dumps({"schedules": {"nightly": spec}})


def test_run_now_picks_the_inbox_up_and_list_shows_the_outcome(cli, tmp_path):
    inbox = tmp_path / "inbox"
    write_manifest(inbox, [("r0", 1.0, 1.0, "cut_off")])
    (inbox / "broken.csv").write_text("id,video\nx,a.mp4\n")
    env = {"LIPDUB_SCHEDULE__YAML": schedules_yaml(inbox), "LIPDUB_SCHEDULE__INBOX_SETTLE_S": "0"}
    ran = cli("schedule", "run-now", "nightly", **env)
    assert ran.returncode == 0, ran.stderr
    assert "Started s" in ran.stdout and "lipdub status s" in ran.stdout
    assert "Refused broken.csv" in ran.stdout
    assert (inbox / "processing" / "manifest.csv").exists()
    assert (inbox / "failed" / "broken.errors.txt").exists()

    listed = cli("schedule", "list", **env)
    assert listed.returncode == 0, listed.stderr
    assert "nightly" in listed.stdout and "1 started, 1 refused" in listed.stdout
    as_json = json.loads(cli("schedule", "list", "--json", **env).stdout)
    assert as_json[0]["next_run"].endswith("+01:00") and as_json[0]["parked_items"] == 0

    again = cli("schedule", "run-now", "nightly", "--json", **env)
    assert json.loads(again.stdout)["started"] == []


def test_an_unknown_schedule_and_a_bad_file_exit_with_what_to_fix(cli, tmp_path):
    env = {"LIPDUB_SCHEDULE__YAML": schedules_yaml(tmp_path)}
    unknown = cli("schedule", "run-now", "weekly", **env)
    assert unknown.returncode == 2 and "no schedule 'weekly' (schedules: nightly)" in unknown.stderr
    bad = cli("schedule", "list", LIPDUB_SCHEDULE__YAML=schedules_yaml(tmp_path, cron="nightly"))
    assert bad.returncode == 3
    assert "schedule 'nightly': cron: 'nightly' is not a cron expression" in bad.stderr
    beat = cli("beat", LIPDUB_SCHEDULE__YAML=schedules_yaml(tmp_path, window={"start": "1"}))
    assert beat.returncode == 3 and "window" in beat.stderr
