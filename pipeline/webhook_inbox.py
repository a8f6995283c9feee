"""Webhooks from the provider: the fast path to a finished prediction, polling the safety net.

A delivery is taken only if its signature is the account's (v3 scheme, `provider.webhooks`),
its timestamp is fresh (300 s either way) and its id was never seen before (a replay is
refused, even with a valid signature). A taken delivery does not change the ledger itself:
it asks for the item's poll step now, which reads the result from the provider as any poll
does. So a forged or replayed delivery can at worst cause one extra result request, and a
missed one costs only the wait until the next scheduled poll.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pydantic import SecretStr

from pipeline import keys
from pipeline.ledger import Ledger
from pipeline.provider.webhooks import MAX_AGE_S, WebhookRejected, verify
from pipeline.runtime import Next


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
        prediction_id = _prediction_id(body)
        if prediction_id is None:
            return Verdict(400, "refused: the body is not a prediction")
        if not self.ledger.first_delivery(webhook_id):
            return Verdict(409, f"refused: delivery {webhook_id} was already taken (a replay)")
        member = self.ledger.item_of_prediction(prediction_id)
        if member is None:
            return Verdict(202, f"prediction {prediction_id} is not one of ours; ignored")
        batch_id, item_id = keys.slot_member_ids(member)
        return Verdict(202, f"polling {member} now", Next("poll", batch_id, item_id))


def _prediction_id(body: bytes) -> str | None:
    """The prediction id of a delivery: the object itself or its `data` envelope."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if isinstance(value, dict) and isinstance(value.get("data"), dict):
        value = value["data"]
    if not isinstance(value, dict) or not value.get("id"):
        return None
    return str(value["id"])
