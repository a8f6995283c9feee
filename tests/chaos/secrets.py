"""Look for a secret everywhere lipdub writes: text as written, and the base64 bodies of
Celery's messages, which would hide a secret from a plain search."""

from __future__ import annotations

import base64
import binascii
import re
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import redis

_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{24,}={0,2}")


def readable_forms(text: str) -> Iterator[str]:
    """The text, and every base64 run inside it decoded (a Celery message's body is base64,
    wherever it sits: a queue, the unacked hash, a MONITOR line)."""
    yield text
    for run in _BASE64_RUN.findall(text):
        padded = run + "=" * (-len(run) % 4)
        try:
            yield base64.b64decode(padded).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            continue


def leaks(secret: str, texts: Iterable[str]) -> list[str]:
    """Every text (or decoded message body) that contains the secret, shortened."""
    found = []
    for text in texts:
        for form in readable_forms(text):
            if secret in form:
                at = form.index(secret)
                found.append(form[max(0, at - 80) : at + 80])
    return found


class RedisMonitor:
    """Records every command Redis runs (MONITOR) while it is open: ledger writes, gate
    scripts and the LPUSHes that carry Celery's messages."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.commands: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._record, daemon=True)
        self._ready = threading.Event()

    def _record(self) -> None:
        with self.client.monitor() as monitor:
            self._ready.set()
            for event in monitor.listen():
                self.commands.append(str(event.get("command", "")))
                if self._stop.is_set():
                    return

    def __enter__(self) -> RedisMonitor:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self.client.ping()  # one more command, so the listener wakes up and sees the stop
        self._thread.join(5)
        self.client.close()


def redis_values(url: str) -> Iterator[str]:
    """Every key and value in Redis, whatever its type, as text."""
    client = redis.Redis.from_url(url, decode_responses=False)
    try:
        for key in client.scan_iter(count=500):
            kind = client.type(key).decode()
            value: Any
            if kind == "string":
                value = client.get(key)
            elif kind == "hash":
                value = client.hgetall(key)
            elif kind == "list":
                value = client.lrange(key, 0, -1)
            elif kind == "set":
                value = client.smembers(key)
            elif kind == "zset":
                value = client.zrange(key, 0, -1, withscores=True)
            else:
                value = kind
            yield key.decode("utf-8", "replace")
            yield _text(value)
    finally:
        client.close()


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return " ".join(f"{_text(k)}={_text(v)}" for k, v in value.items())
    if isinstance(value, (list, set, tuple)):
        return " ".join(_text(v) for v in value)
    return str(value)
