"""Notices: a log line always, and a message to each notice target that applies.

Something worth telling (a batch finished; for scheduled batches also a window closed with
items waiting, a manifest was refused, a run was missed) is *posted* once per event: its
Markdown text is stored in Redis and a `notify` step is sent. The step logs the line, then
delivers the text through [apprise](https://github.com/caronc/apprise), which writes it in
each service's own format (Slack's mrkdwn, Mattermost's Markdown, plain text in a generic JSON
webhook's `message`, HTML e-mail). Each target that fails is tried again later, up to
`MAX_ATTEMPTS` times, in its own task: a notice never holds up a batch.

Who is told (`targets`): a batch started with `lipdub run --notify URL` tells those URLs; a
scheduled batch its schedule's `notify_url`, else `schedule.notify_url`; every batch also
`notify.urls`. The URLs are secrets (a Slack webhook URL is a credential): a batch's own are
kept in Redis beside its record (`lipdub:batch:<b>:notify`), never in a task, a log line, an
error or a report; apprise's own logging is silenced for the same reason.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import apprise
from pydantic import SecretStr

from pipeline import backoff, keys
from pipeline.notice_urls import unusable
from pipeline.reporting.summary import Summary
from pipeline.runtime import Runtime
from pipeline.schedules.store import ScheduleStore
from pipeline.steps import Next

log = logging.getLogger("lipdub.notify")
# Apprise logs the URL it could not use (a secret) and the services' answers: keep it quiet.
logging.getLogger("apprise").setLevel(logging.CRITICAL)

MAX_ATTEMPTS = 6
BATCH_SOURCE = "batch:"
"""The notices of a batch's own targets are posted under `batch:<id>`; a schedule's under its
name."""


def post_notice(store: ScheduleStore, source: str, event: str, text: str) -> list[Next]:
    """Record the notice of `event` (once); the step that sends it, if it is new. `source`
    is a schedule's name, or `batch:<id>` (`batch_source`)."""
    if not store.post_notice(event, source, text):
        return []
    return [Next("notify", source, event)]


def batch_source(batch_id: str) -> str:
    return f"{BATCH_SOURCE}{batch_id}"


def targets(rt: Runtime, source: str) -> list[SecretStr]:
    """Where a notice of `source` goes, each URL once."""
    found: list[SecretStr] = []
    if source.startswith(BATCH_SOURCE):
        batch_id = source.removeprefix(BATCH_SOURCE)
        own = rt.ledger.redis.get(keys.batch_notify(batch_id))
        found += [SecretStr(str(url)) for url in json.loads(str(own))] if own else []
    else:
        spec = rt.schedules.get(source)
        if spec is not None and spec.notify_url is not None:
            found.append(spec.notify_url)
        elif rt.settings.schedule.notify_url is not None:
            found.append(rt.settings.schedule.notify_url)
    found += rt.settings.notify.urls
    unique: dict[str, SecretStr] = {}
    for url in found:
        unique.setdefault(url.get_secret_value(), url)
    return list(unique.values())


def notify(rt: Runtime, source: str, event: str) -> list[Next]:
    """Log the notice, then deliver it to each target not yet reached (again later on failure)."""
    store = ScheduleStore(rt.ledger.redis)
    record = store.notice(event)
    if not record or record.get("sent"):
        return []
    attempt = store.notice_attempt(event)
    text = record.get("text", "")
    if attempt == 1:
        log.info("%s: %s", source, " ".join(text.split()))
    urls = targets(rt, source)
    if not urls:
        store.notice_sent(event, "logged")
        return []
    reached = set(json.loads(record.get("reached") or "[]"))
    problems = []
    for n, url in enumerate(urls):
        if n in reached:
            continue
        problem = deliver(url, text, timeout_s=rt.settings.schedule.notify_timeout_s)
        if problem is None:
            reached.add(n)
            store.notice_reached(event, sorted(reached))
        else:
            problems.append(f"target {n + 1}: {problem}")
    if not problems:
        store.notice_sent(event, "delivered")
        return []
    if attempt >= MAX_ATTEMPTS:
        log.warning("%s: notice %s not delivered (%s); giving up", source, event, problems)
        store.notice_sent(event, f"gave up: {'; '.join(problems)}")
        return []
    wait_s = backoff.NOTICE.delay_s(attempt)
    log.warning(
        "%s: notice %s not delivered (%s); again in %.0f s",
        source,
        event,
        "; ".join(problems),
        wait_s,
    )
    return [Next("notify", source, event, rt.countdown(wait_s), "the notice's service")]


def deliver(url: SecretStr, text: str, *, timeout_s: float) -> str | None:
    """Send the Markdown text through apprise; None when delivered, else what went wrong
    (never the URL)."""
    bus = apprise.Apprise(asset=apprise.AppriseAsset(app_id="lipdub", app_desc="lipdub"))
    if not bus.add(_with_timeouts(url.get_secret_value(), timeout_s)):
        return "not a URL apprise knows"
    delivered = bus.notify(title="lipdub", body=text, body_format=apprise.NotifyFormat.MARKDOWN)
    return None if delivered else "the service refused it or could not be reached"


def _with_timeouts(url: str, timeout_s: float) -> str:
    """The URL with apprise's connect and read timeouts (`cto`, `rto`) unless it sets them.

    >>> _with_timeouts("json://h/p", 10.0)
    'json://h/p?cto=10.0&rto=10.0'
    >>> _with_timeouts("json://h/p?rto=3", 10.0)
    'json://h/p?rto=3&cto=10.0'
    """
    extra = [f"{name}={timeout_s}" for name in ("cto", "rto") if f"{name}=" not in url]
    if not extra:
        return url
    return url + ("&" if "?" in url else "?") + "&".join(extra)


def finished_text(name: str, batch_id: str, s: Summary, filed_as: str | None = None) -> str:
    """The Markdown a finished batch's notice carries (`name`: its schedule's, or its own;
    `filed_as`: where a schedule filed its manifest)."""
    lines = [
        f"**{name}**: batch `{batch_id}` finished: {s.completed}/{s.items} completed, "
        f"cost ${s.cost_usd:.2f} (estimate ${s.estimate_usd:.2f}).",
    ]
    if filed_as is not None:
        lines.append(f"Manifest filed as `{filed_as}`, report beside it.")
    others = {state: n for state, n in s.counts.items() if n and state != "completed"}
    if others:
        lines.append("Not completed: " + ", ".join(f"{n} {state}" for state, n in others.items()))
        for item in s.problems[:10]:
            lines.append(
                f"• `{item['id']}` (row {item['row']}): {item.get('error') or item['state']}"
            )
        if s.problems_total > 10:
            lines.append(f"• … and {s.problems_total - 10} more (see the report)")
        lines.append(f"Run them again with: `lipdub retry-failed {batch_id}`")
    return "\n".join(lines)


def check_targets(urls: Sequence[str]) -> list[str]:
    """What is wrong with each unusable URL, by its position (never repeating it)."""
    return [f"--notify #{n + 1}: {why}" for n, url in enumerate(urls) if (why := unusable(url))]
