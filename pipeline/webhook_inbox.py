"""Webhooks from the provider: the fast path to a finished prediction, polling the safety net.

A delivery is taken only if its signature is the account's (v3 scheme, `provider.webhooks`),
its timestamp is fresh (300 s either way) and the same delivery (id and timestamp) was never
taken before (a replay is refused, even with a valid signature). The provider's own retries
keep the id but carry a new timestamp, so a retry after our 503 gets in. A taken delivery does
not change an item itself: it asks for the item's poll step now, which reads the result from
the provider as any poll does. So a forged or replayed delivery can at worst cause one extra
result request, and a missed one costs only the wait until the next scheduled poll.

A delivery for a prediction no item knows yet (its submit's answer was lost) is kept: its
`input` is what reconcile needs to adopt the prediction without a person.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from pipeline import keys
from pipeline.ledger import Ledger
from pipeline.provider.webhooks import MAX_AGE_S, WebhookRejected, verify
from pipeline.steps import Next


@dataclass(frozen=True)
class Verdict:
    """The HTTP answer to one delivery, and the poll it asks for (if any)."""

    status: int
    message: str
    wake: Next | None = None


class WebhookInbox:
    """Judges deliveries. Give it the ledger (for replays and prediction ids) and the secret."""

    def __init__(
        self,
        ledger: Ledger,
        secret: SecretStr,
        *,
        clock: Callable[[], float] = time.time,
        max_age_s: int = MAX_AGE_S,
    ) -> None:
        self.ledger = ledger
        self._secret = secret
        self.clock = clock
        self.max_age_s = max_age_s

    def receive(self, headers: Mapping[str, str], body: bytes) -> Verdict:
        """Verify one delivery and say what to answer and what to run."""
        try:
            webhook_id = verify(
                self._secret.get_secret_value(),
                dict(headers),
                body,
                now_s=self.clock(),
                max_age_s=self.max_age_s,
            )
        except WebhookRejected as err:
            return Verdict(401, f"refused: {err}")
        prediction = _prediction(body)
        if prediction is None:
            return Verdict(400, "refused: the body is not a prediction")
        prediction_id = str(prediction["id"])
        timestamp = {k.lower(): v for k, v in headers.items()}["webhook-timestamp"]
        if not self.ledger.first_delivery(webhook_id, timestamp):
            return Verdict(409, f"refused: delivery {webhook_id} was already taken (a replay)")
        member = self.ledger.item_of_prediction(prediction_id)
        if member is None:
            inputs = prediction.get("input", prediction.get("inputs"))
            if isinstance(inputs, dict):
                self.ledger.observe(prediction_id, {"inputs": inputs})
            return Verdict(
                202, f"prediction {prediction_id} is not one of ours (yet); its inputs are kept"
            )
        batch_id, item_id = keys.slot_member_ids(member)
        return Verdict(202, f"polling {member} now", Next("poll", batch_id, item_id))

    def forget(self, headers: Mapping[str, str]) -> None:
        """A delivery was taken but could not be acted on: let the provider's retry in."""
        lowered = {k.lower(): v for k, v in headers.items()}
        self.ledger.forget_delivery(lowered["webhook-id"], lowered["webhook-timestamp"])


def _prediction(body: bytes) -> dict[str, Any] | None:
    """The prediction of a delivery: the object itself or its `data` envelope."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if isinstance(value, dict) and isinstance(value.get("data"), dict):
        value = value["data"]
    if not isinstance(value, dict) or not value.get("id"):
        return None
    return value
