"""The autoscaling policy: tables and a fake clock; nothing sleeps."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from cinecloud.scheduler.autoscale import (
    AutoscaleContext,
    Decision,
    PoolMemory,
    PoolObservation,
    PoolPolicy,
    RateEstimate,
    autoscale,
    backlog_workers,
    decide,
    ewma_rate,
    split_capacity,
    wait_exceeds,
    workers_for_load,
)
from cinecloud.scheduler.autoscaler import Desired
from cinecloud.testing.clock import FakeClock
from cinecloud.testing.launcher import FakeLauncher, check_launcher_contract

POLICY = PoolPolicy(
    max_workers=10,
    target_wait_s=60.0,
    cold_start_s=45.0,
    idle_to_zero_s=300.0,
    upscale_delay_s=0.0,
    downscale_delay_s=60.0,
)


def obs(queued: int = 0, running: int = 0, workers: int = 0, rate_per_min: float = 0.0,
        service_s: float = 50.0) -> PoolObservation:  # fmt: skip
    return PoolObservation(queued, running, workers, rate_per_min / 60.0, service_s)


# ---------------------------------------------------------------- the math


def test_ewma_starts_the_clock_then_halves_per_half_life() -> None:
    first = ewma_rate(RateEstimate(), 7, 100.0, 60.0)
    assert first == RateEstimate(0.0, 100.0)  # the first call has no interval to count over
    steady = first
    for k in range(1, 200):  # 2 arrivals every 10 s converge to 0.2/s
        steady = ewma_rate(steady, 2, 100.0 + 10 * k, 60.0)
    assert steady.rate == pytest.approx(0.2, rel=1e-6)
    quiet = ewma_rate(steady, 0, steady.at + 60.0, 60.0)  # type: ignore[operator]
    assert quiet.rate == pytest.approx(0.1, rel=1e-9)


def test_ewma_does_not_depend_on_how_often_it_is_called() -> None:
    start = RateEstimate(1.0, 0.0)
    one = ewma_rate(start, 0, 30.0, 60.0)
    three = ewma_rate(ewma_rate(ewma_rate(start, 0, 10.0, 60.0), 0, 20.0, 60.0), 0, 30.0, 60.0)
    assert one.rate == pytest.approx(three.rate)
    assert ewma_rate(one, 5, 30.0, 60.0) == one  # no time passed: nothing to average
    with pytest.raises(ValueError):
        ewma_rate(start, -1, 40.0, 60.0)


@pytest.mark.parametrize(
    ("n", "load", "service", "wait", "expected"),
    [
        (1, 0.5, 50.0, 60.0, 0.5 * math.exp(-0.5 * 60 / 50)),  # M/M/1: rho e^{-(1-rho)t/S}
        (2, 1.0, 10.0, 0.0, 1 / 3),  # Erlang C(2, 1) = 1/3
        (3, 3.0, 10.0, 5.0, 1.0),  # n <= load: the queue never drains
        (4, 0.0, 10.0, 5.0, 0.0),  # no load, no wait
    ],
)
def test_wait_tail_matches_known_queues(
    n: int, load: float, service: float, wait: float, expected: float
) -> None:
    assert wait_exceeds(n, load, service, wait) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("rate_per_min", "service", "limit"),
    [(0.6, 50.0, 100), (6.0, 50.0, 100), (60.0, 50.0, 100), (200.0, 49.5, 400), (30.0, 5, 100)],
)
def test_load_term_is_the_fewest_workers_meeting_the_quantile(
    rate_per_min: float, service: float, limit: int
) -> None:
    rate = rate_per_min / 60
    n = workers_for_load(rate, service, 60.0, 0.95, limit)
    load = rate * service
    assert n > load
    assert wait_exceeds(n, load, service, 60.0) <= 0.05
    assert wait_exceeds(n - 1, load, service, 60.0) > 0.05


def test_load_term_is_zero_without_arrivals_and_capped() -> None:
    assert workers_for_load(0.0, 50.0, 60.0, 0.95, 10) == 0
    assert workers_for_load(10.0, 50.0, 60.0, 0.95, 10) == 10  # wants ~520


@pytest.mark.parametrize(
    ("queued", "running", "service", "cold", "target", "expected"),
    [
        (0, 3, 50.0, 45.0, 60.0, 3),  # nothing queued: the running jobs' workers
        (5, 0, 50.0, 45.0, 60.0, 5),  # cold start + a job > target: one new worker each
        (5, 2, 50.0, 45.0, 60.0, 5),  # two busy ones free up in time for one more each
        (10, 0, 5.0, 45.0, 60.0, 3),  # short jobs: each new worker starts 4 in time
        (10, 0, 5.0, 90.0, 60.0, 10),  # cold start alone beyond the target: one each
        (7, 1, 200.0, 10.0, 60.0, 8),  # a long job frees its worker too late to help
    ],
)
def test_backlog_term(
    queued: int, running: int, service: float, cold: float, target: float, expected: int
) -> None:
    policy = PoolPolicy(target_wait_s=target, cold_start_s=cold)
    assert backlog_workers(obs(queued, running, service_s=service), policy) == expected


@pytest.mark.parametrize(
    ("desired", "base", "share", "expected"),
    [
        (0, 2, 0.0, (0, 0)),
        (1, 2, 0.0, (1, 0)),  # under the base: all on-demand
        (5, 2, 0.0, (2, 3)),  # the base, then a burst on spot
        (5, 2, 1.0, (5, 0)),  # on-demand only
        (6, 2, 0.5, (4, 2)),  # half of the rest
        (7, 0, 0.5, (4, 3)),  # rounded up to on-demand
    ],
)
def test_capacity_split(desired: int, base: int, share: float, expected: tuple[int, int]) -> None:
    policy = PoolPolicy(max_workers=10, on_demand_base=base, on_demand_share=share)
    assert split_capacity(desired, policy) == expected


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_workers": 3, "max_workers": 2},
        {"target_wait_s": 0},
        {"wait_quantile": 1.0},
        {"cold_start_s": -1},
        {"downscale_delay_s": -5},
        {"on_demand_share": 1.5},
        {"on_demand_base": -1},
    ],
)
def test_bad_policy_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        PoolPolicy(**kwargs)  # type: ignore[arg-type]


def test_bad_observation_is_refused() -> None:
    with pytest.raises(ValueError, match="service_s"):
        obs(service_s=0.0)
    with pytest.raises(ValueError, match="queued"):
        obs(queued=-1)


# ---------------------------------------------------------------- decisions over time


@dataclass(frozen=True)
class Step:
    """Advance the clock ``dt`` seconds, observe, and expect ``desired`` with a reason
    starting ``reason``."""

    dt: float
    seen: PoolObservation
    desired: int
    reason: str


def run(steps: list[Step], policy: PoolPolicy = POLICY, start: int = 0) -> list[Decision]:
    clock, memory, out = FakeClock(1000.0), PoolMemory(desired=start), []
    for i, step in enumerate(steps):
        clock.advance(step.dt)
        d = decide("pool", step.seen, policy, memory, clock())
        assert (d.desired, d.reason[: len(step.reason)]) == (step.desired, step.reason), (i, d)
        memory = d.memory
        out.append(d)
    return out


SCENARIOS = {
    "nothing to do stays at zero": [Step(5, obs(), 0, "hold 0: no work")],
    "from zero at once, even with an upscale delay": [
        Step(5, obs(queued=3), 3, "up 0->3: 3 queued"),
    ],
    "steady load is served, then the pool waits before it shrinks": [
        Step(5, obs(queued=2, rate_per_min=6), 7, "up 0->7: arrivals 6/min"),
        Step(5, obs(running=2, workers=7, rate_per_min=3), 7, "hold 7: arrivals 3/min"),
        Step(30, obs(running=2, workers=7, rate_per_min=3), 7, "hold 7"),
        Step(30, obs(running=2, workers=7, rate_per_min=3), 5, "down 7->5"),
    ],
    "a target that turns back resets the downscale clock": [
        Step(5, obs(queued=6), 6, "up 0->6"),
        Step(50, obs(running=2, workers=6), 6, "hold 6"),
        Step(5, obs(queued=6, running=2, workers=6), 6, "hold 6"),  # the target is 6 again
        Step(50, obs(running=2, workers=6), 6, "hold 6"),  # down again: a fresh 60 s
        Step(59, obs(running=2, workers=6), 6, "hold 6"),
        Step(1, obs(running=2, workers=6), 2, "down 6->2"),
    ],
    "one worker is kept until the pool has been idle long enough, then zero": [
        Step(5, obs(queued=1), 1, "up 0->1"),
        Step(60, obs(running=1, workers=1), 1, "hold 1"),  # the last work seen at 1065
        Step(100, obs(workers=1), 1, "hold 1: no work; one kept until idle 300 s"),
        Step(199, obs(workers=1, rate_per_min=0.1), 1, "hold 1: arrivals 0.1/min"),
        Step(1, obs(workers=1, rate_per_min=0.1), 1, "hold 1: idle 300 s >= 300 s; downscale"),
        Step(60, obs(workers=1, rate_per_min=0.1), 0, "down 1->0: idle 360 s"),
        Step(5, obs(rate_per_min=0.1), 0, "hold 0: idle 365 s"),  # the forecast is dropped
        Step(5, obs(queued=1, rate_per_min=0.1), 1, "up 0->1: 1 queued"),  # work: back
    ],
    "never fewer workers than running jobs": [
        Step(5, obs(queued=4), 4, "up 0->4"),
        Step(100, obs(running=4, workers=4), 4, "hold 4: 0 queued, 4 running need 4"),
    ],
    "no downscale while jobs wait (the workers are busy or starting)": [
        Step(5, obs(queued=6), 6, "up 0->6"),
        Step(65, obs(queued=2, running=1, workers=6), 6, "hold 6: 2 queued, 1 running need 2"),
        Step(5, obs(running=3, workers=6), 6, "hold 6: 0 queued, 3 running need 3"),
    ],
    "capped at max_workers": [
        Step(5, obs(queued=40), 10, "up 0->10: 40 queued, 0 running need 40"),
    ],
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_decisions_over_time(name: str) -> None:
    run(SCENARIOS[name])


def test_reasons_name_the_cap_and_the_holds() -> None:
    assert "capped at max_workers 10" in run(SCENARIOS["capped at max_workers"])[0].reason
    waiting = run(SCENARIOS["no downscale while jobs wait (the workers are busy or starting)"])
    assert waiting[1].reason.endswith("; no downscale while 2 queued")
    assert waiting[2].reason.endswith("; downscale to 3 in 60 s")


def test_upscale_delay_holds_a_rise_until_it_lasts() -> None:
    policy = PoolPolicy(max_workers=10, upscale_delay_s=30.0)
    run(
        [
            Step(5, obs(queued=3, running=1, workers=2), 2, "hold 2: "),
            Step(20, obs(queued=3, running=1, workers=2), 2, "hold 2"),
            Step(10, obs(queued=3, running=1, workers=2), 3, "up 2->3"),
        ],
        policy,
        start=2,
    )
    held = run([Step(5, obs(queued=3, running=1, workers=2), 2, "hold 2")], policy, start=2)
    assert "upscale to 3 in 30 s" in held[0].reason


def test_min_workers_floor_and_spot_split() -> None:
    policy = PoolPolicy(min_workers=2, max_workers=10, on_demand_base=1, on_demand_share=0.0)
    [d] = run([Step(5, obs(), 2, "up 0->2: no work; min_workers 2")], policy)
    assert (d.on_demand, d.spot) == (1, 1)
    [d] = run([Step(5, obs(queued=6), 6, "up 0->6")], policy)
    assert (d.on_demand, d.spot) == (1, 5)


def test_autoscale_decides_every_pool_with_its_own_policy_and_memory() -> None:
    small = PoolPolicy(max_workers=2)
    ctx = AutoscaleContext(
        now=500.0,
        pools={"a": obs(queued=5), "b": obs(queued=5), "c": obs(workers=3)},
        policies={"a": small},
        memory={"c": PoolMemory(desired=3, busy_at=490.0)},
        default=POLICY,
    )
    out = autoscale(ctx)
    assert {p: d.desired for p, d in out.items()} == {"a": 2, "b": 5, "c": 3}
    assert out["c"].reason.startswith("hold 3: no work; one kept")  # waits for the delay
    assert out["c"].target == 1 and out["c"].memory.pending_since == 500.0
    assert all(d.at == 500.0 for d in out.values())


def test_fake_launcher_keeps_the_launcher_contract() -> None:
    launcher = FakeLauncher()
    check_launcher_contract(launcher, Desired, lambda pred: pred())
    assert launcher.calls[0] == ("model-a", 2, 0)
    launcher.scale("model-a", Desired(1, 3))
    assert launcher.current("model-a") == 4 and launcher.calls[-1] == ("model-a", 1, 3)
