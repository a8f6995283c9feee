"""Checks before the first paid call: the key is accepted, the balance covers the estimate,
the bucket exists. Each refusal is one line that names what to fix; nothing is spent.

    balance = preflight(provider, storage, plan.total_usd, create_bucket=False)
"""

from __future__ import annotations

from decimal import Decimal

from pipeline.errors import BudgetExceeded, ProviderAuthError, ProviderError, ProviderUnavailable
from pipeline.pricing import to_cents
from pipeline.provider.client import ProviderClient
from pipeline.storage import Storage


def preflight(
    provider: ProviderClient,
    storage: Storage,
    estimate_usd: Decimal,
    *,
    create_bucket: bool,
) -> Decimal:
    """Check the account and the bucket for a batch estimated at `estimate_usd`; returns the
    account's balance (USD), which the report sets beside lipdub's spend when the batch ends.

    Raises ProviderAuthError (the key is refused), ProviderError (the balance cannot be
    read), BudgetExceeded (the balance is below the estimate) or StorageError (the bucket
    does not exist and `create_bucket` is off, or S3 refuses)."""
    try:
        balance_usd = provider.balance_usd()
    except ProviderAuthError as err:
        raise ProviderAuthError(
            f"the provider refused the API key ({err}): set WAVESPEED_API_KEY to a valid key; "
            "nothing was spent"
        ) from err
    except ProviderError as err:
        raise ProviderUnavailable(
            f"the account's balance could not be read ({err}); nothing was spent: try again, "
            "or check LIPDUB_PROVIDER__BASE_URL"
        ) from err
    if balance_usd < estimate_usd:
        raise BudgetExceeded(
            f"the account's balance ${to_cents(balance_usd)} is below the estimate "
            f"${to_cents(estimate_usd)}; nothing was spent: top up the account, or run fewer items"
        )
    storage.check_bucket(create=create_bucket)
    return balance_usd
