"""The sender against real servers on 127.0.0.1: HTTPS to a pinned address keeps the name
for SNI and the certificate check, and the total timeout bounds a receiver that trickles."""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cinecloud.config import WebhookConfig
from cinecloud.webhooks import AllowList, HostsResolver, make_client, send_webhook

LOOPBACK = AllowList.parse(["127.0.0.1"])
HOSTS = HostsResolver({"hooks.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})


def self_signed(tmp: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path, list[str], list[str]]]:
    """An HTTPS server for hooks.test on 127.0.0.1; records SNI names and Host headers."""
    cert, key = self_signed(tmp_path, "hooks.test")
    snis: list[str] = []
    hosts: list[str] = []
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.sni_callback = lambda _sock, name, _ctx: snis.append(str(name)) and None

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            hosts.append(str(self.headers["Host"]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], cert, snis, hosts
    finally:
        server.shutdown()
        server.server_close()


def send(url: str, cfg: WebhookConfig, verify: ssl.SSLContext | bool = True) -> Any:
    async def go() -> Any:
        async with make_client(cfg, verify=verify) as client:
            return await send_webhook(
                client,
                url,
                "{}",
                {"webhook-id": "msg_1"},
                resolver=HOSTS,
                allow=LOOPBACK,
                total_timeout_s=cfg.total_timeout_s,
            )

    return asyncio.run(go())


def test_https_to_the_pinned_address_keeps_the_name(
    tls_server: tuple[int, Path, list[str], list[str]],
) -> None:
    port, cert, snis, hosts = tls_server
    trust = ssl.create_default_context(cafile=str(cert))
    ok = send(f"https://hooks.test:{port}/hook", WebhookConfig(), trust)
    assert ok.delivered and ok.status_code == 204 and ok.address == "127.0.0.1", ok
    assert snis == ["hooks.test"] and hosts == [f"hooks.test:{port}"]
    # the same address under a name the certificate does not carry is refused by TLS
    other = send(f"https://other.test:{port}/hook", WebhookConfig(), trust)
    assert not other.delivered and "CERTIFICATE_VERIFY_FAILED" in (other.error or "")
    assert snis[-1] == "other.test" and len(hosts) == 1


def test_total_timeout_bounds_a_trickling_receiver() -> None:
    """Each byte comes before the read timeout, but the whole answer would take 5 s."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
                time.sleep(0.15)
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    cfg = WebhookConfig(read_timeout_s=0.5, total_timeout_s=1.0)
    started = time.monotonic()
    result = send(f"http://127.0.0.1:{port}/hook", cfg)
    assert not result.delivered and result.error == "timed out after 1 s", result
    assert 0.9 <= time.monotonic() - started < 2.0
    listener.close()
