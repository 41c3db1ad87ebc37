"""The key and certificate chain C2PA manifests are signed with.

A deployment names its own (``provenance.cert_path`` and ``provenance.key_path``: a PEM
chain, signer first, and its PEM private key). Without them, :func:`local_credentials`
makes a local test CA and a signing certificate under ``<home>/c2pa/`` the first time
(ES256, P-256), which ``cinecloud verify`` on the same home trusts. C2PA validators
elsewhere report such a manifest as valid but its signer as untrusted, as they should.

The signer certificate has what C2PA asks of one: not a CA, key usage
``digitalSignature``, extended key usage ``emailProtection``, issued by a CA whose
certificate has ``keyCertSign``.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA_FILE",
    "Credentials",
    "load_credentials",
    "local_credentials",
    "make_test_ca",
]

CA_FILE = "ca.pem"
CHAIN_FILE = "signer-chain.pem"
KEY_FILE = "signer-key.pem"
_CA_YEARS = 10
_SIGNER_YEARS = 2


@dataclass(frozen=True)
class Credentials:
    """What a signer needs: the algorithm, the PEM chain (signer first) and the PEM key."""

    alg: str
    chain_pem: bytes
    key_pem: bytes


def load_credentials(cert_path: Path, key_path: Path, alg: str) -> Credentials:
    """A deployment's own chain and key; a short error when a file is missing or not PEM."""
    parts = []
    for what, path in (("certificate chain", cert_path), ("private key", key_path)):
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read the C2PA {what} {path}: {exc.strerror}") from None
        if b"-----BEGIN" not in data:
            raise ValueError(f"the C2PA {what} {path} is not PEM")
        parts.append(data)
    return Credentials(alg, parts[0], parts[1])


def local_credentials(home: Path) -> Credentials:
    """The test CA's signer under ``home/c2pa``, made on first use (safe to race)."""
    directory = Path(home) / "c2pa"
    if not (directory / KEY_FILE).is_file():
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".c2pa-", dir=directory.parent))
        try:
            make_test_ca(staging)
            with contextlib.suppress(OSError):  # another process made it first: keep theirs
                os.rename(staging, directory)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return Credentials(
        "es256", (directory / CHAIN_FILE).read_bytes(), (directory / KEY_FILE).read_bytes()
    )


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cinecloud"),
        ]
    )


def _key_usage(*, sign: bool, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def make_test_ca(directory: Path, now: datetime.datetime | None = None) -> None:
    """Write a test CA (``ca.pem``) and a signer issued by it (chain and key) to
    ``directory``."""
    now = now or datetime.datetime.now(datetime.UTC)
    start = now - datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("cinecloud local test CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + datetime.timedelta(days=365 * _CA_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(sign=False, ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    signer = (
        x509.CertificateBuilder()
        .subject_name(_name("cinecloud local signer"))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + datetime.timedelta(days=365 * _SIGNER_YEARS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(sign=True, ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CA_FILE).write_bytes(ca.public_bytes(pem))
    (directory / CHAIN_FILE).write_bytes(signer.public_bytes(pem) + ca.public_bytes(pem))
    key_path = directory / KEY_FILE
    key_path.write_bytes(key_pem)
    key_path.chmod(0o600)
