"""The abuse limits' arithmetic (api.limits) and settings (config.limits), by tables."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cinecloud.api.limits import (
    RateLimiter,
    check_budget,
    check_quota,
    pixel_steps,
    retry_after_s,
    seconds_to_utc_midnight,
)
from cinecloud.config import LimitsConfig, TenantLimits, load_config
from cinecloud.jobs.usage import TenantUsage


def at(iso: str) -> float:
    return datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("wait", "header"),
    [(-3.0, 1), (0.0, 1), (0.2, 1), (1.0, 1), (1.0001, 2), (59.5, 60), (3600.0, 3600)],
)
def test_retry_after_is_whole_seconds_rounded_up(wait: float, header: int) -> None:
    assert retry_after_s(wait) == header


@pytest.mark.parametrize(
    ("now", "left"),
    [
        ("2026-12-02T23:59:00", 60.0),
        ("2026-12-02T00:00:00", 86_400.0),
        ("2026-12-02T12:00:00", 43_200.0),
        ("2026-12-31T23:59:59.5", 0.5),  # over the year's end
    ],
)
def test_seconds_to_utc_midnight(now: str, left: float) -> None:
    assert seconds_to_utc_midnight(at(now)) == pytest.approx(left)


NOON = at("2026-12-02T12:00:00")


def usage(active: int = 0, eta: float | None = None, gpu_s: float = 0.0) -> TenantUsage:
    return TenantUsage(active, eta, gpu_s, "2026-12-02", NOON)


def lim(**kw: Any) -> TenantLimits:
    return TenantLimits(**{"max_active_jobs": 3, "gpu_seconds_per_day": 100.0, **kw})


@pytest.mark.parametrize(
    ("limits", "held", "refused"),
    [
        (lim(), usage(), None),
        (lim(), usage(active=2, gpu_s=99.9), None),
        # at the cap: retry after the soonest running job's ETA, else the fallback
        (lim(), usage(active=3), ("too_many_active_jobs", 7)),
        (lim(), usage(active=5, eta=2.2), ("too_many_active_jobs", 3)),
        (lim(), usage(active=3, eta=0.0), ("too_many_active_jobs", 7)),
        # the day's GPU-seconds spent: retry at midnight UTC (12 h from noon)
        (lim(), usage(gpu_s=100.0), ("quota_exceeded", 43_200)),
        (lim(), usage(gpu_s=250.0), ("quota_exceeded", 43_200)),
        # both: the active-jobs refusal comes first (it clears sooner)
        (lim(), usage(active=3, gpu_s=100.0), ("too_many_active_jobs", 7)),
        # 0 is no limit
        (lim(max_active_jobs=0), usage(active=10_000), None),
        (lim(gpu_seconds_per_day=0.0), usage(gpu_s=1e12), None),
    ],
)
def test_quota(limits: TenantLimits, held: TenantUsage, refused: tuple[str, int] | None) -> None:
    got = check_quota(limits, held, fallback_s=7)
    if refused is None:
        assert got is None
        return
    assert got is not None
    assert (got.status, got.code, got.retry_after_s) == (429, *refused)
    err = got.error()
    assert err.headers == {"Retry-After": str(refused[1])}


def test_quota_messages_name_the_figure_and_the_limit() -> None:
    busy = check_quota(lim(), usage(active=4), fallback_s=7)
    assert (
        busy is not None and "4 queued or running" in busy.message and "limit is 3" in busy.message
    )
    spent = check_quota(lim(), usage(gpu_s=123.5), fallback_s=7)
    assert spent is not None
    assert "123.5 GPU-seconds on 2026-12-02" in spent.message and "quota is 100" in spent.message


@pytest.mark.parametrize(
    ("budget", "shape", "ok"),
    [
        (64 * 64 * 16 * 2, (64, 64, 16, 2), True),  # exactly the budget
        (64 * 64 * 16 * 2, (64, 64, 16, 3), False),  # one more step
        (64 * 64 * 16 * 2, (64, 64, 17, 2), False),
        (64 * 64 * 16 * 2, (64, 80, 16, 2), False),
        (0, (4096, 4096, 1000, 1000), True),  # 0: no limit
        (10_000_000_000, (1280, 720, 81, 50), True),  # Wan at 720p, its own defaults
        (10_000_000_000, (1280, 720, 129, 100), False),  # HunyuanVideo at its utmost
    ],
)
def test_budget(budget: int, shape: tuple[int, int, int, int], ok: bool) -> None:
    got = check_budget(TenantLimits(max_pixel_steps=budget), *shape)
    assert (got is None) is ok
    if got is not None:
        total = pixel_steps(*shape)
        assert (got.status, got.code, got.retry_after_s) == (400, "request_too_large", None)
        assert f"is {total:,} pixel-steps" in got.message
        assert f"limit per request is {budget:,}" in got.message


def test_tenant_overrides_by_id_then_name() -> None:
    base = TenantLimits()
    cfg = LimitsConfig(
        default=base,
        tenants={
            "ten_1": TenantLimits(max_active_jobs=1),
            "acme": TenantLimits(max_active_jobs=2),
        },
    )
    assert cfg.for_tenant("ten_1", "acme").max_active_jobs == 1
    assert cfg.for_tenant("ten_2", "acme").max_active_jobs == 2
    assert cfg.for_tenant("ten_2", "other") is base
    assert cfg.for_tenant("ten_2") is base


def test_settings_load_and_override(tmp_path: Path) -> None:
    cfg = load_config(
        server={"home": tmp_path},  # type: ignore[arg-type]
        limits={  # type: ignore[arg-type]
            "max_active_jobs": 5,
            "rate": "20/second; 100/minute",
            "tenants": {"acme": {"max_active_jobs": 50}},
            "storage": "redis://:hunter2@127.0.0.1:6379/0",
        },
    )
    assert cfg.limits.default.max_active_jobs == 5
    acme = cfg.limits.for_tenant("ten_x", "acme")
    # an override changes what it names and keeps the rest
    assert (acme.max_active_jobs, acme.rate) == (50, "20/second; 100/minute")
    shown = cfg.redacted()["limits"]
    assert shown["storage"] == "redis://:***@127.0.0.1:6379/0"


def test_defaults_are_on() -> None:
    d = LimitsConfig().default
    assert d.rate and d.create_rate
    assert d.max_active_jobs > 0 and d.gpu_seconds_per_day > 0 and d.max_pixel_steps > 0


@pytest.mark.parametrize(
    ("section", "needle"),
    [
        ({"rate": "5 per fortnight"}, "not a rate"),
        ({"create_rate": "five/second"}, "not a rate"),
        ({"max_active_jobs": -1}, "max_active_jobs"),
        ({"gpu_seconds_per_day": -1}, "gpu_seconds_per_day"),
        ({"max_pixel_steps": -5}, "max_pixel_steps"),
        ({"storage": "mongodb://x"}, "redis:// URL"),
        ({"storage": "127.0.0.1:6379"}, "redis:// URL"),
        ({"strategy": "token-bucket"}, "strategy"),
        ({"tenants": {"acme": {"max_jobs": 3}}}, "max_jobs"),
        ({"tenants": {"acme": {"rate": "x"}}}, "not a rate"),
        ({"active_retry_after_s": 0}, "active_retry_after_s"),
    ],
)
def test_bad_settings_are_refused(tmp_path: Path, section: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        load_config(server={"home": tmp_path}, limits=section)  # type: ignore[arg-type]


@pytest.mark.parametrize("strategy", ["moving-window", "sliding-window-counter", "fixed-window"])
def test_rate_limiter_in_memory(strategy: str) -> None:
    """5/minute: five pass, the sixth is refused with a Retry-After within the minute;
    another key and another scope count apart; an empty rate is no limit."""
    limiter = RateLimiter(LimitsConfig(strategy=strategy))

    async def run() -> None:
        got = [await limiter.hit("requests", "key_a", "5/minute") for _ in range(6)]
        assert got[:5] == [None] * 5
        refused = got[5]
        assert refused is not None and (refused.status, refused.code) == (429, "rate_limited")
        assert refused.retry_after_s is not None and 1 <= refused.retry_after_s <= 60
        assert "5 per 1 minute" in refused.message
        assert refused.headers is not None and refused.headers["X-RateLimit-Limit"] == "5"
        assert await limiter.hit("requests", "key_b", "5/minute") is None
        assert await limiter.hit("create", "key_a", "5/minute") is None
        assert all([await limiter.hit("requests", "key_a", "") is None for _ in range(50)])

    asyncio.run(run())


def test_rate_limiter_several_rates() -> None:
    """'3/second;4/minute': the per-second rate bites first, the minute's after."""
    limiter = RateLimiter(LimitsConfig())

    async def run() -> list[str | None]:
        out = []
        for _ in range(5):
            r = await limiter.hit("create", "k", "3/second;4/minute")
            out.append(None if r is None else r.message)
        return out

    got = asyncio.run(run())
    assert got[:3] == [None] * 3
    assert got[3] is not None and "3 per 1 second" in got[3]
