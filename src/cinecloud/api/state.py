"""What the routers share: the config, the stores and the clock."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import Request

from cinecloud.api.limits import AbuseLimits
from cinecloud.api.loops import Leadership, Loop
from cinecloud.config import Config
from cinecloud.engine.registry import Registry
from cinecloud.jobs import AccountStore, ApiKeyRecord, JobStore, WorkerStore
from cinecloud.jobs.webhooks import WebhookStore
from cinecloud.scheduler import ServiceModels, load_service_models
from cinecloud.scheduler.autoscaler import Autoscaler
from cinecloud.storage import BlobStore
from cinecloud.telemetry import Metrics
from cinecloud.webhooks import Resolver, system_resolver

__all__ = ["AppState", "JobNotifier", "KeyCache", "get_state"]


class JobNotifier:
    """Wakes long-polling lease requests when work may have arrived.

    It is only a hint: waiters re-check the store on a short timer anyway, so a
    job queued by another replica or re-queued by the sweeper is never missed.
    """

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    def notify(self) -> None:
        loop, event = self._loop, self._event
        if loop is None or event is None or loop.is_closed():
            return

        def _pulse() -> None:
            event.set()
            event.clear()

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            _pulse()
        else:
            loop.call_soon_threadsafe(_pulse)

    async def wait(self, timeout: float) -> None:
        if self._event is None or timeout <= 0:
            await asyncio.sleep(max(0.0, timeout))
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)


class KeyCache:
    """Recently authenticated keys, so a busy client costs no database read per call.

    A revoked key stops working within ``ttl_s``.
    """

    def __init__(self, ttl_s: float = 5.0, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, ApiKeyRecord]] = {}

    def get(self, token: str, now: float) -> ApiKeyRecord | None:
        hit = self._entries.get(token)
        if hit is None or hit[0] < now:
            return None
        return hit[1]

    def put(self, token: str, key: ApiKeyRecord, now: float) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[token] = (now + self.ttl_s, key)


@dataclass
class AppState:
    cfg: Config
    jobs: JobStore
    accounts: AccountStore
    workers: WorkerStore
    store: BlobStore
    registry: Registry
    metrics: Metrics
    clock: Callable[[], float]
    seeds: Callable[[], int]
    webhooks: WebhookStore
    # rate limits, quotas and the request budget (api.limits)
    limits: AbuseLimits
    # Pulsed when a job may have been queued (wakes lease long-polls) ...
    notifier: JobNotifier = field(default_factory=JobNotifier)
    # ... and when a job event was appended here (wakes SSE streams).
    events: JobNotifier = field(default_factory=JobNotifier)
    key_cache: KeyCache = field(default_factory=KeyCache)
    # Service-time numbers per model family (scheduler/alpha.json).
    service: ServiceModels = field(default_factory=load_service_models)
    # The background loops the leading replica runs (api.loops.add_loop), and whether
    # this replica leads.
    loops: dict[str, Loop] = field(default_factory=dict)
    leadership: Leadership = field(default_factory=Leadership)
    # The autoscaler loop's state (autoscale.enabled); None when it is off.
    autoscaler: Autoscaler | None = None
    # How webhook hosts are resolved (tests inject a hosts-style mapping).
    resolver: Resolver = system_resolver


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.cinecloud
    return state
