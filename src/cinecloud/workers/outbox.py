"""Progress events on their way from the worker's parent to the control plane.

The engine loop queues each job's events while it handles one round of the child's
messages (:meth:`EventOutbox.add`) and sends them at the round's end
(:meth:`EventOutbox.flush`): the jobs of a batch report every step together, and one
``events`` call for all of them replaces one per job. Events are best-effort: after the
control plane failed to take some, none are sent for ``pause_s`` so the engine loop
keeps up with the child. A control plane without the several-jobs call (404) is sent
one call per job from then on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from cinecloud.workers.client import ControlPlaneClient, ControlPlaneError, LeaseLost, Unreachable
from cinecloud.workers.held import HeldJob

__all__ = ["EVENTS_PAUSE_S", "EventOutbox"]

log = logging.getLogger(__name__)

#: How long events wait after the control plane failed to take some.
EVENTS_PAUSE_S = 5.0


class EventOutbox:
    def __init__(
        self,
        client: ControlPlaneClient,
        clock: Callable[[], float],
        pause_s: float = EVENTS_PAUSE_S,
    ) -> None:
        self._client = client
        self._clock = clock
        self._pause_s = pause_s
        self._paused_until = 0.0
        self._pending: dict[str, tuple[HeldJob, list[dict[str, Any]]]] = {}
        self._many = True  # the control plane takes several jobs' events at once

    def add(self, held: HeldJob, event: dict[str, Any]) -> None:
        """Queue ``event`` of ``held`` until the next :meth:`flush`."""
        self._pending.setdefault(held.job_id, (held, []))[1].append(event)

    def flush(self) -> None:
        """Send what is queued: one request for several jobs, else one for the job."""
        pending, self._pending = list(self._pending.values()), {}
        if len(pending) > 1 and self._many and not self._paused():
            items = [(h.job_id, h.job.lease_id, events) for h, events in pending]
            try:
                lost = self._client.many_events(items)
            except ControlPlaneError as exc:
                if exc.status != 404:
                    self._pause(exc)
                    return
                self._many = False  # an older control plane: one job at a time
            except Unreachable as exc:
                self._pause(exc)
                return
            else:
                for held, _ in pending:
                    if held.job_id in lost:
                        held.request_cancel("lease lost")
                return
        for held, events in pending:
            self.send_now(held, events)

    def send_now(self, held: HeldJob, events: list[dict[str, Any]]) -> None:
        """Send ``held``'s ``events`` at once (from any thread); a lost lease or a
        cancel in the answer cancels the job."""
        if self._paused():
            return
        job = held.job
        try:
            cancel = self._client.events(job.job_id, job.lease_id, events)
        except LeaseLost:
            held.request_cancel("lease lost")
        except (Unreachable, ControlPlaneError) as exc:
            self._pause(exc)
        else:
            if cancel:
                held.request_cancel("canceled by the control plane")

    def _paused(self) -> bool:
        return self._clock() < self._paused_until

    def _pause(self, exc: Exception) -> None:
        log.warning("progress events paused for %.0f s: %s", self._pause_s, exc)
        self._paused_until = self._clock() + self._pause_s
