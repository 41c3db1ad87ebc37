"""Standard Webhooks signatures (https://www.standardwebhooks.com), via its library.

Each request carries ``webhook-id`` (the message id, the same on every retry so the
receiver can drop repeats), ``webhook-timestamp`` (Unix seconds of this attempt) and
``webhook-signature`` (``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body`` keyed by the
secret's bytes). Secrets are ``whsec_`` + base64 of 24 random bytes.
"""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime

from standardwebhooks import Webhook

__all__ = ["SECRET_PREFIX", "new_secret", "signed_headers"]

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def signed_headers(secret: str, message_id: str, timestamp: float, body: str) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body`` sent at ``timestamp``."""
    when = datetime.fromtimestamp(int(timestamp), tz=UTC)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": Webhook(secret).sign(message_id, when, body),
    }
