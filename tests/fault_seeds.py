"""Fault seeds chosen from the media a test actually made.

The sandbox decides each fault from (seed, fault, request key), and a submit's key holds the
SHA-256 of its inputs. Sample media are encoded by PyAV's FFmpeg from numpy arrays, and their
bytes are not promised from one install to the next: a hard-coded seed that failed a pair's
first submit on one CI machine did not on the next. A test that needs a fault at a given
attempt therefore picks its seed here, from the files it wrote.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from pipeline.sandbox.config import FaultConfig
from pipeline.sandbox.faults import FaultPlan, attempt_key, content_key


def submit_key(video: Path, audio: Path, mode: str, attempt: int) -> str:
    """The sandbox's fault key for the `attempt`-th submit (0 first) of this pair and mode."""
    video_sha = hashlib.sha256(video.read_bytes()).hexdigest()
    audio_sha = hashlib.sha256(audio.read_bytes()).hexdigest()
    return attempt_key(content_key(video_sha, audio_sha, mode), attempt)


def first_seed(wanted: Callable[[FaultPlan], bool], limit: int = 1000, **rates: float) -> int:
    """The smallest seed under which `wanted(plan)` holds for the sandbox's fault plan with
    these `rates` (FaultConfig's `*_rate` fields), e.g. `submit_error_rate=0.5`."""
    for seed in range(limit):
        if wanted(FaultPlan(FaultConfig(seed=seed, **rates))):
            return seed
    raise AssertionError(f"no seed in {limit} gives the faults this test needs")
