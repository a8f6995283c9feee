"""The README stays true: the commands it shows exist."""

import re
from pathlib import Path

from typer.main import get_command

from workers.cli import app

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_two_commands_open_the_quick_start():
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    assert quick_start.index("make demo") < quick_start.index("make test")


def test_every_make_target_it_mentions_exists():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, flags=re.M))
    mentioned = set(re.findall(r"make ([a-z][a-z-]*)", README))
    assert mentioned and mentioned <= targets, mentioned - targets


def test_every_lipdub_command_it_mentions_exists():
    commands = set(get_command(app).commands)  # type: ignore[attr-defined]
    as_code = r"(?:`|^\s*)(?:\.venv/bin/)?lipdub ([a-z][\w-]*)"
    mentioned = set(re.findall(as_code, README, flags=re.M))
    assert mentioned and mentioned <= commands, mentioned - commands
