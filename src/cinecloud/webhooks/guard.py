"""Which addresses a webhook may reach: the SSRF guard.

A webhook URL is the caller's choice, and the control plane sits inside the deployment's
network: without a guard, ``http://169.254.169.254/`` (cloud metadata) or
``http://10.0.0.5:5432`` would let any API key probe it. The rule: a target is allowed
when every address its host resolves to is globally routable and not multicast, unless
the deployment allow-lists the host (by name) or the address (by CIDR) in
``webhooks.allow_hosts``.

The check runs at registration and again before each delivery attempt, on the addresses
resolved for that attempt; the sender then connects to the address it checked
(:mod:`cinecloud.webhooks.sender`), so a name that resolves differently a moment later
(DNS rebinding) cannot move the connection.

Resolution goes through a :data:`Resolver`, so tests (and deployments with their own
hosts file) inject one: :class:`HostsResolver`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = [
    "AllowList",
    "HostsResolver",
    "InvalidTarget",
    "Resolver",
    "Target",
    "TargetForbidden",
    "TargetUnresolvable",
    "address_problem",
    "check_target",
    "parse_target",
    "resolve_target",
    "system_resolver",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: ``await resolver(host, port)`` → the host's addresses (as text), or raises OSError.
Resolver = Callable[[str, int], Awaitable[list[str]]]

MAX_URL_CHARS = 2048


class InvalidTarget(ValueError):
    """The URL is not one a webhook can go to (scheme, host, length)."""


class TargetForbidden(ValueError):
    """The host is, or resolves to, an address webhooks may not reach."""


class TargetUnresolvable(ValueError):
    """The host does not resolve."""


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str  # lower case, no brackets, no trailing dot
    port: int
    literal: bool  # the host is an IP address

    @property
    def host_header(self) -> str:
        """The ``Host`` header the URL implies (the port only when not the default)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse_target(url: str) -> Target:
    if len(url) > MAX_URL_CHARS:
        raise InvalidTarget(f"URL is longer than {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidTarget(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidTarget("URL must be http:// or https://")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise InvalidTarget("URL has no host")
    try:
        ipaddress.ip_address(host)
        literal = True
    except ValueError:
        literal = False
    default = 443 if parts.scheme == "https" else 80
    return Target(url, parts.scheme, host, port or default, literal)


# ---------------------------------------------------------------- the address rule


def _embedded_v4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries (mapped, 6to4, Teredo): checked too."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    found = [a for a in (ip.ipv4_mapped, ip.sixtofour) if a is not None]
    if ip.teredo is not None:
        found.extend(ip.teredo)
    return found


def _class_of(ip: IPAddress) -> str | None:
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
        ("not globally routable", not ip.is_global),
    )
    return next((name for name, hit in checks if hit), None)


def address_problem(address: str) -> str | None:
    """Why ``address`` is refused (``"loopback"``, ``"private"``, ...), or None if allowed."""
    ip = ipaddress.ip_address(address)
    for candidate in (*_embedded_v4(ip), ip):  # what it carries says more than its range
        problem = _class_of(candidate)
        if problem is not None:
            return problem
    return None


@dataclass(frozen=True)
class AllowList:
    """Hosts (exact names) and networks webhooks may reach despite the rule."""

    names: frozenset[str] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        names: set[str] = set()
        networks = []
        for entry in entries:
            text = entry.strip()
            if not text:
                continue
            try:
                networks.append(ipaddress.ip_network(text.strip("[]"), strict=False))
            except ValueError:
                names.add(text.rstrip(".").lower())
        return cls(frozenset(names), tuple(networks))

    def allows_name(self, host: str) -> bool:
        return host in self.names

    def allows_address(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip.version == net.version and ip in net for net in self.networks)


def check_target(target: Target, addresses: Sequence[str], allow: AllowList) -> None:
    """Raise :class:`TargetForbidden` unless every address may be reached."""
    if not addresses:
        raise TargetUnresolvable(f"{target.host} has no address")
    if allow.allows_name(target.host):
        return
    for address in addresses:
        if allow.allows_address(address):
            continue
        problem = address_problem(address)
        if problem is not None:
            via = "" if target.literal else f" ({target.host} resolves to {address})"
            raise TargetForbidden(f"webhook target is a {problem} address{via}")


async def resolve_target(target: Target, resolver: Resolver, allow: AllowList) -> list[str]:
    """The target's addresses, checked: an IP literal is its own; a name is resolved once."""
    if target.literal:
        addresses = [target.host]
    else:
        try:
            addresses = await resolver(target.host, target.port)
        except OSError as exc:
            raise TargetUnresolvable(f"{target.host} does not resolve: {exc}") from None
    check_target(target, addresses, allow)
    return addresses


# ---------------------------------------------------------------- resolvers


async def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's resolver (``getaddrinfo``), without blocking the loop."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    seen: dict[str, None] = {}
    for info in infos:
        seen.setdefault(str(info[4][0]).split("%")[0], None)
    return list(seen)


class HostsResolver:
    """Resolves names from a mapping, like a hosts file; unknown names fail as DNS would.
    The mapping may be changed between calls (tests of rebinding do)."""

    def __init__(self, hosts: Mapping[str, Sequence[str]]) -> None:
        self.hosts: dict[str, list[str]] = {k.lower(): list(v) for k, v in hosts.items()}
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        found = self.hosts.get(host.lower())
        if not found:
            raise socket.gaierror(socket.EAI_NONAME, f"unknown host {host}")
        return list(found)
