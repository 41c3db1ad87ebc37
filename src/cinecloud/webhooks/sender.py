"""One webhook attempt: resolve, check, connect to the checked address, POST, no redirect.

The connection goes to the IP address the guard just approved, not to the name: the
request URL carries the address, the ``Host`` header the name, and for HTTPS the TLS SNI
and certificate check use the name too (httpcore's ``sni_hostname`` extension). So a
name that resolves to a public address for the check and to a private one a moment later
(DNS rebinding) still reaches only the checked address.

Timeouts are strict: connect, read (each read of the socket) and a total for the whole
attempt, so a receiver trickling bytes cannot hold a sender. Redirects are not followed
(a 3xx counts as a failed attempt), and proxies from the environment are ignored (a
proxy would connect by name again).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx

from cinecloud.config import WebhookConfig
from cinecloud.webhooks.guard import (
    AllowList,
    InvalidTarget,
    Resolver,
    Target,
    TargetForbidden,
    TargetUnresolvable,
    parse_target,
    resolve_target,
)

__all__ = ["AttemptResult", "make_client", "send_webhook"]

#: How much of a receiver's answer is read (and kept in the delivery log).
MAX_RESPONSE_BYTES = 1024
USER_AGENT = "cinecloud-webhooks/1"


@dataclass(frozen=True)
class AttemptResult:
    delivered: bool
    status_code: int | None
    error: str | None
    address: str | None
    duration_s: float
    forbidden: bool = False

    @property
    def outcome(self) -> str:
        return "delivered" if self.delivered else "forbidden" if self.forbidden else "failed"


def make_client(cfg: WebhookConfig, *, verify: ssl.SSLContext | bool = True) -> httpx.AsyncClient:
    """The client of the delivery loop; ``verify`` is httpx's (a context trusting a test
    CA in tests; the system's store otherwise)."""
    timeout = httpx.Timeout(
        connect=cfg.connect_timeout_s,
        read=cfg.read_timeout_s,
        write=cfg.read_timeout_s,
        pool=cfg.connect_timeout_s,
    )
    return httpx.AsyncClient(
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        limits=httpx.Limits(max_connections=max(cfg.concurrency, 1) * 2),
        verify=verify,
    )


async def send_webhook(
    client: httpx.AsyncClient,
    url: str,
    body: str,
    headers: Mapping[str, str],
    *,
    resolver: Resolver,
    allow: AllowList,
    total_timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> AttemptResult:
    """POST ``body`` to ``url`` once; never raises for the receiver's faults."""
    started = clock()

    def result(
        ok: bool, status: int | None, error: str | None, address: str | None, bad: bool = False
    ) -> AttemptResult:
        return AttemptResult(ok, status, error, address, clock() - started, bad)

    try:
        target = parse_target(url)
        address = (await resolve_target(target, resolver, allow))[0]
    except TargetForbidden as exc:
        return result(False, None, f"webhook_target_forbidden: {exc}", None, True)
    except (InvalidTarget, TargetUnresolvable) as exc:
        return result(False, None, f"webhook_target_unresolvable: {exc}", None)
    request = _pinned_request(client, target, address, body, headers)
    try:
        async with asyncio.timeout(total_timeout_s):
            response = await client.send(request, stream=True)
            try:
                await _read_some(response)
            finally:
                await response.aclose()
    except TimeoutError:
        return result(False, None, f"timed out after {total_timeout_s:g} s", address)
    except httpx.HTTPError as exc:
        return result(False, None, f"{type(exc).__name__}: {exc}"[:500], address)
    status = response.status_code
    if 200 <= status < 300:
        return result(True, status, None, address)
    why = "redirect not followed" if 300 <= status < 400 else "not a 2xx answer"
    return result(False, status, f"HTTP {status}: {why}", address)


def _pinned_request(
    client: httpx.AsyncClient, target: Target, address: str, body: str, headers: Mapping[str, str]
) -> httpx.Request:
    """A POST to ``address`` that says ``target``'s name: in ``Host``, and for HTTPS as
    the TLS SNI and the name the certificate must carry."""
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    return client.build_request(
        "POST",
        httpx.URL(target.url).copy_with(host=address),
        content=body.encode(),
        headers={
            **headers,
            "Host": target.host_header,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        },
        extensions=extensions,
    )


async def _read_some(response: httpx.Response) -> bytes:
    got = b""
    async for chunk in response.aiter_raw():
        got += chunk
        if len(got) >= MAX_RESPONSE_BYTES:
            break
    return got[:MAX_RESPONSE_BYTES]
