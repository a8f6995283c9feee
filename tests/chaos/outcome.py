"""What a fault scenario proved: items completed, failed (and why), paid twice, lost.

Read from the two witnesses that do not depend on lipdub being right: the ledger's final
report for what each item became, and the sandbox's audit log for what was paid.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

FINAL_STATES = {"completed", "failed", "skipped", "cancelled", "needs_attention"}


@dataclass
class Outcome:
    """One row of the chaos table."""

    scenario: str
    items: int
    faults: str
    """What was injected, in words with counts (e.g. `6 kills`, `429 x 41, 5xx x 12`)."""
    completed: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    """Items not completed, by `state/error_kind`."""
    duplicate_submissions: int = 0
    lost: int = 0
    wall_s: float = 0.0

    def row(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "items": self.items,
            "faults injected": self.faults,
            "completed": self.completed,
            "failed (reason)": ", ".join(f"{k} {v}" for k, v in sorted(self.failed.items())) or "-",
            "duplicate submissions": self.duplicate_submissions,
            "lost": self.lost,
            "wall s": round(self.wall_s, 1),
        }


def paid_pairs(audit: list[dict[str, Any]]) -> Counter[tuple[str, str, str]]:
    """How many tasks the provider created for each (video, audio, sync_mode) pair."""
    return Counter(
        (str(e["video_sha256"]), str(e["audio_sha256"]), str(e["sync_mode"]))
        for e in audit
        if str(e.get("outcome", "")).startswith("accepted")
    )


def duplicate_submissions(audit: list[dict[str, Any]]) -> int:
    """Tasks created beyond the first for a pair: money paid twice."""
    return sum(count - 1 for count in paid_pairs(audit).values())


def judge(
    scenario: str,
    faults: str,
    report: dict[str, Any],
    audit: list[dict[str, Any]],
    expected_items: int,
    wall_s: float,
) -> Outcome:
    """The outcome of a finished (or abandoned) batch."""
    items = report.get("items_detail", [])
    failed: Counter[str] = Counter()
    completed = 0
    final = 0
    for item in items:
        state = item["state"]
        if state in FINAL_STATES:
            final += 1
        if state == "completed":
            completed += 1
        else:
            failed[f"{state}/{item.get('error_kind') or '-'}"] += 1
    return Outcome(
        scenario=scenario,
        items=expected_items,
        faults=faults,
        completed=completed,
        failed=dict(failed),
        duplicate_submissions=duplicate_submissions(audit),
        lost=expected_items - final,
        wall_s=wall_s,
    )
