"""workers.outbox.EventOutbox: a round's events in one call, and the fallbacks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cinecloud.testing.clock import FakeClock
from cinecloud.workers.client import ControlPlaneError, LeaseLost, Unreachable
from cinecloud.workers.held import HeldJob
from cinecloud.workers.messages import RunJob
from cinecloud.workers.outbox import EventOutbox


class Client:
    """The two events calls, recorded; ``fail_many``/``fail_one`` are raised instead."""

    def __init__(self, fail_many: Exception | None = None, lost: set[str] | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail_many = fail_many
        self.fail_one: Exception | None = None
        self.lost = lost or set()
        self.cancel = False

    def many_events(self, items: list[tuple[str, str, list[dict[str, Any]]]]) -> set[str]:
        self.calls.append(("many", [(job, len(events)) for job, _, events in items]))
        if self.fail_many is not None:
            raise self.fail_many
        return self.lost

    def events(self, job_id: str, lease_id: str, events: list[dict[str, Any]]) -> bool:
        self.calls.append(("one", (job_id, len(events))))
        if self.fail_one is not None:
            raise self.fail_one
        return self.cancel


def held(job_id: str) -> HeldJob:
    return HeldJob(RunJob(job_id, f"lease-{job_id}", "m", {}), Path("/nonexistent"))


def outbox(client: Client, clock: FakeClock) -> EventOutbox:
    return EventOutbox(client, clock)  # type: ignore[arg-type]  # the calls it makes


def step(n: int) -> dict[str, Any]:
    return {"type": "progress", "stage": "denoise", "step": n}


def test_a_round_of_several_jobs_goes_in_one_call() -> None:
    client, clock = Client(lost={"b"}), FakeClock(0.0)
    box, a, b = outbox(client, clock), held("a"), held("b")
    box.add(a, step(1))
    box.add(b, step(1))
    box.add(a, step(2))
    box.flush()
    assert client.calls == [("many", [("a", 2), ("b", 1)])]
    assert b.cancel.is_set() and b.reason == "lease lost" and not a.cancel.is_set()
    box.flush()  # nothing queued: nothing sent
    box.add(a, step(3))
    box.flush()  # one job: the one-job call
    assert client.calls[1:] == [("one", ("a", 1))]


def test_an_older_control_plane_gets_one_call_per_job() -> None:
    client, clock = (
        Client(fail_many=ControlPlaneError(404, "not_found", "no such route")),
        FakeClock(0),
    )
    box, a, b = outbox(client, clock), held("a"), held("b")
    for _ in range(2):
        box.add(a, step(1))
        box.add(b, step(1))
        box.flush()
    assert client.calls == [
        ("many", [("a", 1), ("b", 1)]),
        ("one", ("a", 1)),
        ("one", ("b", 1)),
        ("one", ("a", 1)),  # not asked again
        ("one", ("b", 1)),
    ]


def test_a_failing_control_plane_pauses_events() -> None:
    client, clock = Client(fail_many=Unreachable("down")), FakeClock(0.0)
    box, a, b = outbox(client, clock), held("a"), held("b")
    box.add(a, step(1))
    box.add(b, step(1))
    box.flush()
    box.send_now(a, [step(2)])  # paused: dropped (events are best-effort)
    assert len(client.calls) == 1
    clock.advance(5.0)
    client.fail_many = None
    box.send_now(a, [step(3)])
    assert client.calls[-1] == ("one", ("a", 1))


def test_one_job_lost_or_canceled_by_its_answer() -> None:
    client, clock = Client(), FakeClock(0.0)
    box, a = outbox(client, clock), held("a")
    client.cancel = True
    box.send_now(a, [step(1)])
    assert a.reason == "canceled by the control plane"
    b = held("b")
    client.fail_one = LeaseLost(409, "lease_lost", "gone")
    box.send_now(b, [step(1)])
    assert b.reason == "lease lost"
