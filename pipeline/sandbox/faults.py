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

TASK_ERRORS: tuple[tuple[str, int], ...] = (
    ("No face detected in the video. Use a video with a clearly visible face.", 1403),
    ("Internal inference error. Please retry.", 5000),
    ("Audio could not be decoded: unsupported or corrupt stream.", 1401),
    ("GPU worker lost during inference. Please retry.", 5003),
)
"""Realistic task errors: (message, code). WaveSpeed's codes (docs/error-codes): 1xxx the
client's input, 5xxx the service's own trouble (5000 internal, 5003 unavailable, 5004 timeout)."""

DOWNLOAD_FAILED_CODE = 1402
ODD_STATUSES = ("cancelled", "timeout", "deleted")


def content_key(video_sha256: str, audio_sha256: str, sync_mode: str) -> str:
    """The key of a submit's inputs: what the faults of its submits and tasks are keyed by.

    >>> content_key("ab", "cd", "loop")
    'ab:cd:loop'
    """
    return f"{video_sha256}:{audio_sha256}:{sync_mode}"


def attempt_key(key: str, attempt: int) -> str:
    """The fault key of the `attempt`-th submit (0 first) of a content key.

    >>> attempt_key("ab:cd:loop", 1)
    'ab:cd:loop#1'
    """
    return f"{key}#{attempt}"


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

    def task_error(self, key: str) -> tuple[str, int]:
        """Which realistic error (message, code) a failing task reports, fixed by key."""
        index = int(self.draw("task_error", key) * len(TASK_ERRORS))
        return TASK_ERRORS[index]

    def odd_status(self, key: str) -> str:
        """Which of the rarer terminal statuses a task ends in, fixed by key."""
        return ODD_STATUSES[int(self.draw("odd_status", key) * len(ODD_STATUSES))]
