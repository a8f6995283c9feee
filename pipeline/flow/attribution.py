"""Which prediction a lost submit created, when the provider's list hides the inputs. Pure.

WaveSpeed's list call shows no inputs and the API has no idempotency key, so a submit whose
answer was lost can only be told from other predictions by what is observable:

- **when it was created**: our POST was on its way between `sent_from` (the intent, written
  before the POST) and `sent_until` (when we learned its outcome was unknown), so its
  prediction was created in that span, read on the provider's clock: shifted by the
  `ClockOffset` measured from the answered submits (or the configured skew before any);
- **how long its output lasts**, once it has one: the sync mode's rule fixes it to the frame.

Every prediction already attributed to a lipdub item is left out before this runs. What
remains are the *unsettled submits* (POSTs whose answer never came, or has not come yet) and
the *unattributed candidates*. A candidate fits a submit when both observables agree. The
submits and candidates that fit each other, directly or through others, form a group. A
submit's prediction is adopted only when its group holds exactly as many candidates as
submits and every way of giving each submit one fitting candidate gives it the same one.
Anything else is waited out (a POST of the group is still open) or handed to a person with
the group's candidates as evidence. Nothing here ever leads to a re-post: that needs no
candidate at all, which the caller decides with a much wider window.

    >>> me = Submit("b:1", 100.0, 100.5, 6.0)
    >>> skew = ClockOffset(-2.0, 2.0)
    >>> attribute("b:1", [me], [Candidate("p1", 100.2, None)], offset=skew, now=200.0)
    Attribution(verdict=<Verdict.ADOPT: 'adopt'>, prediction_id='p1', group=('p1',))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from pipeline.sync_modes import within_one_frame

MAX_GROUP = 8
"""Groups larger than this are not solved (the count of matchings explodes): a person looks."""


@dataclass(frozen=True)
class ClockOffset:
    """Where the provider's clock is against ours: `lo_s <= provider - ours <= hi_s`."""

    lo_s: float
    hi_s: float

    @classmethod
    def measured(
        cls, bounds: list[tuple[float, float]], *, fallback_s: float, margin_s: float = 0.25
    ) -> ClockOffset:
        """The offset the answered submits prove: each one's prediction was created between
        our POST and its answer, so `created - answered <= offset <= created - sent`. The
        intersection of those bounds, widened by `margin_s`; ±`fallback_s` when there are
        fewer than three, or they disagree (a clock jumped).

        >>> ClockOffset.measured([(-0.3, 0.1), (-0.1, 0.4), (-0.2, 0.2)], fallback_s=5.0)
        ClockOffset(lo_s=-0.35, hi_s=0.35)
        >>> ClockOffset.measured([(1.0, 2.0), (3.0, 4.0), (1.0, 4.0)], fallback_s=5.0)
        ClockOffset(lo_s=-5.0, hi_s=5.0)
        """
        if len(bounds) >= 3:
            lo, hi = max(b[0] for b in bounds), min(b[1] for b in bounds)
            if lo <= hi:
                return cls(round(lo - margin_s, 6), round(hi + margin_s, 6))
        return cls(-fallback_s, fallback_s)


@dataclass(frozen=True)
class Submit:
    """A POST whose prediction is not known: sent between `sent_from` and `sent_until`
    (epoch s; None while the POST may still be answered)."""

    member: str
    sent_from: float
    sent_until: float | None
    expected_output_s: float


@dataclass(frozen=True)
class Candidate:
    """An unattributed prediction: when the provider says it was created (epoch s), and its
    output's duration when one was measured."""

    id: str
    created_at: float
    output_s: float | None


class Verdict(StrEnum):
    ADOPT = "adopt"
    """Exactly one prediction can be this submit's."""
    NONE = "none"
    """No candidate fits this submit."""
    WAIT = "wait"
    """A POST of the group may still be answered; look again shortly."""
    AMBIGUOUS = "ambiguous"
    """More than one assignment fits: the group's candidates are the evidence."""


@dataclass(frozen=True)
class Attribution:
    verdict: Verdict
    prediction_id: str | None = None
    group: tuple[str, ...] = ()
    """The candidate ids of the submit's group (evidence for a person)."""


def fits(candidate: Candidate, submit: Submit, *, offset: ClockOffset, now: float) -> bool:
    """True when the candidate could be the submit's prediction.

    >>> s = Submit("b:1", 100.0, 101.0, 6.0)
    >>> fits(Candidate("p", 102.5, None), s, offset=ClockOffset(-2.0, 2.0), now=500.0)
    True
    >>> fits(Candidate("p", 104.0, None), s, offset=ClockOffset(-2.0, 2.0), now=500.0)
    False
    >>> fits(Candidate("p", 100.5, 9.0), s, offset=ClockOffset(-2.0, 2.0), now=500.0)
    False
    """
    until = submit.sent_until if submit.sent_until is not None else now
    if not submit.sent_from + offset.lo_s <= candidate.created_at <= until + offset.hi_s:
        return False
    return candidate.output_s is None or within_one_frame(
        candidate.output_s, submit.expected_output_s
    )


def attribute(
    member: str,
    submits: Sequence[Submit],
    candidates: Sequence[Candidate],
    *,
    offset: ClockOffset,
    now: float,
) -> Attribution:
    """Decide which candidate (if any) is the prediction of the submit named `member`."""
    by_member = {s.member: s for s in submits}
    edges = {
        s.member: [c.id for c in candidates if fits(c, s, offset=offset, now=now)] for s in submits
    }
    if not edges.get(member):
        return Attribution(Verdict.NONE)
    group_submits, group_candidates = _group(member, edges)
    evidence = tuple(sorted(group_candidates))
    if any(by_member[m].sent_until is None for m in group_submits if m != member):
        return Attribution(Verdict.WAIT, group=evidence)
    if len(group_submits) != len(group_candidates) or len(group_submits) > MAX_GROUP:
        return Attribution(Verdict.AMBIGUOUS, group=evidence)
    choices = {assignment[member] for assignment in _matchings(sorted(group_submits), edges, set())}
    if len(choices) == 1:
        return Attribution(Verdict.ADOPT, choices.pop(), evidence)
    return Attribution(Verdict.AMBIGUOUS, group=evidence)


def _group(member: str, edges: dict[str, list[str]]) -> tuple[set[str], set[str]]:
    """The submits and candidates connected to `member` through fits."""
    owners: dict[str, set[str]] = {}
    for submit, ids in edges.items():
        for candidate in ids:
            owners.setdefault(candidate, set()).add(submit)
    submits, found = {member}, set[str]()
    todo = [member]
    while todo:
        for candidate in edges[todo.pop()]:
            if candidate in found:
                continue
            found.add(candidate)
            for other in owners[candidate] - submits:
                submits.add(other)
                todo.append(other)
    return submits, found


def _matchings(
    order: list[str], edges: dict[str, list[str]], taken: set[str]
) -> list[dict[str, str]]:
    """Every way to give each submit in `order` its own fitting candidate."""
    if not order:
        return [{}]
    first, rest = order[0], order[1:]
    found = []
    for candidate in edges[first]:
        if candidate in taken:
            continue
        for tail in _matchings(rest, edges, taken | {candidate}):
            found.append({first: candidate, **tail})
    return found
