"""The Lua scripts the ledger and the gates run in Redis, one file each, loaded by name.

Each is atomic in Redis: a state change, a reservation or a claim either happens whole or
not at all, whichever worker asks. The Python side that calls each (its KEYS and ARGV) is
in `pipeline.ledger` or `pipeline.gates`.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def lua_script(name: str) -> str:
    """The source of `pipeline/lua/<name>`."""
    return files(__package__).joinpath(name).read_text(encoding="utf-8")
