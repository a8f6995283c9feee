"""The sandbox's configuration: account, timing, limits, pricing, and faults by seeded probability.

Load from TOML or JSON with `SandboxConfig.from_file(path)`; every field has a default, so
`SandboxConfig()` is a healthy, fast provider that accepts the key `sk-sandbox` and behaves as
WaveSpeed's documentation says (a list without inputs, download failures as failed tasks with
`code` 1402 and media it cannot take with 1401, 429s without Retry-After, a price formula that
rounds up). Anything kinder than
the documented API is a field a test must set on purpose (`list_includes_inputs`,
`result_includes_inputs`, `rate_limit_retry_after`).
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class FaultConfig(BaseModel):
    """Probabilities (0..1) of each fault. Decisions are a hash of (seed, fault, request key),
    so the same inputs meet the same faults whatever the order or concurrency of requests."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    rate_limit_rate: float = Field(default=0.0, ge=0, le=1)
    """Answer a submit or poll 429 (a 429 storm at high rates)."""
    retry_after_s: float | None = Field(default=1.0, ge=0)
    """The Retry-After a fault's 429 carries; None: no header (WaveSpeed documents none)."""
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
    download_failure_rate: float = Field(default=0.0, ge=0, le=1)
    """The task cannot fetch its inputs: it is created, then fails with `code` 1402, as
    WaveSpeed documents (a failed task, not a refused submit)."""
    odd_status_rate: float = Field(default=0.0, ge=0, le=1)
    """The task ends `cancelled`, `timeout` or `deleted` (statuses the official clients
    know) without an output or an error code."""
    pending_rate: float = Field(default=0.0, ge=0, le=1)
    """The queued task reads `pending` instead of `created` (seen in some answers)."""


class SandboxPricing(BaseModel):
    """The provider's price formula: `max(minimum_s, ceil(video seconds)) x rate`, capped.

    WaveSpeed prices each model with a formula its API serves; the published examples round
    durations up to whole seconds and charge a minimum. lipsync-3's own formula is not
    public, so this one is configurable; the quote endpoint and the bill both use it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate_per_second_usd: Decimal = Decimal("0.134")
    round_up_to_second: bool = True
    minimum_s: float = Field(default=1.0, ge=0)
    maximum_usd: Decimal | None = None

    def price_usd(self, video_s: float) -> Decimal:
        """The charge for a task whose input video lasts `video_s` seconds.

        >>> SandboxPricing().price_usd(2.2)
        Decimal('0.402')
        >>> SandboxPricing(round_up_to_second=False, minimum_s=0).price_usd(2.5)
        Decimal('0.3350')
        """
        seconds = Decimal(repr(video_s))
        if self.round_up_to_second:
            seconds = seconds.to_integral_value(rounding=ROUND_CEILING)
        seconds = max(seconds, Decimal(repr(self.minimum_s)))
        charge = seconds * self.rate_per_second_usd
        if self.maximum_usd is not None:
            charge = min(charge, self.maximum_usd)
        return charge


class SandboxConfig(BaseModel):
    """Everything the sandbox can be told. Durations in seconds, money in USD."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_keys: tuple[str, ...] = ("sk-sandbox",)
    model_path: str = "sync/lipsync-3"
    processing_fixed_s: float = Field(default=0.5, ge=0)
    processing_per_video_s: float = Field(default=0.1, ge=0)
    processing_spread: float = Field(default=0.0, ge=0, lt=1)
    """Each task takes up to this share more or less than the two above (0.1: 0.9x to 1.1x),
    fixed by its audio's content, so a re-run and a baseline meet the same times."""
    starts_per_minute: int = Field(default=600, ge=1)
    rate_window_s: float = Field(default=60.0, gt=0)
    """The sliding window `starts_per_minute` counts over (tests shrink it)."""
    starts_counted_at: Literal["receipt", "answer"] = "answer"
    """When a start's window begins. WaveSpeed does not document it; `answer` (the default)
    is the harder case for a client: a start taken when its POST arrives (the limit is
    checked then) and timed from when the POST is answered, so a slow POST counts late.
    `receipt`: timed from the POST's arrival."""
    max_concurrent: int = Field(default=8, ge=1)
    initial_balance_usd: Decimal = Decimal("1000")
    pricing: SandboxPricing = SandboxPricing()
    charge_failed: bool = False
    """Charge failed tasks too (WaveSpeed does not document whether it does)."""
    billing_price_unit: Literal["usd", "micro_usd"] = "usd"
    """The unit of `price` in billing records: WaveSpeed's docs say USD in one place and show
    micro-USD integers in another; either can be served."""
    max_width: int = 4096
    max_height: int = 2160
    max_duration_s: float = 600.0
    fetch_timeout_s: float = 30.0
    output_max_width: int = 640
    render_memory_mb: float = Field(default=512, gt=0)
    """Frames of one task held in memory at most; long inputs are rendered smaller."""
    max_input_mb: int = Field(default=2048, ge=1)
    """A larger input fails its task with code 1401 (created, then failed: `MediaRejected`)."""
    no_face_marker: str = "lipdub:no-face"
    """A video whose `comment` metadata contains this fails like a video without a face."""
    list_includes_inputs: bool = False
    """Kinder than the documented API: the list call shows each task's `input`."""
    result_includes_inputs: bool = False
    """Kinder than the documented API: the result call shows the task's `input` (undocumented)."""
    webhook_includes_inputs: bool = True
    """A webhook delivery carries `input`, as WaveSpeed's example delivery does."""
    rate_limit_retry_after: bool = False
    """Kinder than the documented API: a 429 for the per-minute limit names its Retry-After."""
    output_url_ttl_s: float = Field(default=7 * 86_400.0, gt=0)
    """Output URLs stop working after this (WaveSpeed keeps outputs 7 days)."""
    webhook_secret: str = "whsec_sandbox-webhook-secret"  # noqa: S105 - sandbox only
    webhook_attempts: int = Field(default=3, ge=1)
    audit_log: Path | None = None
    workdir: Path | None = None
    public_url: str | None = None
    faults: FaultConfig = FaultConfig()

    def processing_s(self, video_s: float, audio_sha256: str) -> float:
        """How long a task with this video length and audio content takes to process.

        >>> SandboxConfig(processing_fixed_s=2.0, processing_per_video_s=1.0).processing_s(3.0, "ab")
        5.0
        >>> 4.5 <= SandboxConfig(processing_fixed_s=5.0, processing_spread=0.1).processing_s(
        ...     0.0, "9f" * 32) <= 5.5
        True
        """
        base_s = self.processing_fixed_s + self.processing_per_video_s * max(0.0, video_s)
        if not self.processing_spread:
            return base_s
        draw = int(hashlib.sha256(audio_sha256.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        return base_s * (1.0 + self.processing_spread * (2.0 * draw - 1.0))

    @classmethod
    def from_file(cls, path: Path) -> SandboxConfig:
        """Read a TOML (`.toml`) or JSON file."""
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
        return cls.model_validate(data)
