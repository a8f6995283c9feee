"""What a fault scenario proved: items completed, failed (and why), paid twice, lost.

Read from the two witnesses that do not depend on lipdub being right: the ledger's final
report for what each item became, and the sandbox's audit log for what was paid.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx

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
    evidence: list[dict[str, Any]] = field(default_factory=list)
    """For each pair paid twice, the sandbox's audit entries of its submits (to diagnose)."""
    books_off_usd: Decimal | None = None
    resume_s: float | None = None
    """After a worker died: the longest any step it held waited to be taken up again."""
    """The provider's bill less what the report accounts for (lipdub's spend plus the
    audit's unattributed and unbooked charges): 0 when every charge is in the books."""

    def row(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "items": self.items,
            "faults injected": self.faults,
            "completed": self.completed,
            "failed (reason)": ", ".join(f"{k} {v}" for k, v in sorted(self.failed.items())) or "-",
            "duplicate submissions": self.duplicate_submissions,
            "lost": self.lost,
            "books = bill": "-"
            if self.books_off_usd is None
            else "yes"
            if self.books_off_usd == 0
            else f"OFF BY ${self.books_off_usd}",
            "resume s": "-" if self.resume_s is None else round(self.resume_s, 1),
            "wall s": round(self.wall_s, 1),
        }


def accepted(audit: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Submits that created a task, whatever answer the client got."""
    return [e for e in audit if str(e.get("outcome", "")).startswith("accepted")]


def paid_pairs(audit: list[dict[str, Any]]) -> Counter[tuple[str, str, str]]:
    """How many tasks the provider created for each (video, audio, sync_mode) pair."""
    return Counter(_pair(e) for e in accepted(audit))


def charged_pairs(
    audit: list[dict[str, Any]], tasks: list[dict[str, Any]]
) -> Counter[tuple[str, str, str]]:
    """How many tasks that were, or may yet be, charged the provider made for each pair: a
    task that ended without an output (failed, cancelled, timeout, deleted) and was not
    charged (the sandbox's default) does not count."""
    free = {t["prediction_id"] for t in tasks if _ended_free(t)}
    return Counter(_pair(e) for e in accepted(audit) if e["prediction_id"] not in free)


def _ended_free(task: dict[str, Any]) -> bool:
    ended = task["status"] in ("failed", "cancelled", "timeout", "deleted")
    return ended and Decimal(str(task.get("charged_usd") or "0")) == 0


def duplicate_submissions(audit: list[dict[str, Any]], tasks: list[dict[str, Any]]) -> int:
    """Tasks for a pair beyond the first that were, or may yet be, charged: money paid twice.

    A task the provider ended without an output is not charged, so submitting the pair again
    after it (a bounded retry of a transient failure) is not a duplicate; a second task while
    the first completed, or is still running, is.
    """
    return sum(count - 1 for count in charged_pairs(audit, tasks).values())


def duplicate_evidence(
    audit: list[dict[str, Any]], tasks: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Every submit of each pair counted by `duplicate_submissions`, in order, with its time,
    outcome and task status: enough to tell a late-created POST from a retry."""
    status = {t["prediction_id"]: t["status"] for t in tasks}
    free = {t["prediction_id"] for t in tasks if _ended_free(t)}
    live = [e for e in accepted(audit) if e["prediction_id"] not in free]
    twice = {pair for pair, count in Counter(_pair(e) for e in live).items() if count > 1}
    return [
        {
            "pair": [sha[:12] for sha in pair[:2]] + [pair[2]],
            "submits": [
                {
                    "ts": e["ts"],
                    "outcome": e["outcome"],
                    "prediction_id": e.get("prediction_id"),
                    "status": status.get(e.get("prediction_id", "")),
                }
                for e in audit
                if "video_sha256" in e and _pair(e) == pair
            ],
        }
        for pair in sorted(twice)
    ]


def _pair(entry: dict[str, Any]) -> tuple[str, str, str]:
    return (str(entry["video_sha256"]), str(entry["audio_sha256"]), str(entry["sync_mode"]))


def sandbox_witness(sandbox_url: str) -> dict[str, Any]:
    """What the sandbox saw: its audit of submits, its tasks' states, its fault counters."""
    with httpx.Client(base_url=sandbox_url, timeout=10) as http:
        return {
            name: http.get(f"/_sandbox/{name}").raise_for_status().json()
            for name in ("audit", "tasks", "stats", "bill")
        }


def judge(
    scenario: str,
    faults: str,
    report: dict[str, Any],
    witness: dict[str, Any],
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
        duplicate_submissions=duplicate_submissions(witness["audit"], witness["tasks"]),
        evidence=duplicate_evidence(witness["audit"], witness["tasks"]),
        lost=expected_items - final,
        wall_s=wall_s,
        books_off_usd=books_off_usd(report, witness),
    )


def books_off_usd(report: dict[str, Any], witness: dict[str, Any]) -> Decimal | None:
    """The sandbox's bill less the report's spend, unattributed and unbooked charges (None
    without an audit in the report).

    An unbooked prediction still running when the audit looked (an item timed out while its
    prediction ran on: the fault `never_finish`, or a slow one) is in the report as pending
    at its item's estimate: it may yet be charged, and the bill cannot hold it yet, so it is
    not compared (`lipdub audit` reads what it came to later). Every ended one is."""
    audit = report.get("audit")
    if not audit or "bill" not in witness:
        return None
    unbooked_ended = sum(
        (Decimal(u["cost_usd"]) for u in audit.get("unbooked") or [] if not u.get("pending")),
        Decimal(0),
    )
    books = (
        Decimal(str(report.get("spent_usd") or 0))
        + Decimal(audit["unattributed_usd"])
        + unbooked_ended
    )
    return Decimal(witness["bill"]["billed_usd"]) - books
