"""The webhook delivery loop of the control plane, and the URL check the routers share.

Each pass: fan out new job events into messages, claim the due ones (at most
``webhooks.concurrency``), send them at once, and record every attempt. A failed attempt
comes back after :func:`~cinecloud.webhooks.retry_delay`; the loop sleeps
``webhooks.poll_interval_s`` between passes, or less when a job event wakes it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

import httpx
from starlette.concurrency import run_in_threadpool

from cinecloud.api.errors import ApiError
from cinecloud.api.loops import LoopFailures
from cinecloud.api.state import AppState
from cinecloud.jobs.webhooks import AttemptRecord, DueDelivery
from cinecloud.webhooks import (
    AllowList,
    InvalidTarget,
    TargetForbidden,
    TargetUnresolvable,
    make_client,
    parse_target,
    resolve_target,
    retry_delay,
    send_webhook,
    signed_headers,
)

__all__ = ["check_webhook_url", "deliver_once", "webhook_loop"]

log = logging.getLogger("cinecloud.webhooks")

#: A claimed message stays locked this much longer than an attempt may take.
LOCK_MARGIN_S = 30.0
#: Passes start at most this often. Every job event wakes the loop, a busy service
#: records dozens a second, and each pass costs the database a few queries and a write
#: (the fanout cursor); a webhook sent a tenth of a second later is as good. Events that
#: arrive during the gap are in the next pass.
MIN_PASS_GAP_S = 0.1


def allow_list(state: AppState) -> AllowList:
    return AllowList.parse(state.cfg.webhooks.allow_hosts)


async def check_webhook_url(state: AppState, url: str, param: str) -> None:
    """400 unless ``url`` is a webhook target the guard allows (resolved now)."""
    try:
        await resolve_target(parse_target(url), state.resolver, allow_list(state))
    except InvalidTarget as exc:
        raise ApiError(400, "invalid_webhook_url", f"{param}: {exc}", param) from None
    except TargetForbidden as exc:
        raise ApiError(400, "webhook_target_forbidden", f"{param}: {exc}", param) from None
    except TargetUnresolvable as exc:
        raise ApiError(400, "webhook_target_unresolvable", f"{param}: {exc}", param) from None


async def _attempt(
    state: AppState, client: httpx.AsyncClient, due: DueDelivery, rand: Callable[[], float]
) -> tuple[DueDelivery, AttemptRecord, float]:
    """Send one message once; what to record of it."""
    cfg = state.cfg.webhooks
    started = state.clock()
    headers = signed_headers(due.secret, due.id, started, due.payload)
    result = await send_webhook(
        client,
        due.url,
        due.payload,
        headers,
        resolver=state.resolver,
        allow=allow_list(state),
        total_timeout_s=cfg.total_timeout_s,
    )
    state.metrics.webhook_attempts.labels(outcome=result.outcome).inc()
    if result.error is not None:
        log.info("webhook %s attempt %d: %s", due.id, due.attempt, result.error)
    record = AttemptRecord(
        attempt=due.attempt,
        started_at=started,
        duration_s=result.duration_s,
        address=result.address,
        status_code=result.status_code,
        error=None if result.delivered else (result.error or "failed"),
    )
    return due, record, retry_delay(due.attempt, cfg.backoff_base_s, cfg.backoff_max_s, rand())


async def deliver_once(
    state: AppState, client: httpx.AsyncClient, rand: Callable[[], float] = random.random
) -> int:
    """One pass: fan out, claim, send; returns how many messages were sent."""
    cfg = state.cfg.webhooks
    await run_in_threadpool(state.webhooks.fanout, cfg.fanout_grace_s)
    due = await run_in_threadpool(
        state.webhooks.claim,
        cfg.concurrency,
        cfg.total_timeout_s + LOCK_MARGIN_S,
        cfg.max_attempts,
    )
    if due:
        results = await asyncio.gather(*(_attempt(state, client, d, rand) for d in due))
        await run_in_threadpool(state.webhooks.record_attempts, results)
    return len(due)


async def webhook_loop(state: AppState) -> None:
    """Deliver until canceled; a database blip only costs a pass."""
    failures = LoopFailures("webhook delivery", log)
    async with make_client(state.cfg.webhooks) as client:
        loop = asyncio.get_running_loop()
        while True:
            sent, started = 0, loop.time()
            try:
                sent = await deliver_once(state, client)
            except Exception as exc:
                failures.failed(exc)
            else:
                failures.passed()
            if sent < state.cfg.webhooks.concurrency:
                await state.events.wait(state.cfg.webhooks.poll_interval_s)
                gap = MIN_PASS_GAP_S - (loop.time() - started)
                if gap > 0:
                    await asyncio.sleep(gap)
