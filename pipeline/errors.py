"""The one exception tree of lipdub.

    LipdubError                      base: every error lipdub raises on purpose
    ├── SettingsError                a setting is unknown or invalid (names the variable)
    ├── ManifestError                the manifest is unusable; carries every problem found
    ├── MediaError                   a media file cannot be read, hashed or probed
    ├── StorageError                 S3 said no, or could not be reached
    │   ├── InputChanged             a local input changed since it was planned
    │   └── InputNotUploaded         an item names a local file its starter did not upload
    ├── LedgerError                  Redis (the ledger, the gates) failed or refused
    │   ├── LedgerUnreachable        Redis could not be reached, or is loading its data
    │   └── DurabilityError          the intent could not be made durable: nothing posted
    ├── DispatchError                the broker did not take a task message
    ├── LocalStackError              a local server (tests, the demo) could not be started
    ├── BudgetExceeded               the estimate or a reservation is over the budget
    └── ProviderError                WaveSpeed (or the sandbox) answered with an error
        ├── ProviderAuthError        401/403: the API key is missing or wrong
        ├── ProviderRateLimited      429: carries retry_after_s when the server said
        ├── ProviderRejected         4xx: the request itself is wrong; retrying will not help
        ├── ProviderUnavailable      5xx, connection errors, garbled bodies on a safe call
        ├── PredictionNotFound       404 on a prediction id
        └── SubmitOutcomeUnknown     a submit POST whose result we cannot know: the task
                                     may exist and may be billed. Reconcile, never re-post.

Library exceptions (httpx, botocore, av, redis) are converted where they are caught
(`raise X from err`), so callers only ever handle this tree. No message here ever
contains a secret: adapters build messages from status codes and server text only.
"""

from __future__ import annotations

from dataclasses import dataclass


class LipdubError(Exception):
    """Base of every error lipdub raises on purpose."""


class SettingsError(LipdubError):
    """A setting is unknown or invalid; the message names the variable and what is allowed."""


@dataclass(frozen=True)
class Problem:
    """One problem found in a manifest: where it is, and what to do about it.

    `row` is the 1-based data row (the first item is row 1); `line` is the line in the file
    when the format has lines (CSV, JSONL), else None.
    """

    row: int | None
    field: str | None
    message: str
    hint: str
    line: int | None = None

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}" + (f" (line {self.line})" if self.line else ""))
        if self.field:
            where.append(f"field '{self.field}'")
        prefix = ", ".join(where) or "manifest"
        return f"{prefix}: {self.message}. {self.hint}"


class ManifestError(LipdubError):
    """The manifest cannot be used as it is. `problems` lists every one found, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        count = len(problems)
        listing = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{count} problem{'s' if count != 1 else ''} in the manifest:\n{listing}")


class MediaError(LipdubError):
    """A media file could not be read, hashed or probed."""


class StorageError(LipdubError):
    """The object store refused a request or could not be reached."""


class InputChanged(StorageError):
    """A local input's bytes no longer match the hash it was planned with."""


class InputNotUploaded(StorageError):
    """An item names a local file that was not put in the bucket when its batch started:
    workers never read the starter's filesystem."""


class LedgerError(LipdubError):
    """The ledger could not be read or written (Redis unreachable or refused)."""


class LedgerUnreachable(LedgerError):
    """Redis did not answer: refused, reset, timed out, or still loading its data after a
    restart. Unlike a refusal, this passes once Redis is back."""


class DurabilityError(LedgerError):
    """The ledger's Redis cannot make the intent durable (or did not, in time): no POST.

    A ledger error, so a step that meets it is run again later like any Redis trouble."""


class DispatchError(LipdubError):
    """The broker did not take a task message (Redis down or refusing)."""


class LocalStackError(LipdubError):
    """A local server could not be found or started."""


class BudgetExceeded(LipdubError):
    """The batch estimate, or one item's reservation, is over the budget."""


class ProviderError(LipdubError):
    """The provider answered with an error.

    `status_code` is the HTTP status (None when there was no answer), `code` the envelope's
    `code` when the body had one, `request_id` the provider's request id when it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.request_id = request_id


class ProviderAuthError(ProviderError):
    """The API key is missing or was refused (HTTP 401/403). Set WAVESPEED_API_KEY."""


class ProviderRateLimited(ProviderError):
    """HTTP 429. `retry_after_s` is the server's Retry-After, when it sent one."""

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after_s = retry_after_s


class ProviderRejected(ProviderError):
    """The request itself was refused (4xx other than 401/403/404/429): do not retry as is."""


class ProviderUnavailable(ProviderError):
    """The provider could not answer (5xx, connection error, garbled body). Safe calls retry."""

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after_s = retry_after_s


class PredictionNotFound(ProviderError):
    """The provider knows no prediction with this id (HTTP 404)."""


class SubmitOutcomeUnknown(ProviderError):
    """A submit POST was sent but its outcome is unknown: the task may exist and be billed.

    Never re-post on this error: reconcile through the list call first. `sent_at` is the
    UTC epoch second just before the POST, to bound the reconciliation window.
    """

    def __init__(
        self, message: str, *, sent_at: float, timed_out: bool = False, **kw: object
    ) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.sent_at = sent_at
        self.timed_out = timed_out
        """True when we stopped waiting: the provider may still create the task after."""
