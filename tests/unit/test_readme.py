"""The README and docs/ stay true: the commands they show exist, the tables they keep are the
code's, every document is linked, and the README stays a guide (under 250 lines)."""

import re
from pathlib import Path

from typer.main import get_command

from workers.cli import app

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = {p.name: p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md"))}
ALL_TEXT = "\n".join([README, *DOCS.values()])


def test_the_readme_is_a_guide_and_links_every_document():
    assert len(README.splitlines()) < 250
    for name in DOCS:
        assert f"](docs/{name})" in README, name


def test_links_between_documents_lead_somewhere():
    for name, text in {"README.md": README, **DOCS}.items():
        base = ROOT if name == "README.md" else ROOT / "docs"
        for target in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", text):
            assert (base / target).is_file(), f"{name} links {target}"


def test_the_two_commands_open_the_quick_start():
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    assert quick_start.index("make demo") < quick_start.index("make test")


def test_every_make_target_it_mentions_exists():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, flags=re.M))
    mentioned = set(re.findall(r"make ([a-z][a-z-]*)", ALL_TEXT))
    assert mentioned and mentioned <= targets, mentioned - targets


def test_every_lipdub_command_it_mentions_exists():
    commands = set(get_command(app).commands)  # type: ignore[attr-defined]
    as_code = r"(?:`|^\s*)(?:\.venv/bin/)?lipdub ([a-z][\w-]*)"
    mentioned = set(re.findall(as_code, ALL_TEXT, flags=re.M))
    assert mentioned and mentioned <= commands, mentioned - commands


def test_the_configuration_table_is_generated_from_the_settings_model():
    from pipeline.settings_doc import BEGIN, END, settings_table

    current = DOCS["configuration.md"].split(BEGIN, 1)[1].split(END, 1)[0]
    assert current.strip() == settings_table().strip(), "run `make docs` to update the docs"


def test_the_exit_code_table_is_the_one_the_cli_uses():
    from workers.cli import EXIT_CODES

    table = ALL_TEXT.split("<!-- exit-codes:begin -->", 1)[1].split("<!-- exit-codes:end -->")[0]
    rows = dict(re.findall(r"^\| `(\d+)` \| (.+) \|$", table, flags=re.M))
    assert {int(code): text for code, text in rows.items()} == EXIT_CODES


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_troubleshooting_covers_every_error_class_and_error_kind():
    from pipeline.errors import LipdubError
    from pipeline.provider.webhooks import WebhookRejected
    from pipeline.states import ErrorKind

    section = DOCS["troubleshooting.md"]
    for error in [*_subclasses(LipdubError), WebhookRejected]:
        if error.__module__.startswith("pipeline.sandbox"):
            continue
        assert f"`{error.__name__}`" in section, error.__name__
    for kind in ErrorKind:
        assert f"| `{kind.value}` |" in section, kind.value


def test_every_error_lipdub_raises_is_in_the_drawn_tree():
    import importlib
    import pkgutil

    import pipeline
    import pipeline.errors
    import workers
    from pipeline.errors import LipdubError

    for package in (pipeline, workers):  # every module, so every error class is defined
        for found in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if not found.name.endswith("__main__"):
                importlib.import_module(found.name)

    for error in _subclasses(LipdubError):
        if error.__module__.startswith("pipeline.sandbox"):
            continue  # the sandbox's own, never raised by lipdub
        assert error.__module__ == "pipeline.errors", error
        assert error.__name__ in (pipeline.errors.__doc__ or ""), error
