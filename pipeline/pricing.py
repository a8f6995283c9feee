"""The price model: what one item and a whole batch are expected to cost. Pure functions.

The product page says $0.134 per second of input video. Whether failed tasks are charged,
the minimum and the rounding are undocumented, so all of it is configuration
(`PriceModel`), defaulting to the product page: exact input-video seconds x $0.134.
Money is `Decimal` end to end so totals of thousands of items add up to the cent.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from pipeline.sync_modes import OUTPUT_FPS, SyncMode, expected_output_s


class PriceBasis(StrEnum):
    """Which seconds are billed."""

    INPUT_VIDEO = "input_video"
    EXPECTED_OUTPUT = "expected_output"


class Rounding(StrEnum):
    """How billable seconds are rounded before the rate applies."""

    EXACT = "exact"
    CEIL_SECOND = "ceil_second"
    CEIL_FRAME = "ceil_frame"  # up to the next 1/25 s output frame


class PriceModel(BaseModel):
    """Rate, basis, rounding and minimum. `PriceModel()` is the product page's price."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rate_per_second_usd: Decimal = Field(default=Decimal("0.134"), ge=0)
    """USD per billable second (the product page: 0.134)."""
    basis: PriceBasis = PriceBasis.INPUT_VIDEO
    """What is billed: `input_video` seconds (documented) or `expected_output` seconds."""
    rounding: Rounding = Rounding.EXACT
    """`exact`, `ceil_second` or `ceil_frame`."""
    minimum_billable_s: float = Field(default=0.0, ge=0)
    """Seconds billed at least, per item."""
    quotes: bool = True
    """Price each item by the provider's quote endpoint (`POST /api/v3/model/pricing`) when it answers; this model is the fallback."""


CENT = Decimal("0.01")
MICRO_USD = Decimal("0.000001")


def billable_seconds(model: PriceModel, mode: SyncMode, video_s: float, audio_s: float) -> float:
    """Seconds the provider is expected to bill for one item, after rounding and minimum.

    >>> billable_seconds(PriceModel(), SyncMode.LOOP, video_s=3.2, audio_s=8.0)
    3.2
    """
    if model.basis is PriceBasis.INPUT_VIDEO:
        seconds = video_s
    else:
        seconds = expected_output_s(mode, video_s, audio_s)
    seconds = round_seconds(seconds, model.rounding)
    return max(seconds, model.minimum_billable_s)


def round_seconds(seconds: float, rounding: Rounding) -> float:
    """Apply a rounding rule to a duration in seconds."""
    if rounding is Rounding.CEIL_SECOND:
        return float(math.ceil(seconds - 1e-9))
    if rounding is Rounding.CEIL_FRAME:
        return math.ceil(seconds * OUTPUT_FPS - 1e-6) / OUTPUT_FPS
    return seconds


def price_usd(model: PriceModel, billable_s: float) -> Decimal:
    """The price in USD of `billable_s` seconds, to the micro-dollar.

    >>> price_usd(PriceModel(), 10.0)
    Decimal('1.340000')
    """
    raw = Decimal(repr(billable_s)) * model.rate_per_second_usd
    return raw.quantize(MICRO_USD, rounding=ROUND_HALF_UP)


def item_price_usd(model: PriceModel, mode: SyncMode, video_s: float, audio_s: float) -> Decimal:
    """Expected price of one item: `price_usd(billable_seconds(...))`."""
    return price_usd(model, billable_seconds(model, mode, video_s, audio_s))


def total_usd(prices: Iterable[Decimal]) -> Decimal:
    """Sum of item prices (exact; round only for display with `to_cents`)."""
    return sum(prices, start=Decimal(0))


def to_cents(amount_usd: Decimal) -> Decimal:
    """Round half up to the cent, for display."""
    return amount_usd.quantize(CENT, rounding=ROUND_HALF_UP)
