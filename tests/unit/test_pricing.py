"""The price model: rate, basis, rounding, minimum, totals."""

from decimal import Decimal

import pytest

from pipeline.pricing import (
    PriceBasis,
    PriceModel,
    Rounding,
    billable_seconds,
    item_price_usd,
    price_usd,
    to_cents,
    total_usd,
)
from pipeline.sync_modes import SyncMode


def test_default_is_the_product_page_price_on_input_video_seconds():
    # $0.134 per second of input video, whatever the audio or the mode does
    assert item_price_usd(PriceModel(), SyncMode.LOOP, video_s=10.0, audio_s=30.0) == Decimal(
        "1.34"
    )
    assert item_price_usd(PriceModel(), SyncMode.CUT_OFF, video_s=10.0, audio_s=2.0) == Decimal(
        "1.34"
    )


def test_expected_output_basis_follows_the_sync_mode():
    model = PriceModel(basis=PriceBasis.EXPECTED_OUTPUT)
    assert billable_seconds(model, SyncMode.LOOP, 10.0, 30.0) == 30.0
    assert billable_seconds(model, SyncMode.CUT_OFF, 10.0, 30.0) == 10.0
    assert billable_seconds(model, SyncMode.SILENCE, 10.0, 3.0) == 10.0


@pytest.mark.parametrize(
    ("rounding", "seconds", "expected"),
    [
        (Rounding.EXACT, 10.01, 10.01),
        (Rounding.CEIL_SECOND, 10.01, 11.0),
        (Rounding.CEIL_SECOND, 10.0, 10.0),
        (Rounding.CEIL_FRAME, 10.01, 10.04),
        (Rounding.CEIL_FRAME, 10.04, 10.04),
    ],
)
def test_rounding(rounding, seconds, expected):
    model = PriceModel(rounding=rounding)
    assert billable_seconds(model, SyncMode.CUT_OFF, seconds, seconds) == pytest.approx(expected)


def test_minimum_applies_after_rounding():
    model = PriceModel(minimum_billable_s=5.0, rounding=Rounding.CEIL_SECOND)
    assert billable_seconds(model, SyncMode.CUT_OFF, 1.2, 1.2) == 5.0
    assert billable_seconds(model, SyncMode.CUT_OFF, 5.2, 5.2) == 6.0


def test_custom_rate():
    assert price_usd(PriceModel(rate_per_second_usd=Decimal("0.2")), 2.5) == Decimal("0.5")


def test_totals_of_a_large_batch_are_exact_to_the_micro_dollar():
    prices = [price_usd(PriceModel(), 0.1)] * 10_000
    assert total_usd(prices) == Decimal("134.0")
    assert to_cents(Decimal("0.125")) == Decimal("0.13")


def test_price_model_refuses_negative_values():
    with pytest.raises(ValueError):
        PriceModel(rate_per_second_usd=Decimal("-1"))


def test_quotes_stop_asking_after_the_first_failure():
    from pipeline.errors import ProviderUnavailable
    from pipeline.quotes import ProviderQuotes, quote_key
    from pipeline.sync_modes import SyncMode

    asked = []

    def ask(inputs):
        asked.append(inputs)
        raise ProviderUnavailable("no network")

    quotes = ProviderQuotes(ask, workers=2)
    keys = [quote_key(SyncMode.LOOP, n / 10) for n in range(200)]
    with pytest.raises(ProviderUnavailable):
        quotes.price_all(keys)
    # Only the ones already running when the first failed were asked
    assert len(asked) <= 4
