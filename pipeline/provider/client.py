"""The WaveSpeed REST client (httpx): submit, result, list, balance, media upload.

All network I/O goes through one injected `httpx.Client`, so tests hand it an
`httpx.MockTransport` or point it at the sandbox; nothing is patched. Errors come out as the
`pipeline.errors` tree, with the API key redacted from every message.

Retries: safe calls (result, list, balance, upload, webhook secret) are retried per
`RetryPolicy` on 408/429/5xx and transport errors, waiting through the injected `sleep`
(workers pass `RetryPolicy(max_attempts=1)` and reschedule with a countdown instead). The
submit POST is sent exactly once per call; when its outcome cannot be known it raises
`SubmitOutcomeUnknown` and the caller must reconcile through `list_predictions`.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import SecretStr

from pipeline.errors import (
    PredictionNotFound,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
    SubmitOutcomeUnknown,
)
from pipeline.provider.models import BillingRecord, Prediction, PredictionPage
from pipeline.provider.retry import (
    RetryPolicy,
    parse_retry_after_s,
    retry_delay_s,
    should_retry,
)

if TYPE_CHECKING:
    from pipeline.settings import ProviderSettings

LIST_PAGE_SIZE_MAX = 100
BILLING_IDS_PER_CALL = 50
"""Prediction ids asked about in one billing search (the docs name no limit; kept modest)."""
BILLING_MAX_PAGES = 20
BODY_SNIPPET_CHARS = 300


class ProviderClient:
    """A WaveSpeed API client for one model.

    >>> client = ProviderClient(httpx.Client(base_url="https://api.wavespeed.ai"),
    ...                         api_key=SecretStr("key"), model_path="sync/lipsync-3")
    """

    def __init__(
        self,
        http: httpx.Client,
        *,
        api_key: SecretStr | None,
        model_path: str = "sync/lipsync-3",
        retry_policy: RetryPolicy | None = None,
        submit_timeout_s: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._http = http
        self._api_key = api_key
        self.model_path = model_path.strip("/")
        self.retry_policy = retry_policy or RetryPolicy()
        self._submit_timeout_s = submit_timeout_s
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()

    @classmethod
    def from_settings(
        cls,
        settings: ProviderSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        retry_policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> ProviderClient:
        """A client for the configured provider: base URL, key, timeouts and GET retries.

        `transport` replaces the network (tests); `retry_policy` overrides the configured one
        (workers pass `RetryPolicy(max_attempts=1)` and reschedule instead of waiting).
        """
        timeout = httpx.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s)
        http = httpx.Client(base_url=settings.base_url, timeout=timeout, transport=transport)
        policy = retry_policy or RetryPolicy(
            max_attempts=settings.max_get_attempts,
            base_delay_s=settings.retry_base_delay_s,
            max_delay_s=settings.retry_max_delay_s,
        )
        return cls(
            http,
            api_key=settings.api_key,
            model_path=settings.model_path,
            retry_policy=policy,
            submit_timeout_s=settings.submit_timeout_s,
            sleep=sleep,
        )

    def close(self) -> None:
        """Close the underlying HTTP connections."""
        self._http.close()

    # ---------------------------------------------------------------- public calls

    def submit(
        self,
        *,
        video_url: str,
        audio_url: str,
        sync_mode: str,
        webhook_url: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Prediction:
        """POST one lipsync job, exactly once. Returns the created prediction.

        Raises SubmitOutcomeUnknown when the request may have reached the provider but no
        usable answer came back (timeout, dropped connection, 5xx, unreadable 2xx body);
        ProviderRateLimited / ProviderRejected / ProviderAuthError when the provider
        definitely did not create a task; ProviderUnavailable when the request was never
        sent (the connection could not be opened).
        """
        body: dict[str, Any] = {"video": video_url, "audio": audio_url, "sync_mode": sync_mode}
        if extra:
            body.update(extra)
        params = {"webhook": webhook_url} if webhook_url else None
        sent_at = self._clock()
        timeout = (
            httpx.Timeout(self._submit_timeout_s, connect=self._http.timeout.connect)
            if self._submit_timeout_s
            else httpx.USE_CLIENT_DEFAULT
        )
        try:
            response = self._http.post(
                f"/api/v3/{self.model_path}",
                json=body,
                params=params,
                headers=self._headers(),
                timeout=timeout,
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as err:
            # The connection was never opened: nothing reached the provider.
            raise ProviderUnavailable(
                f"could not connect to the provider to submit: {type(err).__name__}"
            ) from err
        except httpx.TransportError as err:
            raise SubmitOutcomeUnknown(
                "the submit request was sent but no answer came back "
                f"({type(err).__name__}); the task may exist: reconcile before any re-submit",
                sent_at=sent_at,
                # We gave up waiting: the provider may still be working on it, and create the
                # task later. (A connection it closed or broke was done with first.)
                timed_out=isinstance(err, httpx.TimeoutException),
            ) from err
        if response.status_code >= 500:
            raise SubmitOutcomeUnknown(
                f"the provider answered HTTP {response.status_code} to a submit; "
                "the task may exist: reconcile before any re-submit",
                sent_at=sent_at,
                status_code=response.status_code,
            )
        try:
            data = self._data_or_raise(response)
            return Prediction.from_data(data)
        except (ProviderUnavailable, ValueError) as err:
            raise SubmitOutcomeUnknown(
                f"the submit answer could not be read ({err}); "
                "the task may exist: reconcile before any re-submit",
                sent_at=sent_at,
                status_code=response.status_code,
            ) from err

    def get_result(self, prediction_id: str) -> Prediction:
        """The prediction's current state. Raises PredictionNotFound for an unknown id."""
        data = self._safe_call("GET", f"/api/v3/predictions/{prediction_id}/result")
        try:
            return Prediction.from_data(data)
        except ValueError as err:
            raise ProviderUnavailable(f"result for {prediction_id} had no prediction") from err

    def list_predictions(
        self,
        *,
        page: int = 1,
        page_size: int = LIST_PAGE_SIZE_MAX,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        model: str | None = None,
        status: str | None = None,
    ) -> PredictionPage:
        """One page of the account's predictions, most recent first (the last 7 days only)."""
        body: dict[str, Any] = {"page": page, "page_size": min(page_size, LIST_PAGE_SIZE_MAX)}
        if created_after:
            body["created_after"] = _rfc3339(created_after)
        if created_before:
            body["created_before"] = _rfc3339(created_before)
        if model:
            body["model"] = model
        if status:
            body["status"] = status
        data = self._safe_call("POST", "/api/v3/predictions", json=body)
        items = data.get("items") or []
        parsed = []
        for item in items:
            if isinstance(item, dict):
                try:
                    parsed.append(Prediction.from_data(item))
                except ValueError:
                    continue
        total = data.get("total")
        return PredictionPage(
            page=int(data.get("page") or page),
            items=tuple(parsed),
            total=int(total) if isinstance(total, int) else None,
        )

    def iter_predictions(
        self,
        *,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        model: str | None = None,
        status: str | None = None,
        max_pages: int = 50,
    ) -> Iterator[Prediction]:
        """Every prediction in the window (with `status`, if given), page by page, most
        recent first, stopping at a short page or after `max_pages`."""
        for page in range(1, max_pages + 1):
            result = self.list_predictions(
                page=page,
                created_after=created_after,
                created_before=created_before,
                model=model,
                status=status,
            )
            yield from result.items
            if len(result.items) < LIST_PAGE_SIZE_MAX:
                return

    def charges_usd(self, prediction_ids: Sequence[str]) -> dict[str, Decimal]:
        """What the account was charged for each of these predictions, from its billing
        records (`POST /api/v3/billings/search` by `prediction_uuids`): done deductions
        minus refunds; $0 for one without records or whose price is only held (`pre`)."""
        charged = {prediction_id: Decimal(0) for prediction_id in prediction_ids}
        for start in range(0, len(prediction_ids), BILLING_IDS_PER_CALL):
            wanted = list(prediction_ids[start : start + BILLING_IDS_PER_CALL])
            for record in self._billing_records(wanted):
                if record.prediction_id in charged:
                    charged[record.prediction_id] += record.charged_usd
        return charged

    def _billing_records(self, prediction_ids: list[str]) -> Iterator[BillingRecord]:
        for page in range(1, BILLING_MAX_PAGES + 1):
            body = {"prediction_uuids": prediction_ids, "page": page, "page_size": 100}
            data = self._safe_call("POST", "/api/v3/billings/search", json=body)
            items = [item for item in data.get("items") or [] if isinstance(item, dict)]
            for item in items:
                try:
                    yield BillingRecord.from_data(item)
                except ValueError as err:
                    raise ProviderUnavailable(f"a billing record could not be read: {err}") from err
            total = data.get("total")
            if len(items) < 100 or (isinstance(total, int) and page * 100 >= total):
                return
        raise ProviderUnavailable(
            f"more than {BILLING_MAX_PAGES * 100} billing records for {len(prediction_ids)} predictions"
        )

    def balance_usd(self) -> Decimal:
        """The account's balance in USD."""
        data = self._safe_call("GET", "/api/v3/balance")
        try:
            return Decimal(str(data["balance"]))
        except (KeyError, InvalidOperation) as err:
            raise ProviderUnavailable("the balance answer had no readable balance") from err

    def quote_usd(self, inputs: dict[str, Any]) -> Decimal:
        """The provider's price for one prediction of this model with these inputs
        (`POST /api/v3/model/pricing` -> `data.unit_price`); no charge for asking."""
        data = self._safe_call(
            "POST", "/api/v3/model/pricing", json={"model_id": self.model_path, "inputs": inputs}
        )
        price = data.get("unit_price")
        if isinstance(price, bool) or not isinstance(price, int | float | str):
            raise ProviderUnavailable("the pricing answer had no unit_price")
        try:
            value = Decimal(str(price))
        except InvalidOperation as err:
            raise ProviderUnavailable("the pricing answer's unit_price is not a number") from err
        if not value.is_finite() or value < 0:
            raise ProviderUnavailable(f"the pricing answer's unit_price is {price!r}")
        return value

    def upload_media(self, path: Path) -> str:
        """Upload a local file to the provider's media store (kept 7 days); its download URL.

        The file is streamed, never read whole. Repeating an upload only stores a second copy,
        so this call is retried like a GET.
        """

        def send() -> httpx.Response:
            with path.open("rb") as stream:
                return self._http.post(
                    "/api/v3/media/upload/binary",
                    files={"file": (path.name, stream)},
                    headers=self._headers(json_body=False),
                )

        data = self._with_retries(send)
        url = data.get("download_url")
        if not isinstance(url, str) or not url:
            raise ProviderUnavailable("the upload answer had no download_url")
        return url

    def webhook_secret(self) -> SecretStr:
        """The account's webhook signing secret (`whsec_...`)."""
        data = self._safe_call("GET", "/api/v3/webhook/secret")
        secret = data.get("secret")
        if not isinstance(secret, str) or not secret:
            raise ProviderUnavailable("the webhook secret answer had no secret")
        return SecretStr(secret)

    # ---------------------------------------------------------------- plumbing

    def _headers(self, *, json_body: bool = True) -> dict[str, str]:
        if self._api_key is None or not self._api_key.get_secret_value():
            raise ProviderAuthError(
                "no API key: set WAVESPEED_API_KEY (or LIPDUB_PROVIDER__API_KEY)"
            )
        headers = {"Authorization": f"Bearer {self._api_key.get_secret_value()}"}
        if json_body:
            headers["Content-Type"] = "application/json"
        return headers

    def _safe_call(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        def send() -> httpx.Response:
            return self._http.request(method, url, headers=self._headers(), **kwargs)

        return self._with_retries(send)

    def _with_retries(self, send: Callable[[], httpx.Response]) -> dict[str, Any]:
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                response = send()
                return self._data_or_raise(response)
            except httpx.TransportError as err:
                failure: ProviderError = ProviderUnavailable(
                    f"the provider could not be reached: {type(err).__name__}"
                )
                failure.__cause__ = err
                retryable = True
            except (ProviderRateLimited, ProviderUnavailable) as err:
                failure = err
                retry_after = err.retry_after_s
                # 429, 408, 5xx and unreadable bodies: a safe call may simply be asked again.
                retryable = True
            if not should_retry(attempt, self.retry_policy, safe=True, retryable=retryable):
                raise failure
            self._sleep(
                retry_delay_s(attempt, self.retry_policy, retry_after_s=retry_after, rng=self._rng)
            )

    def _data_or_raise(self, response: httpx.Response) -> dict[str, Any]:
        """The envelope's `data`, or the matching ProviderError (HTTP status and body code)."""
        status = response.status_code
        request_id = response.headers.get("x-request-id")
        envelope: Any
        try:
            envelope = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            envelope = None
        message = self._message_of(envelope, response)
        if not 200 <= status < 300:
            raise self._error_for(status, message, response, request_id, code=_code_of(envelope))
        if not isinstance(envelope, dict):
            raise ProviderUnavailable(
                f"HTTP {status} with a body that is not a JSON object: {message}",
                status_code=status,
                request_id=request_id,
            )
        code = _code_of(envelope)
        if code is not None and not 200 <= code < 300:
            raise self._error_for(code, message, response, request_id, code=code)
        data = envelope.get("data")
        if not isinstance(data, dict):
            raise ProviderUnavailable(
                f"HTTP {status} without a data object: {message}",
                status_code=status,
                request_id=request_id,
            )
        return data

    def _error_for(
        self,
        status: int,
        message: str,
        response: httpx.Response,
        request_id: str | None,
        *,
        code: int | None,
    ) -> ProviderError:
        text = f"HTTP {response.status_code}" + (f" (code {code})" if code else "")
        text = f"{text}: {message}"
        common: dict[str, Any] = {
            "status_code": response.status_code,
            "code": code,
            "request_id": request_id,
        }
        if status in (401, 403):
            return ProviderAuthError(f"the API key was refused, {text}", **common)
        if status == 404:
            return PredictionNotFound(f"not found, {text}", **common)
        if status == 429:
            retry_after = parse_retry_after_s(response.headers.get("retry-after"))
            return ProviderRateLimited(f"rate limited, {text}", retry_after_s=retry_after, **common)
        if status >= 500 or status == 408:
            retry_after = parse_retry_after_s(response.headers.get("retry-after"))
            return ProviderUnavailable(
                f"provider unavailable, {text}", retry_after_s=retry_after, **common
            )
        return ProviderRejected(f"request rejected, {text}", **common)

    def _message_of(self, envelope: Any, response: httpx.Response) -> str:
        if isinstance(envelope, dict):
            raw = envelope.get("message") or envelope.get("error") or ""
            text = str(raw)
        else:
            text = response.text[:BODY_SNIPPET_CHARS] if response.content else "(empty body)"
        return self._redact(" ".join(text.split()))

    def _redact(self, text: str) -> str:
        if self._api_key is not None:
            key = self._api_key.get_secret_value()
            if key:
                text = text.replace(key, "***")
        return text


def _code_of(envelope: Any) -> int | None:
    if not isinstance(envelope, dict):
        return None
    for name in ("code", "error_code"):
        value = envelope.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.isdigit():
            return int(value)
    return None


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
