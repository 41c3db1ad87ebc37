"""The SSRF guard: which webhook targets are refused, and why (pure: injected resolver)."""

from __future__ import annotations

import asyncio
import re

import pytest

from cinecloud.webhooks import (
    AllowList,
    HostsResolver,
    InvalidTarget,
    TargetForbidden,
    TargetUnresolvable,
    address_problem,
    parse_target,
    resolve_target,
)


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1", "loopback"),
        ("127.9.9.9", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.7", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "not globally routable"),  # carrier-grade NAT
        ("192.0.2.10", "private"),  # documentation range
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:10.0.0.1", "private"),
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("93.184.216.34", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_address_classes(address: str, problem: str | None) -> None:
    assert address_problem(address) == problem


def check(url: str, hosts: dict[str, list[str]], allow: list[str] | None = None) -> list[str]:
    target = parse_target(url)
    return asyncio.run(resolve_target(target, HostsResolver(hosts), AllowList.parse(allow or [])))


HOSTS = {
    "hooks.example.com": ["93.184.216.34"],
    "internal.example.com": ["10.20.30.40"],
    "mixed.example.com": ["93.184.216.34", "127.0.0.1"],
    "metadata.example.com": ["169.254.169.254"],
}


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:8080/h", "loopback"),
        ("http://10.1.1.1/h", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::1]/h", "loopback"),
        ("https://internal.example.com/h", "private address (internal.example.com resolves"),
        ("https://metadata.example.com/h", "link-local"),
        ("https://mixed.example.com/h", "loopback address (mixed.example.com resolves"),
    ],
)
def test_refused_targets(url: str, why: str) -> None:
    with pytest.raises(TargetForbidden, match=re.escape(f"webhook target is a {why}")):
        check(url, HOSTS)


def test_allowed_and_allow_listed_targets() -> None:
    assert check("https://hooks.example.com/h", HOSTS) == ["93.184.216.34"]
    assert check("http://127.0.0.1:9000/h", HOSTS, ["127.0.0.1"]) == ["127.0.0.1"]
    assert check("http://10.1.2.3/h", HOSTS, ["10.0.0.0/8"]) == ["10.1.2.3"]
    assert check("https://internal.example.com/h", HOSTS, ["Internal.Example.com"]) == [
        "10.20.30.40"
    ]
    # an allow-listed address does not let the other addresses of a name through
    with pytest.raises(TargetForbidden):
        check("https://mixed.example.com/h", HOSTS, ["93.184.216.34"])
    with pytest.raises(TargetForbidden):
        check("http://[::1]/h", HOSTS, ["127.0.0.1"])  # v4 allow-list, v6 address


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("ftp://hooks.example.com/", InvalidTarget),
        ("file:///etc/passwd", InvalidTarget),
        ("http:///nohost", InvalidTarget),
        ("http://hooks.example.com:99999/", InvalidTarget),
        ("https://" + "a" * 2100 + ".com/", InvalidTarget),
        ("https://unknown.example.com/", TargetUnresolvable),
    ],
)
def test_invalid_targets(url: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        check(url, HOSTS)


def test_target_parts() -> None:
    t = parse_target("https://Hooks.Example.com./a?b=1")
    assert (t.scheme, t.host, t.port, t.literal, t.host_header) == (
        "https",
        "hooks.example.com",
        443,
        False,
        "hooks.example.com",
    )
    assert parse_target("http://[::1]:8080/").host_header == "[::1]:8080"
    assert parse_target("http://1.2.3.4/").literal
