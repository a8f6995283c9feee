"""`make contract` checks the real API's answers; here it runs against the sandbox, which
speaks the documented API, so the check itself is known to work before it spends money."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.integration.stack import ROOT

CHECK = [sys.executable, "-m", "tests.contract.run"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "WAVESPEED_API_KEY"}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def test_without_a_key_it_checks_nothing_and_says_so():
    result = subprocess.run(CHECK, env=_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "WAVESPEED_API_KEY is not set: checked nothing" in result.stdout


def test_against_the_documented_api_every_shape_holds_and_the_cost_is_printed(sandbox):
    result = subprocess.run(
        [*CHECK, "--base-url", sandbox.url, "--poll-s", "0.2"],
        env=_env(WAVESPEED_API_KEY="sk-sandbox"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    assert "ok   list finds the prediction" in result.stdout
    assert "note list shows inputs: False" in result.stdout
    assert "cost of this run: $0.134" in result.stdout
    assert " passed, 0 failed" in result.stdout


def test_a_refused_key_fails_the_check(sandbox):
    result = subprocess.run(
        [*CHECK, "--base-url", sandbox.url],
        env=_env(WAVESPEED_API_KEY="sk-wrong"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "FAIL the API answered" in result.stdout and "sk-wrong" not in result.stdout
