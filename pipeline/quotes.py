"""Item prices from the provider's quote endpoint, the configured price model as the fallback.

WaveSpeed prices each model with a formula it serves and quotes it at
`POST /api/v3/model/pricing` (`{model_id, inputs}` -> `data.unit_price`, no charge for
asking). lipsync-3's formula is not public, so the quote is the best estimate there is. Its
inputs for lipsync-3 are undocumented: lipdub sends the video's seconds as `duration` and
the `sync_mode`, which is what a duration-priced formula needs, and the plan says which
basis priced it. `make contract` shows what the real endpoint answers.

Quotes are cached by (model, sync mode, video milliseconds), so a catalog of many clips of
few lengths asks few times.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from decimal import Decimal

from pipeline.errors import LipdubError
from pipeline.provider.client import ProviderClient
from pipeline.sync_modes import SyncMode

QuoteKey = tuple[SyncMode, float]
"""(sync mode, video seconds rounded to the millisecond)."""

QUOTE_BASIS = "provider quote (POST /api/v3/model/pricing)"


def quote_key(mode: SyncMode, video_s: float) -> QuoteKey:
    """The cache key of one item's quote.

    >>> quote_key(SyncMode.LOOP, 3.14159)
    (<SyncMode.LOOP: 'loop'>, 3.142)
    """
    return (mode, round(video_s, 3))


class _Abandoned(Exception):
    """A quote not asked for because an earlier one failed (never leaves this module)."""


class ProviderQuotes:
    """Asks the provider for prices, at most `workers` at once, each key once.

    >>> quotes = ProviderQuotes(lambda inputs: Decimal(inputs["duration"]) * 2)
    >>> quotes.price_all([quote_key(SyncMode.LOOP, 1.5)])
    {(<SyncMode.LOOP: 'loop'>, 1.5): Decimal('3.0')}
    """

    def __init__(self, ask: Callable[[dict[str, object]], Decimal], *, workers: int = 8) -> None:
        self._ask = ask
        self._workers = workers
        self._cache: dict[QuoteKey, Decimal] = {}
        self._lock = threading.Lock()

    @classmethod
    def of(cls, provider: ProviderClient) -> ProviderQuotes:
        """Quotes for the provider client's model."""
        return cls(provider.quote_usd)

    def price_all(self, keys: Iterable[QuoteKey]) -> dict[QuoteKey, Decimal]:
        """The price of each key. Raises the first LipdubError (ProviderError) a quote met:
        a plan is priced by quotes throughout or not at all."""
        todo = sorted(set(keys) - self._cache.keys())
        failed = threading.Event()
        pool = ThreadPoolExecutor(max_workers=self._workers)
        try:
            futures = {pool.submit(self._quote, key, failed): key for key in todo}
            for future in as_completed(futures):
                try:
                    price = future.result()  # the first failure ends the rest: they would too
                except _Abandoned:
                    continue  # the failure that caused it comes (or came) through as well
                with self._lock:
                    self._cache[futures[future]] = price
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return {key: self._cache[key] for key in keys}

    def _quote(self, key: QuoteKey, failed: threading.Event) -> Decimal:
        """One quote, unless one has failed already: the pool's threads may take queued
        keys before the caller sees the failure and cancels them."""
        if failed.is_set():
            raise _Abandoned
        mode, video_s = key
        try:
            return self._ask({"duration": video_s, "sync_mode": mode.value})
        except LipdubError:
            failed.set()
            raise


def describe_failure(err: LipdubError) -> str:
    """Why quotes were not used, for the plan's basis line."""
    return f"the quote endpoint did not answer: {err}"
