"""Delivery: signed URLs and the origin that serves stored blobs behind them."""

from __future__ import annotations

from cinecloud.delivery.origin import (
    CACHE_CONTROL,
    RangeNotSatisfiable,
    create_origin_router,
    etag_matches,
    parse_range,
)
from cinecloud.delivery.signing import (
    SignatureExpired,
    SignatureInvalid,
    sign,
    signed_url,
    verify,
)

__all__ = [
    "CACHE_CONTROL",
    "RangeNotSatisfiable",
    "SignatureExpired",
    "SignatureInvalid",
    "create_origin_router",
    "etag_matches",
    "parse_range",
    "sign",
    "signed_url",
    "verify",
]
