"""The `lipdub` command as a user runs it: a real subprocess, real files, exit codes."""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import free_port

LIPDUB = [sys.executable, "-m", "workers.cli"]


def run(args, cwd, **env):
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LIPDUB_") and k != "WAVESPEED_API_KEY"
    }
    environment.update(env)
    return subprocess.run(
        [*LIPDUB, *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def catalog(tmp_path, media):
    for key, name in [
        ("video_1s", "ep1.mp4"),
        ("video_2s", "ep2.mp4"),
        ("audio_2_4s", "ep1-de.wav"),
        ("audio_mp3", "ep2-de.mp3"),
    ]:
        shutil.copy(media[key], tmp_path / name)
    (tmp_path / "catalog.csv").write_text(
        "id,video,audio,sync_mode,language\nep1,ep1.mp4,ep1-de.wav,loop,de\nep2,ep2.mp4,ep2-de.mp3,,de\n",
        encoding="utf-8",
    )
    return tmp_path


def test_plan_prints_the_estimate_and_exits_0(catalog):
    result = run(["plan", "catalog.csv"], catalog, LIPDUB_MEDIA__CACHE_DIR=str(catalog / "cache"))
    assert result.returncode == 0, result.stderr
    assert "ep1" in result.stdout and "ep2" in result.stdout
    assert "Estimate: $0.40" in result.stdout and "Nothing was spent" in result.stdout
    # Bronze's 2 at once and 2 a minute, 20 s + 1 s per video second expected: both at once
    assert "Time: about 0:00:22 under the account's limits" in result.stdout


def test_plan_json_is_machine_readable(catalog):
    result = run(
        ["plan", "catalog.csv", "--json", "--sync-mode", "remap"],
        catalog,
        LIPDUB_MEDIA__CACHE_DIR=str(catalog / "cache"),
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["valid"] is True and data["count"] == 2 and data["total_usd"] == "0.402000"
    assert {i["sync_mode"] for i in data["items"]} == {"remap"}
    assert data["items"][0]["metadata"] == {"language": "de"}
    assert (data["duration_s"], data["duration_learned"]) == (22.0, False)


def test_an_invalid_manifest_exits_1_listing_every_problem(catalog):
    (catalog / "bad.csv").write_text(
        "id,video,audio,sync_mode\nx,nope.mp4,ep1-de.wav,wobble\n", encoding="utf-8"
    )
    result = run(["plan", "bad.csv"], catalog, LIPDUB_MEDIA__CACHE_DIR=str(catalog / "cache"))
    assert result.returncode == 1
    assert "row 1 (line 2), field 'sync_mode'" in result.stderr
    assert "row 1 (line 2), field 'video': file not found" in result.stderr
    assert "Traceback" not in result.stderr
    as_json = json.loads(
        run(
            ["plan", "bad.csv", "--json"], catalog, LIPDUB_MEDIA__CACHE_DIR=str(catalog / "cache")
        ).stdout
    )
    assert as_json["valid"] is False and {p["field"] for p in as_json["problems"]} == {
        "video",
        "sync_mode",
    }


def test_over_budget_exits_4(catalog):
    result = run(
        ["plan", "catalog.csv", "--budget", "0.10"],
        catalog,
        LIPDUB_MEDIA__CACHE_DIR=str(catalog / "cache"),
    )
    assert result.returncode == 4 and "over the budget" in result.stderr
    result = run(
        ["plan", "catalog.csv"],
        catalog,
        LIPDUB_MEDIA__CACHE_DIR=str(catalog / "cache"),
        LIPDUB_BUDGET__BATCH_USD="0.10",
    )
    assert result.returncode == 4


def test_bad_settings_exit_3_naming_the_variable(catalog):
    result = run(["plan", "catalog.csv"], catalog, LIPDUB_PRICE__RATE_PER_SECOND_USD="free")
    assert result.returncode == 3 and "LIPDUB_PRICE__RATE_PER_SECOND_USD" in result.stderr


def test_sandbox_command_serves_until_sigterm(tmp_path):
    port = free_port()
    config = tmp_path / "sandbox.toml"
    config.write_text('api_keys = ["k-test"]\n')
    process = subprocess.Popen(
        [*LIPDUB, "sandbox", "--port", str(port), "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                response = httpx.get(
                    f"http://127.0.0.1:{port}/api/v3/balance",
                    headers={"Authorization": "Bearer k-test"},
                )
                break
            except httpx.ConnectError:
                assert process.poll() is None, process.stderr.read()
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert response.status_code == 200 and response.json()["data"]["balance"] == 1000.0
        # A submit whose input URLs carry a presigned signature: the signature is never logged
        signed = f"http://127.0.0.1:{port}/files/none.mp4?X-Amz-Signature=deadbeef1234"
        httpx.post(
            f"http://127.0.0.1:{port}/api/v3/sync/lipsync-3",
            headers={"Authorization": "Bearer k-test"},
            json={"video": signed, "audio": signed},
        )
    finally:
        process.send_signal(signal.SIGTERM)
        out, errors = process.communicate(timeout=10)
    assert process.returncode == 0
    assert "listening on" in out and "sandbox stopped" in out
    assert "deadbeef1234" not in out + errors


def test_sandbox_with_a_bad_config_says_so(tmp_path):
    config = tmp_path / "sandbox.toml"
    config.write_text("starts_per_minute = 'many'\n")
    result = run(["sandbox", "--config", str(config)], tmp_path)
    assert result.returncode == 3 and "starts_per_minute" in result.stderr


def test_help_lists_the_commands(tmp_path):
    result = run(["--help"], tmp_path)
    assert result.returncode == 0 and "plan" in result.stdout and "sandbox" in result.stdout


def test_samples_writes_a_catalog_that_plans(tmp_path):
    result = run(["samples", "demo"], tmp_path)
    assert result.returncode == 0, result.stderr
    planned = run(
        ["plan", "demo/catalog.csv", "--json"],
        tmp_path,
        LIPDUB_MEDIA__CACHE_DIR=str(tmp_path / "cache"),
    )
    data = json.loads(planned.stdout)
    assert data["valid"] and {i["sync_mode"] for i in data["items"]} == {
        "bounce",
        "loop",
        "cut_off",
        "silence",
        "remap",
    }


def test_plan_shows_progress_on_a_terminal(catalog):
    import pty

    primary, secondary = pty.openpty()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LIPDUB_")}
    environment.update(LIPDUB_MEDIA__CACHE_DIR=str(catalog / "cache"), COLUMNS="100", TERM="xterm")
    process = subprocess.Popen(
        [*LIPDUB, "plan", "catalog.csv"],
        cwd=catalog,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=secondary,
        text=True,
    )
    os.close(secondary)
    out, _ = process.communicate(timeout=60)
    chunks = []
    while True:
        try:
            data = os.read(primary, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(primary)
    terminal = b"".join(chunks).decode(errors="replace")
    assert process.returncode == 0
    assert "Checking media" in terminal and "4/4" in terminal
    assert "Estimate:" in out  # the table itself still goes to stdout


def test_version_short_help_and_shell_completion(tmp_path):
    version = run(["--version"], tmp_path)
    assert version.returncode == 0 and version.stdout.strip().startswith("lipdub 0.")
    short = run(["-h"], tmp_path)
    assert short.returncode == 0 and "run" in short.stdout and "plan" in short.stdout
    assert run(["run", "-h"], tmp_path).returncode == 0
    # Completion is for the shell the command runs in (typer asks the process tree): bash's
    # here, whatever shell runs the tests (under `sh` typer would refuse, "Shell sh not
    # supported"). The trailing `exit $?` keeps bash the parent (a lone command is exec'd).
    script = shlex.join([*LIPDUB, "--show-completion"]) + "; exit $?"
    completion = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert completion.returncode == 0 and "complete" in completion.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["worker", "--pool", "gevent"],
        ["worker", "--loglevel", "verbose"],
        ["beat", "--loglevel", "loud"],
        ["report", "b1", "--format", "pdf"],
    ],
)
def test_options_with_a_fixed_set_of_values_refuse_others_at_once(tmp_path, args):
    result = run(args, tmp_path)
    # Then it exits 2 (usage) before doing anything, naming the option and the choices
    assert result.returncode == 2, result.stderr
    assert "Invalid value for '--" in result.stderr and "Traceback" not in result.stderr
