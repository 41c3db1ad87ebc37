"""workers.delivery.DeliveryGroup: a batch's finished jobs go out in one request."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from cinecloud.workers.client import Delivered, Delivery, Unreachable
from cinecloud.workers.delivery import DeliveryGroup


def item(job_id: str) -> Delivery:
    return Delivery(
        job_id, f"lease-{job_id}", [("video.mp4", Path("/nonexistent"), "video/mp4")], {}
    )


class Recorder:
    """A ``send`` that records each request's jobs and answers every job completed."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.requests: list[list[str]] = []
        self.fail = fail
        self.lock = threading.Lock()

    def __call__(self, items: Sequence[Delivery]) -> dict[str, Delivered]:
        with self.lock:
            self.requests.append([d.job_id for d in items])
        if self.fail is not None:
            raise self.fail
        return {d.job_id: Delivered(status="completed") for d in items}


def deliver_all(
    group: DeliveryGroup, send: Recorder, ids: Sequence[str], pause_s: float = 0.0
) -> dict[str, Delivered | BaseException]:
    """Each job delivers from its own thread, ``pause_s`` apart, as finishers do."""
    answers: dict[str, Delivered | BaseException] = {}

    def one(job_id: str) -> None:
        try:
            answers[job_id] = group.deliver(item(job_id), send)
        except BaseException as exc:
            answers[job_id] = exc

    threads = []
    for job_id in ids:
        threads.append(threading.Thread(target=one, args=(job_id,)))
        threads[-1].start()
        time.sleep(pause_s)
    for t in threads:
        t.join(10)
    return answers


def test_the_last_to_arrive_sends_the_whole_batch() -> None:
    ids = ["a", "b", "c", "d"]
    send = Recorder()
    answers = deliver_all(DeliveryGroup(ids, wait_s=5.0), send, ids, pause_s=0.05)
    assert send.requests == [ids]
    assert all(a == Delivered(status="completed") for a in answers.values())


def test_a_member_that_leaves_is_not_waited_for() -> None:
    group = DeliveryGroup(["a", "b", "c"], wait_s=30.0)
    send = Recorder()
    group.leave("c")  # failed, or canceled
    started = time.monotonic()
    deliver_all(group, send, ["a", "b"])
    assert sorted(send.requests[0]) == ["a", "b"] and len(send.requests) == 1
    assert time.monotonic() - started < 5


def test_a_slow_member_is_left_for_a_later_request() -> None:
    group = DeliveryGroup(["a", "b", "slow"], wait_s=0.2)
    send = Recorder()
    started = time.monotonic()
    answers = deliver_all(group, send, ["a", "b"])
    assert 0.2 <= time.monotonic() - started < 5
    assert sorted(send.requests[0]) == ["a", "b"]
    assert group.deliver(item("slow"), send) == Delivered(status="completed")
    assert send.requests[1:] == [["slow"]] and len(answers) == 2


def test_a_failed_request_reaches_every_job_it_carried() -> None:
    ids = ["a", "b"]
    send = Recorder(fail=Unreachable("the control plane is away"))
    answers = deliver_all(DeliveryGroup(ids, wait_s=5.0), send, ids)
    assert send.requests == [ids] or sorted(send.requests[0]) == ids
    assert all(isinstance(a, Unreachable) for a in answers.values())


def test_a_job_alone_goes_at_once() -> None:
    send = Recorder()
    assert DeliveryGroup(["a"], wait_s=0.0).deliver(item("a"), send).status == "completed"
    with pytest.raises(Unreachable):
        DeliveryGroup(["b"], wait_s=0.0).deliver(item("b"), Recorder(Unreachable("down")))
