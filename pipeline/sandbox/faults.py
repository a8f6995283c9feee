"""Seeded, order-independent fault decisions for the sandbox.

`FaultPlan.hits("submit_drop", key)` is a pure function of (seed, fault name, key): the same
request meets the same fault in every run, however many threads race, which makes a chaos
run reproducible from its seed.
"""

from __future__ import annotations

import collections
import hashlib
import threading

from pipeline.sandbox.config import FaultConfig

TASK_ERRORS: tuple[tuple[str, bool], ...] = (
    ("No face detected in the video. Use a video with a clearly visible face.", False),
    ("Internal inference error (HTTP 500). Please retry.", True),
    ("Audio could not be decoded: unsupported or corrupt stream.", False),
    ("GPU worker lost during inference (HTTP 503). Please retry.", True),
)
"""Realistic task errors: (message, transient). Transient ones mention an HTTP 5xx."""


class FaultPlan:
    """Decides, per request, which configured fault (if any) happens."""

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self.injected: collections.Counter[str] = collections.Counter()
        """How many times each fault happened (one decision per request)."""

    def draw(self, fault: str, key: str) -> float:
        """A uniform number in [0, 1) fixed by (seed, fault, key)."""
        digest = hashlib.sha256(f"{self.config.seed}|{fault}|{key}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    def hits(self, fault: str, key: str) -> bool:
        """True when the fault named `fault` (a `FaultConfig` field minus `_rate`) happens."""
        rate: float = getattr(self.config, f"{fault}_rate")
        hit = rate > 0 and self.draw(fault, key) < rate
        if hit:
            with self._lock:
                self.injected[fault] += 1
        return hit

    def injected_counts(self) -> dict[str, int]:
        """A copy of how many times each fault happened."""
        with self._lock:
            return dict(self.injected)

    def task_error(self, key: str) -> tuple[str, bool]:
        """Which realistic error a failing task reports, fixed by key."""
        index = int(self.draw("task_error", key) * len(TASK_ERRORS))
        return TASK_ERRORS[index]
