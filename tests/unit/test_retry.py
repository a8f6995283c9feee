"""Retry decisions: Retry-After parsing, capped backoff with jitter, and what may be retried."""

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from pipeline.provider.retry import (
    MAX_RETRY_AFTER_S,
    RetryPolicy,
    backoff_delay_s,
    parse_retry_after_s,
    retry_delay_s,
    should_retry,
    should_retry_status,
)


def test_retry_after_in_seconds_and_as_http_date():
    assert parse_retry_after_s("7") == 7.0
    assert parse_retry_after_s(" 1.5 ") == 1.5
    now = datetime(2026, 1, 1, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after_s(header, now_s=now.timestamp()) == pytest.approx(30.0)


@pytest.mark.parametrize("value", [None, "", "soon", "nan"])
def test_unusable_retry_after_is_none(value):
    assert parse_retry_after_s(value) is None


def test_retry_after_is_clamped():
    assert parse_retry_after_s("-5") == 0.0
    assert parse_retry_after_s("99999999") == MAX_RETRY_AFTER_S


def test_backoff_grows_and_is_capped_with_jitter():
    rng = random.Random(1)
    delays = [backoff_delay_s(n, base_delay_s=1.0, max_delay_s=8.0, rng=rng) for n in range(1, 9)]
    caps = [1, 2, 4, 8, 8, 8, 8, 8]
    for delay, cap in zip(delays, caps, strict=True):
        assert cap / 2 <= delay <= cap
    assert len({round(d, 6) for d in delays[3:]}) > 1  # jitter: not all the same


def test_backoff_counts_attempts_from_one():
    with pytest.raises(ValueError):
        backoff_delay_s(0, base_delay_s=1.0, max_delay_s=2.0)


def test_server_hint_wins_over_computed_backoff():
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=2.0)
    assert retry_delay_s(1, policy, retry_after_s=12.0) == 12.0
    assert retry_delay_s(1, policy, retry_after_s=0.0) == 0.0
    assert 0.5 <= retry_delay_s(1, policy) <= 1.0


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retryable(status):
    assert should_retry_status(status)


@pytest.mark.parametrize("status", [200, 400, 401, 403, 404, 422])
def test_permanent_statuses_are_not(status):
    assert not should_retry_status(status)


def test_an_unsafe_call_is_never_retried():
    policy = RetryPolicy(max_attempts=10)
    assert should_retry(1, policy, safe=True, retryable=True)
    assert not should_retry(1, policy, safe=False, retryable=True)
    assert not should_retry(10, policy, safe=True, retryable=True)
    assert not should_retry(1, policy, safe=True, retryable=False)
