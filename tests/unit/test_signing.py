"""Signed URLs: the nginx secure_link_md5 format, tampering and expiry."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import parse_qs, urlsplit

import pytest

from cinecloud.delivery import SignatureExpired, SignatureInvalid, sign, signed_url, verify
from cinecloud.storage import InvalidKey

pytestmark = pytest.mark.unit

SECRET = "s3cr3t-value"
URI = "/cdn/t/ten_1/v/video_1/video.mp4"
EXPIRES = 2147483647


def reference_sig(expires: str, uri: str, secret: str) -> str:
    digest = hashlib.md5(f"{expires}{uri} {secret}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def test_known_vector() -> None:
    # The same value as: echo -n "2147483647$URI s3cr3t-value" | openssl md5 -binary
    #   | openssl base64 | tr +/ -_ | tr -d =   (the recipe in the nginx secure_link docs)
    assert sign(URI, EXPIRES, SECRET) == "3l2S3MXFM1VU3X5GpIgQmQ"
    assert sign(URI, EXPIRES, SECRET) == reference_sig(str(EXPIRES), URI, SECRET)


@pytest.mark.parametrize("expires", [0, 1, 1_700_000_000])
def test_matches_reference(expires: int) -> None:
    for uri in (URI, "/cdn/a", "/x/t/a/v/b/poster.jpg"):
        sig = sign(uri, expires, SECRET)
        assert sig == reference_sig(str(expires), uri, SECRET)
        assert len(sig) == 22 and "=" not in sig


def test_signed_url_shape() -> None:
    url = signed_url(
        "https://cdn.example.com/", "t/ten_1/v/video_1/video.mp4", secret=SECRET, expires=EXPIRES
    )
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "cdn.example.com", URI)
    assert parse_qs(parts.query) == {
        "e": [str(EXPIRES)],
        "s": [reference_sig(str(EXPIRES), URI, SECRET)],
    }
    assert url == f"https://cdn.example.com{URI}?e={EXPIRES}&s=3l2S3MXFM1VU3X5GpIgQmQ"


def test_signed_url_custom_prefix() -> None:
    url = signed_url("http://h", "t/a/v/b/c.jpg", secret=SECRET, expires=5, prefix="/media")
    sig = reference_sig("5", "/media/t/a/v/b/c.jpg", SECRET)
    assert url == f"http://h/media/t/a/v/b/c.jpg?e=5&s={sig}"


def test_signed_url_rejects_bad_input() -> None:
    with pytest.raises(InvalidKey):
        signed_url("http://h", "../etc/passwd", secret=SECRET, expires=5)
    with pytest.raises(ValueError, match="prefix"):
        signed_url("http://h", "t/a", secret=SECRET, expires=5, prefix="cdn/")
    with pytest.raises(ValueError, match="secret"):
        signed_url("http://h", "t/a", secret="", expires=5)


@pytest.mark.parametrize("expires", [-1, 10**12, True, 1.5, "5"])
def test_sign_rejects_bad_expires(expires: object) -> None:
    with pytest.raises(ValueError, match="expires"):
        sign(URI, expires, SECRET)  # type: ignore[arg-type]


def test_sign_rejects_relative_uri() -> None:
    with pytest.raises(ValueError, match="uri"):
        sign("cdn/a", 5, SECRET)


def test_verify_accepts_until_expiry() -> None:
    sig = sign(URI, 1000, SECRET)
    verify(URI, "1000", sig, secret=SECRET, now=0.0)
    verify(URI, 1000, sig, secret=SECRET, now=999.9)
    verify(URI, "1000", sig, secret=SECRET, now=1000.0)


def test_verify_expired() -> None:
    sig = sign(URI, 1000, SECRET)
    with pytest.raises(SignatureExpired):
        verify(URI, "1000", sig, secret=SECRET, now=1000.5)
    assert (SignatureExpired.status_code, SignatureExpired.code) == (410, "url_expired")


@pytest.mark.parametrize(
    ("uri", "expires", "sig", "secret"),
    [
        (URI, "1000", "AAAAAAAAAAAAAAAAAAAAAA", SECRET),  # forged signature
        ("/cdn/t/ten_1/v/video_1/poster.jpg", "1000", None, SECRET),  # another path
        (URI, "1001", None, SECRET),  # extended expiry
        (URI, "01000", None, SECRET),  # same number, different text
        (URI, "1000", None, "other-secret"),
        (URI, None, None, SECRET),
        (URI, "1000", "", SECRET),
        (URI, "", None, SECRET),
        (URI, "abc", None, SECRET),
        (URI, "1e3", None, SECRET),
        (URI, "-1000", None, SECRET),
        (URI, " 1000", None, SECRET),
        (URI, "1000", "3l2S3MXFM1VU3X5GpIgQmQé", SECRET),
    ],
)
def test_verify_tampered(uri: str, expires: str | None, sig: str | None, secret: str) -> None:
    good = sign(URI, 1000, SECRET)
    with pytest.raises(SignatureInvalid):
        verify(uri, expires, good if sig is None else sig, secret=secret, now=0.0)
    assert (SignatureInvalid.status_code, SignatureInvalid.code) == (403, "invalid_signature")


def test_verify_missing_sig() -> None:
    with pytest.raises(SignatureInvalid, match="missing"):
        verify(URI, "1000", None, secret=SECRET, now=0.0)


def test_tampered_and_expired_is_invalid() -> None:
    with pytest.raises(SignatureInvalid):
        verify(URI, "1000", "AAAAAAAAAAAAAAAAAAAAAA", secret=SECRET, now=5000.0)


def test_verify_rejects_bool_expiry() -> None:
    with pytest.raises(SignatureInvalid):
        verify(URI, True, sign(URI, 1, SECRET), secret=SECRET, now=0.0)
