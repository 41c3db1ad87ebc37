"""Abuse limits: per-key rate limits, per-tenant quotas and the per-request budget.

The API applies them in the order the architecture gives: the API key, then the rate
limits (every public request of a key; then ``POST /v1/videos`` of that key), then
the tenant's quotas, then the request against the model's limits and the budget.

- The quota and budget arithmetic are pure functions over a :class:`TenantUsage`
  and a :class:`~cinecloud.config.TenantLimits`: they return a :class:`Refusal`.
- :class:`RateLimiter` keeps the request counts with the ``limits`` library, in
  this process's memory or in Redis (``limits.storage``) so that every control-plane
  replica counts against the same numbers. The quotas are counted in the database.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)
from limits.aio.strategies import (
    RateLimiter as Strategy,
)
from limits.storage import storage_from_string
from starlette.concurrency import run_in_threadpool

from cinecloud.api.errors import ApiError
from cinecloud.config import LimitsConfig, TenantLimits
from cinecloud.jobs.usage import TenantUsage

__all__ = [
    "AbuseLimits",
    "RateLimiter",
    "Refusal",
    "check_budget",
    "check_quota",
    "pixel_steps",
    "retry_after_s",
    "seconds_to_utc_midnight",
]

log = logging.getLogger("cinecloud.api.limits")

_STRATEGIES: dict[str, Callable[[Any], Strategy]] = {
    "moving-window": MovingWindowRateLimiter,
    "sliding-window-counter": SlidingWindowCounterRateLimiter,
    "fixed-window": FixedWindowRateLimiter,
}
# A Redis that does not answer must not hold requests up for long.
_REDIS_TIMEOUT_S = 0.5
# While the counter store fails, requests pass; the warning repeats at most this often.
_WARN_EVERY_S = 30.0


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: an HTTP status, a code, a message naming the figure
    and the limit, and (429) the seconds after which a retry may pass."""

    status: int
    code: str
    message: str
    retry_after_s: int | None = None
    param: str | None = None
    headers: Mapping[str, str] | None = None

    def error(self) -> ApiError:
        headers = dict(self.headers or {})
        if self.retry_after_s is not None:
            headers["Retry-After"] = str(self.retry_after_s)
        return ApiError(self.status, self.code, self.message, self.param, headers or None)


# ---------------------------------------------------------------- pure arithmetic


def retry_after_s(wait_s: float) -> int:
    """``Retry-After`` for a wait of ``wait_s`` seconds: whole seconds, rounded up, at
    least 1 (the header takes no fractions, and 0 invites an immediate retry)."""
    return max(1, math.ceil(wait_s - 1e-9))


def seconds_to_utc_midnight(now: float) -> float:
    """Seconds from ``now`` to the next 00:00 UTC, when a day's GPU-seconds reset."""
    today = datetime.fromtimestamp(now, UTC).date()
    midnight = datetime(today.year, today.month, today.day, tzinfo=UTC) + timedelta(days=1)
    return midnight.timestamp() - now


def check_quota(limits: TenantLimits, usage: TenantUsage, fallback_s: int) -> Refusal | None:
    """Whether a tenant holding ``usage`` may add one more job.

    Too many queued and running jobs: 429 ``too_many_active_jobs``, retry once the
    soonest running job should end (``fallback_s`` when none has an ETA). The day's
    GPU-seconds spent: 429 ``quota_exceeded``, retry at the next UTC midnight. Jobs
    already accepted always run; the GPU-second quota may be overshot by what they
    use, at most ``max_active_jobs`` jobs' worth.
    """
    cap = limits.max_active_jobs
    if cap and usage.active_jobs >= cap:
        eta = usage.soonest_eta_s
        return Refusal(
            429,
            "too_many_active_jobs",
            f"this tenant has {usage.active_jobs} queued or running jobs; the limit is "
            f"{cap}: wait for one to finish, or cancel one",
            retry_after_s(eta) if eta is not None and eta > 0 else fallback_s,
        )
    quota = limits.gpu_seconds_per_day
    if quota and usage.gpu_seconds >= quota:
        return Refusal(
            429,
            "quota_exceeded",
            f"this tenant has used {usage.gpu_seconds:g} GPU-seconds on {usage.day} (UTC); "
            f"the daily quota is {quota:g}, renewed at 00:00 UTC",
            retry_after_s(seconds_to_utc_midnight(usage.now)),
        )
    return None


def pixel_steps(width: int, height: int, num_frames: int, steps: int) -> int:
    """The work one request asks for: every pixel of every frame, at every step."""
    return width * height * num_frames * steps


def check_budget(
    limits: TenantLimits, width: int, height: int, num_frames: int, steps: int
) -> Refusal | None:
    """400 ``request_too_large`` when the request is over ``max_pixel_steps``."""
    budget = limits.max_pixel_steps
    total = pixel_steps(width, height, num_frames, steps)
    if not budget or total <= budget:
        return None
    return Refusal(
        400,
        "request_too_large",
        f"{width}x{height} x {num_frames} frames x {steps} steps is {total:,} pixel-steps; "
        f"the limit per request is {budget:,}: ask for fewer frames, steps or pixels",
    )


# ---------------------------------------------------------------- rate limits


def _storage_uri(url: str) -> str:
    return url if url.startswith("async+") else f"async+{url}"


class RateLimiter:
    """Counts each API key's requests per scope and refuses those over its rate.

    A refused request is not counted, so a client that waits the ``Retry-After`` it
    was given gets through. If the counter store fails (Redis away), requests pass
    and a warning is logged: the quotas, kept in the database, still hold.
    """

    def __init__(self, cfg: LimitsConfig) -> None:
        self.cfg = cfg
        self._items: dict[str, list[RateLimitItem]] = {}
        self._strategy: Strategy | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._warned_at = -math.inf
        self._storage()  # a bad URL or a missing Redis client fails here, at start

    def _storage(self) -> Storage:
        uri = _storage_uri(self.cfg.storage)
        options: dict[str, Any] = {}
        if not uri.startswith("async+memory"):
            options = {
                "implementation": "redispy",
                "key_prefix": self.cfg.key_prefix,
                "wrap_exceptions": True,
                "socket_connect_timeout": _REDIS_TIMEOUT_S,
                "socket_timeout": _REDIS_TIMEOUT_S,
            }
        storage = storage_from_string(uri, **options)
        assert isinstance(storage, Storage)
        return storage

    def _limiter(self) -> Strategy:
        # Made in the event loop the app runs in: the Redis client binds to it (a new
        # loop, as each test client starts one, gets a new client).
        loop = asyncio.get_running_loop()
        if self._strategy is None or self._loop is not loop:
            self._strategy = _STRATEGIES[self.cfg.strategy](self._storage())
            self._loop = loop
        return self._strategy

    def items(self, rate: str) -> list[RateLimitItem]:
        if rate not in self._items:
            self._items[rate] = parse_many(rate) if rate else []
        return self._items[rate]

    async def hit(self, scope: str, key_id: str, rate: str) -> Refusal | None:
        """Count one request of key ``key_id`` in ``scope``; a Refusal when over."""
        items = self.items(rate)
        if not items:
            return None
        try:
            limiter = self._limiter()
            for item in items:
                if not await limiter.hit(item, scope, key_id):
                    stats = await limiter.get_window_stats(item, scope, key_id)
                    # the library's windows run on the wall clock, so the wait does too
                    wait = retry_after_s(stats.reset_time - time.time())
                    return _rate_refusal(scope, item, wait)
        except Exception as exc:  # the counter store failed: let the request through
            self._warn(exc)
        return None

    def _warn(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            log.warning("rate limits not applied: %s unavailable (%s)", self.cfg.storage, exc)


def _rate_refusal(scope: str, item: RateLimitItem, wait_s: int) -> Refusal:
    what = "requests" if scope == "requests" else "video creations"
    return Refusal(
        429,
        "rate_limited",
        f"too many {what} with this API key: the limit is {item}; retry in {wait_s} s",
        wait_s,
        headers={
            "X-RateLimit-Limit": str(item.amount),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(wait_s),
        },
    )


class AbuseLimits:
    """The rate limiter, and each tenant's limits (``limits.tenants`` overrides by id or
    by name; ``tenant_name`` looks a name up, once per tenant, only when overrides
    name tenants)."""

    def __init__(self, cfg: LimitsConfig, tenant_name: Callable[[str], str | None]) -> None:
        self.cfg = cfg
        self.rates = RateLimiter(cfg)
        self._tenant_name = tenant_name
        self._names: dict[str, str | None] = {}

    async def for_tenant(self, tenant_id: str) -> TenantLimits:
        if not self.cfg.tenants or tenant_id in self.cfg.tenants:
            return self.cfg.for_tenant(tenant_id)
        if tenant_id not in self._names:
            if len(self._names) >= 100_000:
                self._names.clear()
            # tenants are never renamed: the name read once stays right
            self._names[tenant_id] = await run_in_threadpool(self._tenant_name, tenant_id)
        return self.cfg.for_tenant(tenant_id, self._names[tenant_id])
