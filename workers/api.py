"""lipdub from Python: start a batch from a script or a notebook, wait for it, read it.

    from workers.api import Lipdub

    with Lipdub.from_env() as lipdub:            # the LIPDUB_ settings, as the CLI reads them
        batch = lipdub.run("catalog.csv", budget_usd=Decimal("25"))
        status = batch.wait(timeout_s=3600)      # polls the ledger; workers do the work
        print(status.state, status.completed, status.spent_usd)

`run` plans the manifest (a `ManifestError` lists every bad row before anything is spent),
prices it as the CLI does, checks the key, the balance and the bucket, and starts the batch
on the workers (`lipdub worker`); nothing is asked and nothing is followed on screen. Results
are typed: money is `Decimal`, times are `datetime` in UTC.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Self

from pydantic import SecretStr

from pipeline import wiring
from pipeline.errors import BudgetExceeded, SettingsError
from pipeline.preflight import preflight
from pipeline.provider.client import ProviderClient
from pipeline.schedules.notices import check_targets
from pipeline.settings import Settings, load_settings
from workers.session import Session


@dataclass(frozen=True)
class BatchStatus:
    """Where a batch is: its state, its items per state, its money."""

    batch_id: str
    state: str
    """`running` until every item is final and the reports are written, then `finished`."""
    items: int
    counts: dict[str, int]
    estimate_usd: Decimal
    spent_usd: Decimal
    created_at: datetime | None
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.state == "finished"

    @property
    def completed(self) -> int:
        return self.counts.get("completed", 0)

    @classmethod
    def of(cls, status: dict[str, Any]) -> BatchStatus:
        return cls(
            batch_id=str(status["batch_id"]),
            state=str(status["state"]),
            items=int(status["items"]),
            counts={str(k): int(v) for k, v in status["counts"].items()},
            estimate_usd=Decimal(str(status["estimate_usd"])),
            spent_usd=Decimal(str(status["spent_usd"])),
            created_at=_utc(status.get("created_at")),
            finished_at=_utc(status.get("finished_at")),
        )


class Batch:
    """A handle on one batch: ask it, wait for it, cancel it, read its report."""

    def __init__(
        self, session: Session, batch_id: str, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.id = batch_id
        self._session = session
        self._sleep = sleep

    def status(self) -> BatchStatus:
        return BatchStatus.of(self._session.control.status(self.id))

    def wait(self, timeout_s: float | None = None, every_s: float = 2.0) -> BatchStatus:
        """Until the batch is finished (TimeoutError after `timeout_s`); its last status.
        This waits in the caller's process, never in a worker."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            status = self.status()
            if status.finished:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"batch {self.id} still {status.state} after {timeout_s} s")
            self._sleep(every_s)

    def cancel(self) -> BatchStatus:
        """Submit nothing more; what is already submitted is still collected."""
        return BatchStatus.of(self._session.control.cancel(self.id))

    def report(self) -> dict[str, Any]:
        """The full report (`report.json`'s content)."""
        return self._session.control.report(self.id)


class Lipdub:
    """A connection to lipdub's Redis, bucket and provider, for scripts."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._session = Session.connect(settings)

    @classmethod
    def from_env(cls, **overrides: Any) -> Lipdub:
        """Settings from the environment (and `LIPDUB_CONFIG_FILE`), as the CLI reads them."""
        return cls(load_settings(**overrides))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    def run(
        self,
        manifest: str | Path,
        *,
        name: str | None = None,
        budget_usd: Decimal | None = None,
        create_bucket: bool = False,
        notify: Sequence[str] = (),
    ) -> Batch:
        """Plan, check and start the manifest's batch; its handle. BudgetExceeded when the
        part not paid for already is over `budget_usd` (or LIPDUB_BUDGET__BATCH_USD) or
        over the account's balance; nothing is spent then. `notify`: apprise URLs told when
        it finishes (SettingsError, before anything else, for one apprise cannot use)."""
        settings = self.settings
        problems = check_targets(notify)
        if problems:
            raise SettingsError("; ".join(problems))
        provider = ProviderClient.from_settings(settings.provider)
        try:
            plan = wiring.plan(settings, Path(manifest), provider=provider)
            to_pay = self._session.control.payable(plan, force=False)
            budget = budget_usd if budget_usd is not None else settings.budget.batch_usd
            if budget is not None and to_pay.total_usd > budget:
                raise BudgetExceeded(
                    f"the estimate ${to_pay.total_usd} is over the budget ${budget}; nothing "
                    "was spent"
                )
            balance_usd = preflight(
                provider, self._session.storage, to_pay.total_usd, create_bucket=create_bucket
            )
        finally:
            provider.close()
        batch_id = self._session.control.start(
            plan,
            name=name,
            budget_usd=budget_usd,
            extra={"balance_before_usd": str(balance_usd)},
            notify=[SecretStr(url) for url in notify],
        )
        return Batch(self._session, batch_id)

    def batch(self, batch_id: str) -> Batch:
        """A handle on an existing batch (KeyError from its status when unknown)."""
        return Batch(self._session, batch_id)


def _utc(epoch_s: object) -> datetime | None:
    if epoch_s is None or epoch_s == "":
        return None
    return datetime.fromtimestamp(float(str(epoch_s)), tz=UTC)
