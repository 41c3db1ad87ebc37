"""The webhook loop's passes: woken by job events, but not more often than its gap."""

from __future__ import annotations

import asyncio
import types

import pytest

from cinecloud.api.state import JobNotifier
from cinecloud.api.webhook_loop import MIN_PASS_GAP_S, webhook_loop
from cinecloud.config import WebhookConfig

pytestmark = pytest.mark.unit


class _CountingStore:
    """The webhook store's calls a pass makes, with nothing to send."""

    def __init__(self) -> None:
        self.passes = 0

    def fanout(self, grace_s: float) -> int:
        self.passes += 1
        return 0

    def claim(self, limit: int, lock_s: float, max_attempts: int) -> list[object]:
        return []


async def _passes(notify_every_s: float | None, run_s: float = 1.0) -> int:
    loop = asyncio.get_running_loop()
    events = JobNotifier()
    events.bind(loop)
    store = _CountingStore()
    state = types.SimpleNamespace(
        cfg=types.SimpleNamespace(webhooks=WebhookConfig(poll_interval_s=0.5)),
        webhooks=store,
        events=events,
    )
    task = asyncio.create_task(webhook_loop(state))  # type: ignore[arg-type]
    end = loop.time() + run_s
    while loop.time() < end:
        if notify_every_s is not None:
            events.notify()
        await asyncio.sleep(notify_every_s or 0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return store.passes


def test_a_stream_of_job_events_runs_one_pass_per_gap_not_one_per_event() -> None:
    # 200 events in a second: about 1 / MIN_PASS_GAP_S passes, not 200
    passes = asyncio.run(_passes(notify_every_s=0.005))
    assert 1 / MIN_PASS_GAP_S * 0.5 <= passes <= 1 / MIN_PASS_GAP_S + 2, passes


def test_without_events_the_loop_passes_on_its_poll_interval() -> None:
    passes = asyncio.run(_passes(notify_every_s=None))
    assert 2 <= passes <= 4, passes  # at 0, 0.5 and 1.0 s
