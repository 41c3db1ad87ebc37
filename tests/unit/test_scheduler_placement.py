"""Placement: which queued job a worker of N ranks takes. Tables and a fake clock."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from cinecloud.scheduler import (
    Candidate,
    InvalidParallel,
    PlacementPolicy,
    check_parallel,
    choose,
    gain_s,
    order,
    service_time,
)
from cinecloud.testing.clock import FakeClock

T0 = 1_000.0
POLICY = PlacementPolicy(aging_s=60.0, max_parallel=8)


def job(
    job_id: str,
    work: float,
    *,
    age: float = 0.0,
    priority: int = 0,
    alpha: float = 0.1,
    parallel: int | None = None,
) -> Candidate:
    return Candidate(job_id, priority, T0 - age, work, alpha, parallel)


@pytest.mark.parametrize(
    ("width", "jobs", "expected"),
    [
        # a requested degree runs only on exactly that width
        (1, [job("p2", 10, parallel=2)], None),
        (4, [job("p2", 10, parallel=2)], None),
        (2, [job("p2", 10, parallel=2)], "p2"),
        (1, [job("p2", 10, parallel=2), job("any", 99)], "any"),
        (2, [job("p1", 10, parallel=1), job("any", 1)], "any"),
        # a wide worker takes the largest gain, a narrow one the smallest job
        (2, [job("small", 5), job("big", 50), job("mid", 20)], "big"),
        (1, [job("small", 5), job("big", 50), job("mid", 20)], "small"),
        # the gain, not the size: a big job of a family that does not split saves nothing
        (4, [job("big-solo", 100, alpha=1.0), job("mid-split", 40, alpha=0.1)], "mid-split"),
        (4, [job("big-poor", 100, alpha=0.9), job("mid-good", 60, alpha=0.0)], "mid-good"),
        # priority before size
        (2, [job("big", 50), job("urgent", 5, priority=1)], "urgent"),
        (1, [job("small", 5), job("urgent", 50, priority=1)], "urgent"),
        # ties: the older job, then the smaller id
        (1, [job("b", 5, age=1), job("a", 5, age=2)], "a"),
        (1, [job("b", 5, age=1), job("a", 5, age=1)], "a"),
        # past the aging bound a job goes first, whatever its size or priority ...
        (2, [job("big", 50), job("old-small", 1, age=60)], "old-small"),
        (1, [job("small", 1), job("old-big", 500, age=61)], "old-big"),
        (1, [job("urgent", 1, priority=100), job("old", 9, age=70, priority=-5)], "old"),
        # ... the oldest of them first
        (1, [job("old", 1, age=70), job("older", 90, age=80)], "older"),
        # ... but never onto a width it did not ask for
        (1, [job("small", 1), job("old-p2", 9, age=500, parallel=2)], "small"),
        (2, [], None),
    ],
)
def test_choose(width: int, jobs: list[Candidate], expected: str | None) -> None:
    got = choose(width, jobs, T0, POLICY)
    assert (got.job_id if got else None) == expected


def test_order_ranks_every_compatible_job() -> None:
    jobs = [job("a", 5), job("b", 50), job("c", 20), job("p4", 1, parallel=4)]
    assert [c.job_id for c in order(2, jobs, T0, POLICY)] == ["b", "c", "a"]
    assert [c.job_id for c in order(1, jobs, T0, POLICY)] == ["a", "c", "b"]
    assert [c.job_id for c in order(4, jobs, T0, POLICY)] == ["b", "c", "a", "p4"]


@pytest.mark.parametrize(
    ("work", "width", "alpha", "saved"),
    [
        (100.0, 1, 0.1, 0.0),
        (100.0, 2, 0.0, 50.0),
        (100.0, 4, 1.0, 0.0),
        (110.0, 2, 0.1, 110 - 110 * 1.1 / 2),
    ],
)
def test_gain_is_seconds_saved(work: float, width: int, alpha: float, saved: float) -> None:
    assert gain_s(job("j", work, alpha=alpha), width) == pytest.approx(saved)


@pytest.mark.parametrize("degree", [1, 2, 4, 8])
def test_valid_degrees(degree: int) -> None:
    check_parallel(degree, 8)


@pytest.mark.parametrize(
    ("degree", "message"),
    [
        (0, "power of two"),
        (-2, "power of two"),
        (3, "power of two"),
        (6, "power of two"),
        (16, "at most 8"),
        (64, "at most 8"),
    ],
)
def test_invalid_degrees(degree: int, message: str) -> None:
    with pytest.raises(InvalidParallel, match=message):
        check_parallel(degree, 8)


@pytest.mark.parametrize("kwargs", [{"aging_s": 0.0}, {"max_parallel": 3}, {"max_parallel": 0}])
def test_policy_refuses_bad_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        PlacementPolicy(**kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------ starvation, on a fake clock


@dataclass
class Queue:
    """One worker serving a queue that a stream keeps filling faster than it drains."""

    width: int
    policy: PlacementPolicy
    clock: FakeClock = field(default_factory=lambda: FakeClock(T0))
    queued: list[Candidate] = field(default_factory=list)
    started: dict[str, float] = field(default_factory=dict)
    seq: int = 0

    def submit(self, name: str, work: float) -> None:
        self.seq += 1
        self.queued.append(Candidate(f"{name}-{self.seq:04d}", 0, self.clock(), work, 0.1))

    def serve(self, stream: tuple[str, float], every_s: float, until_s: float) -> None:
        """Lease, run, repeat; one ``stream`` job arrives every ``every_s`` seconds."""
        next_arrival = self.clock()
        while self.clock() < T0 + until_s:
            while next_arrival <= self.clock():
                self.submit(*stream)
                next_arrival += every_s
            pick = choose(self.width, self.queued, self.clock(), self.policy)
            if pick is None:  # idle until the next arrival
                self.clock.now = next_arrival
                continue
            self.queued.remove(pick)
            self.started[pick.job_id] = self.clock()
            self.clock.advance(service_time(pick.work_s, self.width, pick.alpha))

    def wait_of(self, prefix: str) -> float | None:
        starts = [t for name, t in self.started.items() if name.startswith(prefix)]
        return starts[0] - T0 if starts else None


@pytest.mark.parametrize(
    ("width", "stream", "lone"),
    [
        (2, ("big", 20.0), ("small", 1.0)),  # big jobs cannot starve a small one ...
        (1, ("small", 2.0), ("big", 40.0)),  # ... nor small jobs a big one
    ],
)
def test_a_stream_cannot_starve_a_lone_job(
    width: int, stream: tuple[str, float], lone: tuple[str, float]
) -> None:
    bound = 60.0
    q = Queue(width, PlacementPolicy(aging_s=bound))
    q.submit(*lone)
    # arrivals twice as fast as the worker serves them: the queue never empties
    every = service_time(stream[1], width, 0.1) / 2
    q.serve(stream, every, until_s=10 * bound)
    wait = q.wait_of(lone[0])
    longest_run = service_time(max(stream[1], lone[1]), width, 0.1)
    assert wait is not None and wait <= bound + longest_run
    assert len(q.queued) > 10  # the stream really did outpace the worker


@pytest.mark.parametrize(
    ("width", "stream", "lone"),
    [(2, ("big", 20.0), ("small", 1.0)), (1, ("small", 2.0), ("big", 40.0))],
)
def test_without_the_aging_bound_the_lone_job_would_starve(
    width: int, stream: tuple[str, float], lone: tuple[str, float]
) -> None:
    q = Queue(width, PlacementPolicy(aging_s=1e9))
    q.submit(*lone)
    q.serve(stream, service_time(stream[1], width, 0.1) / 2, until_s=600.0)
    assert q.wait_of(lone[0]) is None


def test_aged_jobs_go_in_arrival_order() -> None:
    q = Queue(1, PlacementPolicy(aging_s=30.0))
    for work in (9.0, 1.0, 5.0):
        q.submit("j", work)
    q.clock.advance(31.0)
    q.serve(("tiny", 0.1), every_s=0.5, until_s=60.0)
    firsts = sorted(q.started, key=q.started.__getitem__)[:3]
    assert firsts == ["j-0001", "j-0002", "j-0003"]
