"""What the routers share: the config, the stores and the clock."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import Request

from cinecloud.config import Config
from cinecloud.engine.registry import Registry
from cinecloud.jobs import AccountStore, JobStore, WorkerStore
from cinecloud.storage import BlobStore
from cinecloud.telemetry import Metrics

__all__ = ["AppState", "JobNotifier", "get_state"]


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
    # Pulsed when a job may have been queued (wakes lease long-polls) ...
    notifier: JobNotifier = field(default_factory=JobNotifier)
    # ... and when a job event was appended here (wakes SSE streams).
    events: JobNotifier = field(default_factory=JobNotifier)


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.cinecloud
    return state
