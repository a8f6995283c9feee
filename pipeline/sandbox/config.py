"""The sandbox's configuration: account, timing, limits, and faults by seeded probability.

Load from TOML or JSON with `SandboxConfig.from_file(path)`; every field has a default, so
`SandboxConfig()` is a healthy, fast provider that accepts the key `sk-sandbox`.
"""

from __future__ import annotations

import json
import tomllib
from decimal import Decimal
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class FaultConfig(BaseModel):
    """Probabilities (0..1) of each fault. Decisions are a hash of (seed, fault, request key),
    so the same inputs meet the same faults whatever the order or concurrency of requests."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    rate_limit_rate: float = Field(default=0.0, ge=0, le=1)
    """Answer a submit or poll 429 with Retry-After (a 429 storm at high rates)."""
    retry_after_s: float = Field(default=1.0, ge=0)
    submit_error_rate: float = Field(default=0.0, ge=0, le=1)
    """Answer a submit 500 *without* creating a task."""
    submit_drop_rate: float = Field(default=0.0, ge=0, le=1)
    """Create the task, then drop the connection without answering: the ambiguous case."""
    submit_error_after_accept_rate: float = Field(default=0.0, ge=0, le=1)
    """Create the task, then answer 502 as a failing gateway would."""
    result_error_rate: float = Field(default=0.0, ge=0, le=1)
    """Answer a result poll 500/502/503."""
    malformed_rate: float = Field(default=0.0, ge=0, le=1)
    """Answer 200 with an HTML body instead of JSON (a submit still creates its task)."""
    slow_rate: float = Field(default=0.0, ge=0, le=1)
    slow_s: float = Field(default=2.0, ge=0)
    hang_rate: float = Field(default=0.0, ge=0, le=1)
    hang_s: float = Field(default=30.0, ge=0)
    task_failure_rate: float = Field(default=0.0, ge=0, le=1)
    """The task ends `failed` with a realistic error."""
    never_finish_rate: float = Field(default=0.0, ge=0, le=1)
    """The task stays `processing` forever."""


class SandboxConfig(BaseModel):
    """Everything the sandbox can be told. Durations in seconds, money in USD."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_keys: tuple[str, ...] = ("sk-sandbox",)
    model_path: str = "sync/lipsync-3"
    processing_fixed_s: float = Field(default=0.5, ge=0)
    processing_per_video_s: float = Field(default=0.1, ge=0)
    starts_per_minute: int = Field(default=600, ge=1)
    rate_window_s: float = Field(default=60.0, gt=0)
    """The sliding window `starts_per_minute` counts over (tests shrink it)."""
    max_concurrent: int = Field(default=8, ge=1)
    initial_balance_usd: Decimal = Decimal("1000")
    price_per_second_usd: Decimal = Decimal("0.134")
    charge_failed: bool = False
    max_width: int = 4096
    max_height: int = 2160
    max_duration_s: float = 600.0
    fetch_timeout_s: float = 30.0
    output_max_width: int = 640
    render_memory_mb: float = Field(default=512, gt=0)
    """Frames of one task held in memory at most; long inputs are rendered smaller."""
    max_input_mb: int = Field(default=2048, ge=1)
    """A larger input is refused at submit, as a download failure."""
    no_face_marker: str = "lipdub:no-face"
    """A video whose `comment` metadata contains this fails like a video without a face."""
    list_includes_inputs: bool = True
    webhook_secret: str = "whsec_sandbox-webhook-secret"  # noqa: S105 - sandbox only
    webhook_attempts: int = Field(default=3, ge=1)
    audit_log: Path | None = None
    workdir: Path | None = None
    public_url: str | None = None
    faults: FaultConfig = FaultConfig()

    @classmethod
    def from_file(cls, path: Path) -> SandboxConfig:
        """Read a TOML (`.toml`) or JSON file."""
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
        return cls.model_validate(data)
