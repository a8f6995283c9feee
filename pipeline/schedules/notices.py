"""Notifications: a log line always, and an HTTP POST when a URL is set.

Something worth telling (a scheduled batch finished, its window closed with items waiting,
a manifest was refused, a run was missed) is *posted* once per event: its text is stored in
Redis and a `notify` step is sent. The step logs the line, then POSTs `{"text": <Markdown>}`
(the body of a Slack incoming webhook; most chat tools accept it) to the schedule's
`notify_url`, or `schedule.notify_url`. A failed POST is tried again later, up to
`MAX_ATTEMPTS` times, in its own task: a notification never holds up a batch. The URL is a
secret (a Slack webhook URL is a credential): it is read from the settings when sending,
never put in a task, a log line or an error.
"""

from __future__ import annotations

import logging

import httpx
from pydantic import SecretStr

from pipeline import backoff
from pipeline.runtime import Runtime
from pipeline.schedules.store import ScheduleStore
from pipeline.steps import Next

log = logging.getLogger("lipdub.notify")

MAX_ATTEMPTS = 6


def post_notice(store: ScheduleStore, schedule: str, event: str, text: str) -> list[Next]:
    """Record the notification of `event` (once); the step that sends it, if it is new."""
    if not store.post_notice(event, schedule, text):
        return []
    return [Next("notify", schedule, event)]


def notify(rt: Runtime, schedule: str, event: str) -> list[Next]:
    """Log the notice, then deliver it to the notification URL (again later on failure)."""
    store = ScheduleStore(rt.ledger.redis)
    record = store.notice(event)
    if not record or record.get("sent"):
        return []
    attempt = store.notice_attempt(event)
    text = record.get("text", "")
    if attempt == 1:
        log.info("schedule %s: %s", schedule, " ".join(text.split()))
    url = notify_url(rt, schedule)
    if url is None:
        store.notice_sent(event, "logged")
        return []
    problem = deliver(rt.http, url, text, timeout_s=rt.settings.schedule.notify_timeout_s)
    if problem is None:
        store.notice_sent(event, "delivered")
        return []
    if attempt >= MAX_ATTEMPTS:
        log.warning(
            "schedule %s: notice %s not delivered (%s); giving up", schedule, event, problem
        )
        store.notice_sent(event, f"gave up: {problem}")
        return []
    wait_s = backoff.NOTICE.delay_s(attempt)
    log.warning(
        "schedule %s: notice %s not delivered (%s); again in %.0f s",
        schedule,
        event,
        problem,
        wait_s,
    )
    return [Next("notify", schedule, event, rt.countdown(wait_s))]


def notify_url(rt: Runtime, schedule: str) -> SecretStr | None:
    """The schedule's own URL, else the default one, else None (log only)."""
    spec = rt.schedules.get(schedule)
    if spec is not None and spec.notify_url is not None:
        return spec.notify_url
    return rt.settings.schedule.notify_url


def deliver(http: httpx.Client, url: SecretStr, text: str, *, timeout_s: float) -> str | None:
    """POST the text; None when delivered, else what went wrong (without the URL)."""
    try:
        response = http.post(url.get_secret_value(), json={"text": text}, timeout=timeout_s)
    except httpx.HTTPError as err:
        return type(err).__name__
    if response.status_code >= 300:
        return f"HTTP {response.status_code}"
    return None
