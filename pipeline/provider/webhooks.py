"""Webhook signatures, v3 scheme (contract.md). Pure functions, shared by the sandbox (signs)
and the pipeline (verifies).

Headers: `webhook-id`, `webhook-timestamp` (epoch seconds), `webhook-signature: v3,<hex>`,
the hex being HMAC-SHA256 over `{id}.{timestamp}.{raw body}` keyed with the account secret
minus its `whsec_` prefix (used as text, not base64-decoded). Older than 300 s is refused.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

SIGNATURE_VERSION = "v3"
SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
MAX_AGE_S = 300


@dataclass(frozen=True)
class WebhookHeaders:
    """The three headers that authenticate one delivery."""

    webhook_id: str
    timestamp_s: int
    signature: str

    def as_dict(self) -> dict[str, str]:
        """HTTP header names and values."""
        return {
            "webhook-id": self.webhook_id,
            "webhook-timestamp": str(self.timestamp_s),
            "webhook-signature": self.signature,
        }


class WebhookRejected(ValueError):
    """A delivery failed verification: the message says why (never echoes the secret)."""


def _key(secret: str) -> bytes:
    return secret.removeprefix(SECRET_PREFIX).encode()


def signature_hex(secret: str, webhook_id: str, timestamp_s: int, body: bytes) -> str:
    """HMAC-SHA256 hex digest over `{id}.{timestamp}.{body}`."""
    message = f"{webhook_id}.{timestamp_s}.".encode() + body
    return hmac.new(_key(secret), message, hashlib.sha256).hexdigest()


def sign(secret: str, webhook_id: str, timestamp_s: int, body: bytes) -> WebhookHeaders:
    """The headers a provider sends with `body`."""
    digest = signature_hex(secret, webhook_id, timestamp_s, body)
    return WebhookHeaders(webhook_id, timestamp_s, f"{SIGNATURE_VERSION},{digest}")


def verify(
    secret: str,
    headers: dict[str, str],
    body: bytes,
    *,
    now_s: float,
    max_age_s: int = MAX_AGE_S,
) -> str:
    """Check one delivery; returns its webhook id. Raises WebhookRejected with the reason.

    Replays (an id seen before) are for the caller to refuse: it owns the store of seen ids.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    webhook_id = lowered.get("webhook-id", "")
    stamp = lowered.get("webhook-timestamp", "")
    signature = lowered.get("webhook-signature", "")
    if not webhook_id or not stamp or not signature:
        raise WebhookRejected("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp_s = int(stamp)
    except ValueError as err:
        raise WebhookRejected("webhook-timestamp is not an integer") from err
    if abs(now_s - timestamp_s) > max_age_s:
        raise WebhookRejected(f"timestamp is more than {max_age_s} s away from now")
    expected = signature_hex(secret, webhook_id, timestamp_s, body)
    for candidate in signature.split():
        version, _, digest = candidate.partition(",")
        if version == SIGNATURE_VERSION and hmac.compare_digest(digest, expected):
            return webhook_id
    raise WebhookRejected("signature does not match")
