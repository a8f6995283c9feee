"""What every `lipdub` command shares: the Typer app, the consoles, exit codes, error handling.

A `LipdubError` (and Redis or broker trouble, which the adapters turn into one) ends a command
with one line on stderr saying what is wrong and what to do; `lipdub --debug ...` shows the
traceback instead.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from enum import StrEnum
from importlib.metadata import version
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from pipeline.errors import BudgetExceeded, LipdubError, SettingsError
from pipeline.settings import Settings, load_settings

EXIT_OK = 0
EXIT_INVALID = 1
"""The manifest is invalid; every problem is listed."""
EXIT_USAGE = 2
"""Wrong usage (or a confirmation needed with no terminal to ask on)."""
EXIT_SETTINGS = 3
EXIT_BUDGET = 4
EXIT_ERROR = 5
"""Another lipdub error: a service is unreachable, storage refused, ..."""
EXIT_INCOMPLETE = 6
"""The batch finished, but not every item completed (see the report)."""
EXIT_UNKNOWN_BATCH = 7
EXIT_INTERRUPTED = 130
"""Ctrl-C while following: the batch keeps running."""

EXIT_CODES = {
    EXIT_OK: "success (for `run` and `--follow`: every item completed)",
    EXIT_INVALID: "the manifest is invalid; every problem is listed with its row and field",
    EXIT_USAGE: "wrong usage, or a confirmation is needed and there is no terminal (use --yes)",
    EXIT_SETTINGS: "invalid settings; each bad variable is named",
    EXIT_BUDGET: "the estimate is over the budget; nothing was spent",
    EXIT_ERROR: "another lipdub error (Redis, S3 or the provider unreachable, ...)",
    EXIT_INCOMPLETE: "the batch finished but some items did not complete (see the report)",
    EXIT_UNKNOWN_BATCH: "no batch with that id in this Redis",
    EXIT_INTERRUPTED: "you stopped following (Ctrl-C); the batch keeps running",
}

app = typer.Typer(
    name="lipdub",
    help="Localize a video catalog with lip-sync (WaveSpeed sync/lipsync-3).",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class _State:
    debug = False


state = _State()


class LogLevel(StrEnum):
    """Log levels a command takes (any case)."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


def _print_version(asked: bool) -> None:
    if asked:
        out.print(Text(f"lipdub {version('lipdub')}"))
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")
    ] = False,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print lipdub's version.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Localize a video catalog with lip-sync (WaveSpeed sync/lipsync-3)."""
    state.debug = debug


def emit_json(document: Any) -> None:
    """Write a JSON document to stdout, indented for reading. (rich's `print_json` parses
    and re-renders the text: 13-15 s for a 10,000-row plan.)"""
    sys.stdout.write(json.dumps(document, indent=2) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int) -> typer.Exit:
    """Print `lipdub: <message>` on stderr; the Exit to raise."""
    err.print(Text(f"lipdub: {message}"))
    return typer.Exit(code)


def settings(**overrides: Any) -> Settings:
    """The settings, or exit 3 naming every bad variable."""
    try:
        return load_settings(**overrides)
    except SettingsError as error:
        raise fail(str(error), EXIT_SETTINGS) from None


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """Turn lipdub errors into one line and an exit code (tracebacks with --debug)."""
    try:
        yield
    except typer.Exit:
        raise
    except BudgetExceeded as error:
        if state.debug:
            raise
        raise fail(str(error), EXIT_BUDGET) from None
    except LipdubError as error:
        if state.debug:
            raise
        raise fail(str(error), EXIT_ERROR) from None
    except OSError as error:
        # The machine's trouble (a path that is a file, a full disk, no permission): one line.
        if state.debug:
            raise
        where = f": {error.filename}" if error.filename else ""
        raise fail(
            f"{error.strerror or error}{where}; check the path and its permissions "
            "(--debug shows where it happened)",
            EXIT_ERROR,
        ) from None


def unknown_batch(batch_id: str) -> typer.Exit:
    """Exit 7 with what to do."""
    return fail(
        f"no batch {batch_id!r} in this Redis. `lipdub batches` lists the recent ones "
        "(check LIPDUB_REDIS__URL if you expected it here).",
        EXIT_UNKNOWN_BATCH,
    )
