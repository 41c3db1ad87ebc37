"""Standard Webhooks signatures (checked with the library's own verifier) and retry timing."""

from __future__ import annotations

import base64
import json
import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from cinecloud.webhooks import new_secret, retry_delay, signed_headers


def test_signature_verifies_with_the_standard_library() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 24
    body = json.dumps({"type": "video.completed", "data": {"id": "video_1"}})
    headers = signed_headers(secret, "msg_1", time.time(), body)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert Webhook(secret).verify(body, headers) == json.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace("video_1", "video_2"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):  # the id is signed too
        Webhook(secret).verify(body, {**headers, "webhook-id": "msg_2"})
    stale = signed_headers(secret, "msg_1", time.time() - 3600, body)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(body, stale)


@pytest.mark.parametrize(
    ("attempt", "rand", "expected"),
    [
        (1, 0.0, 1.0),  # half of base 2 s
        (1, 0.999999, 2.0),
        (2, 0.0, 2.0),
        (3, 0.5, 6.0),  # 8 s ceiling, 75 %
        (12, 0.0, 1800.0),  # capped at 3600 s
        (200, 0.0, 1800.0),
    ],
)
def test_retry_delay(attempt: int, rand: float, expected: float) -> None:
    assert retry_delay(attempt, 2.0, 3600.0, rand) == pytest.approx(expected, rel=1e-5)


def test_retry_delay_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        retry_delay(0, 2.0, 60.0, 0.5)
    with pytest.raises(ValueError):
        retry_delay(1, 2.0, 60.0, 1.0)
