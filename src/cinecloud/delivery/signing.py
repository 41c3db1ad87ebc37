"""Signed CDN URLs in the format nginx ``secure_link`` checks.

A URL is ``/cdn/{key}?e={expires}&s={sig}``, where ``sig`` is the unpadded
base64url MD5 of ``f"{expires}{uri} {secret}"`` and ``uri`` is the URL path.
An nginx edge verifies it on its own with::

    secure_link $arg_s,$arg_e;
    secure_link_md5 "$secure_link_expires$uri $secret";

MD5 is what nginx offers here; the secret keeps it unforgeable in practice and
the expiry bounds how long a leaked URL works.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from cinecloud.storage import validate_key

__all__ = [
    "SignatureExpired",
    "SignatureInvalid",
    "sign",
    "signed_url",
    "verify",
]

_DIGITS = re.compile(r"[0-9]{1,12}")


class SignatureInvalid(Exception):
    """The signature is missing, malformed or does not match."""

    status_code = 403
    code = "invalid_signature"


class SignatureExpired(Exception):
    """The signature matches but its expiry has passed."""

    status_code = 410
    code = "url_expired"


def _digest(expires: str, uri: str, secret: str) -> str:
    if not secret:
        raise ValueError("secret is empty")
    if not uri.startswith("/"):
        raise ValueError(f"uri must start with '/': {uri!r}")
    digest = hashlib.md5(f"{expires}{uri} {secret}".encode(), usedforsecurity=False).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sign(uri: str, expires: int, secret: str) -> str:
    """The signature of ``uri`` valid until ``expires`` (unix seconds)."""
    if isinstance(expires, bool) or not isinstance(expires, int) or not 0 <= expires < 10**12:
        raise ValueError(f"expires must be an int in 0..10**12-1 (unix seconds), got {expires!r}")
    return _digest(str(expires), uri, secret)


def signed_url(base_url: str, key: str, *, secret: str, expires: int, prefix: str = "/cdn") -> str:
    """``{base_url}{prefix}/{key}?e={expires}&s={sig}``."""
    validate_key(key)
    if not prefix.startswith("/") or prefix.endswith("/"):
        raise ValueError(f"prefix must start with '/' and not end with one: {prefix!r}")
    uri = f"{prefix}/{key}"
    return f"{base_url.rstrip('/')}{uri}?e={expires}&s={sign(uri, expires, secret)}"


def verify(
    uri: str,
    expires: str | int | None,
    sig: str | None,
    *,
    secret: str,
    now: float,
) -> None:
    """Raise unless ``sig`` signs ``uri`` until ``expires`` and ``now`` is not past it.

    Like nginx, the signature is checked first: a tampered URL is invalid even
    when it has also expired. ``expires`` must be 1 to 12 decimal digits.
    """
    if expires is None or sig is None:
        raise SignatureInvalid("missing e or s query parameter")
    text = str(expires)
    if isinstance(expires, bool) or not _DIGITS.fullmatch(text):
        raise SignatureInvalid("malformed expiry")
    # The digest covers the expiry exactly as written, as nginx's does.
    expected = _digest(text, uri, secret)
    if not hmac.compare_digest(expected.encode(), sig.encode("utf-8", "replace")):
        raise SignatureInvalid("signature does not match")
    if int(text) < now:
        raise SignatureExpired("signed URL has expired")
