"""The worker's held-jobs bookkeeping: how many jobs it may lease ahead, and when."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from cinecloud.workers.held import HeldJob, HeldJobs, LeaseLimits, lease_limits
from cinecloud.workers.messages import RunJob
from cinecloud.workers.renderer import default_render_processes, render_pool_size


def job(n: int) -> HeldJob:
    return HeldJob(RunJob(f"video_{n}", f"lse_{n}", "m", {}), Path(f"/nowhere/{n}"))


def never() -> bool:
    return False


@pytest.mark.parametrize(
    ("cpus", "expected"), [(1, 1), (2, 1), (4, 1), (8, 2), (16, 4), (128, 4), (None, None)]
)
def test_render_processes_default_to_a_quarter_of_the_cpus(
    cpus: int | None, expected: int | None
) -> None:
    if cpus is None:  # this machine's
        assert 1 <= default_render_processes() <= 4
        return
    assert default_render_processes(cpus) == expected
    assert render_pool_size(None, cpus) == expected


@pytest.mark.parametrize(("configured", "size"), [(0, 1), (1, 1), (3, 3)])
def test_render_processes_configured(configured: int, size: int) -> None:
    assert render_pool_size(configured, cpus=64) == size


def test_lease_limits() -> None:
    assert lease_limits(False, 4) == LeaseLimits(ahead=1, cap=1)
    assert lease_limits(True, 1) == LeaseLimits(ahead=2, cap=4, batch=1)
    assert lease_limits(True, 4) == LeaseLimits(ahead=2, cap=10)
    assert lease_limits(True, 0) == LeaseLimits(ahead=2, cap=4)


def test_room_keeps_the_next_job_waiting_for_the_engine() -> None:
    held = HeldJobs(LeaseLimits(ahead=2, cap=4))
    assert held.room() == 1  # an idle worker takes one job, not two
    a, b, c = job(1), job(2), job(3)
    assert held.admit(a, never)
    assert held.room() == 0  # a has engine work ahead of it
    held.mark_near_end(a)
    assert held.room() == 1  # a ends soon: the next may wait for the engine
    held.admit(b, never)
    assert held.room() == 0  # one on the engine, one waiting
    held.mark_engine_done(a)  # a renders: the engine takes b
    assert held.room() == 0 and held.before_engine_end() == 1  # b is not near its end
    held.mark_near_end(b)
    assert held.room() == 1
    held.admit(c, never)
    assert held.room() == 0
    held.mark_engine_done(b)
    held.mark_near_end(c)
    assert held.room() == 1


def test_a_long_job_keeps_the_next_for_other_workers() -> None:
    """Only a job near the end of its engine work lets the next be leased."""
    held = HeldJobs(LeaseLimits(ahead=2, cap=4))
    long = job(1)
    held.admit(long, never)
    long.started = True
    for _ in range(3):
        assert held.room() == 0
    held.mark_near_end(long)
    assert held.room() == 1


def test_room_stops_at_the_cap_when_rendering_falls_behind() -> None:
    held = HeldJobs(LeaseLimits(ahead=2, cap=4))
    jobs = [job(n) for n in range(4)]
    for j in jobs:
        held.admit(j, never)
        held.mark_near_end(j)
    for j in jobs[:3]:
        held.mark_engine_done(j)  # three rendering or uploading, one on the engine
    assert held.before_engine_end() == 1
    assert held.room() == 0  # the cap, although the engine has nothing waiting
    held.remove(jobs[0])  # one completed
    assert held.room() == 1


def test_one_job_at_a_time_without_overlap() -> None:
    held = HeldJobs(lease_limits(False, 4))
    a = job(1)
    held.admit(a, never)
    held.mark_engine_done(a)
    assert held.room() == 0  # rendering and uploading still hold it
    held.remove(a)
    assert held.room() == 1


def test_states_and_ending_once() -> None:
    held = HeldJobs(LeaseLimits(ahead=2, cap=4))
    a, b = job(1), job(2)
    held.admit(a, never)
    held.admit(b, never)
    assert held.unsent() == [a, b] and held.in_child() == []
    a.sent = True
    assert held.unsent() == [b] and held.in_child() == [a]
    assert held.mark_ended(a) and not held.mark_ended(a)  # finished once only
    assert a.engine_done and held.in_child() == []
    assert held.get("video_1") is a and len(held) == 2


def test_a_stopping_worker_admits_nothing() -> None:
    held = HeldJobs(LeaseLimits(ahead=2, cap=4))
    assert not held.admit(job(1), lambda: True)
    assert held.empty_if(lambda: True) and not held.empty_if(never)
    held.admit(job(2), never)
    assert not held.empty_if(lambda: True)


def test_removing_an_old_attempt_keeps_the_new_one() -> None:
    held = HeldJobs(LeaseLimits(ahead=2, cap=4))
    old, new = job(1), job(1)
    held.admit(old, never)
    held.remove(old)
    held.admit(new, never)
    held.remove(old)  # the old attempt's late clean-up
    assert held.get("video_1") is new


def test_wait_gone_waits_for_the_earlier_attempt() -> None:
    held = HeldJobs(LeaseLimits(ahead=2, cap=4))
    old = job(1)
    held.admit(old, never)
    timer = threading.Timer(0.2, held.remove, args=(old,))
    started = time.monotonic()
    timer.start()
    held.wait_gone("video_1", never)
    assert time.monotonic() - started >= 0.15
    assert held.get("video_1") is None
    held.admit(old, never)
    held.wait_gone("video_1", lambda: True)  # a stopping worker does not wait


def test_wait_for_room_wakes_when_a_job_leaves_the_engine() -> None:
    changes: list[int] = []
    held = HeldJobs(LeaseLimits(ahead=1, cap=2), on_change=lambda: changes.append(1))
    a = job(1)
    held.admit(a, never)
    assert held.wait_for_room(timeout=0.05) == 0
    threading.Timer(0.1, held.mark_engine_done, args=(a,)).start()
    started = time.monotonic()
    assert held.wait_for_room(timeout=5.0) == 1
    assert time.monotonic() - started < 2.0
    assert changes  # the engine loop is woken on every change


@pytest.mark.parametrize(
    ("stage", "step", "total", "elapsed", "near"),
    [
        ("denoise", 0, 50, 0.0, False),  # no step done: no estimate
        ("denoise", 10, 50, 10.0, False),  # 40 s left
        ("denoise", 48, 50, 48.0, True),  # 2 s left
        ("denoise", 1, 24, 0.004, True),  # a short job: near its end from its first step
        ("decode", 0, 0, 0.0, True),
        ("text_encode", 0, 50, 0.0, False),
    ],
)
def test_engine_ends_within(stage: str, step: int, total: int, elapsed: float, near: bool) -> None:
    from cinecloud.workers.messages import Progress
    from cinecloud.workers.parent import _engine_ends_within

    msg = Progress("video_1", stage, step, total, elapsed_s=elapsed)
    assert _engine_ends_within(msg, 2.0) is near


@pytest.mark.parametrize(
    ("pool", "cpus", "threads"), [(1, 16, 16), (4, 16, 4), (4, 2, 1), (3, 8, 2)]
)
def test_render_processes_share_the_cpus(pool: int, cpus: int, threads: int) -> None:
    from cinecloud.workers.renderer import render_threads

    assert render_threads(pool, cpus) == threads


@pytest.mark.parametrize(
    ("rendering", "share", "cpus", "threads"),
    [(1, 4, 16, 16), (2, 4, 16, 8), (4, 4, 16, 4), (6, 4, 16, 4), (1, 1, 2, 2), (0, 2, 8, 8)],
)
def test_a_render_gets_the_cpus_the_others_leave(
    rendering: int, share: int, cpus: int, threads: int
) -> None:
    from cinecloud.workers.renderer import job_threads

    assert job_threads(rendering, share, cpus) == threads
