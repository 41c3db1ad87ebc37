"""``benchmarks/simulate.py``: a short simulated day, the policies compared on it."""

from __future__ import annotations

import importlib
import math
import random
import sys
from dataclasses import replace
from types import ModuleType
from typing import Any

import pytest

from cinecloud.config import repo_root


@pytest.fixture(scope="module")
def sim() -> ModuleType:
    """The script as a module (registered: its dataclasses look their module up)."""
    folder = str(repo_root() / "benchmarks")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module("simulate")


@pytest.fixture(scope="module")
def short(sim: ModuleType) -> Any:
    """Three hours: a trickle, and a burst of 100 videos peaking at 100 a minute."""
    return sim.Params(
        seed=3,
        day_s=3 * 3600.0,
        videos=160.0,
        burst_videos=100.0,
        peak_per_min=100.0,
        burst_at_h=1.5,
        max_workers=128,
    )


@pytest.fixture(scope="module")
def result(sim: ModuleType, short: Any) -> dict[str, Any]:
    out: dict[str, Any] = sim.run_all(short)
    return out


def rows(result: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["policy"], r["capacity"]): r for r in result["rows"]}


def test_every_policy_finishes_every_video_and_pays_for_at_least_its_work(
    result: dict[str, Any],
) -> None:
    assert len(result["rows"]) == 8  # fixed, ray-like 2 and 1, ours; two capacity mixes
    for r in result["rows"]:
        assert r["completed"] == r["videos"] > 100, r
        assert r["gpu_hours"] >= r["busy_gpu_hours"] > 0, r
        assert r["usd_per_video"] > 0, r


def test_fixed_fleet_is_the_smallest_that_holds_the_peak(
    sim: ModuleType, short: Any, result: dict[str, Any]
) -> None:
    n = result["fixed_workers"]
    fixed = rows(result)[("fixed", "on-demand")]
    assert fixed["peak_p95_wait_s"] <= short.target_wait_s
    assert fixed["peak_workers"] == n and fixed["gpu_hours"] >= n * short.day_s / 3600
    times = sim.arrivals(short, random.Random(short.seed))
    smaller = sim.simulate(short, sim.Fixed(n - 1, sim.our_policy(short, False)), False, times)
    assert smaller["peak_p95_wait_s"] > short.target_wait_s


def test_ours_holds_the_peak_with_far_fewer_gpu_hours(short: Any, result: dict[str, Any]) -> None:
    by = rows(result)
    ours, fixed = by[("cinecloud", "on-demand")], by[("fixed", "on-demand")]
    assert ours["peak_p95_wait_s"] <= short.target_wait_s
    assert result["peak_p95_ok"] and result["gpu_hours_ok"]
    assert ours["gpu_hours"] <= 0.75 * fixed["gpu_hours"]
    # Ray Serve's 30 s upscale delay comes on top of the cold start at the burst.
    assert by[("ray-like 2", "on-demand")]["peak_p95_wait_s"] > ours["peak_p95_wait_s"] + 20
    mix = by[("cinecloud", "spot mix")]
    assert mix["spot_gpu_hours"] > 0 and mix["usd_per_video"] < ours["usd_per_video"]


def test_arrivals_follow_the_curve(sim: ModuleType, short: Any) -> None:
    counts, in_peak = [], []
    centre = short.burst_at_h * 3600
    for seed in range(5):
        times = sim.arrivals(short, random.Random(seed))
        assert times == sorted(times) and all(0 <= t < short.day_s for t in times)
        counts.append(len(times))
        in_peak.append(sum(1 for t in times if abs(t - centre) <= short.peak_window_s))
    mean = sum(counts) / len(counts)
    assert abs(mean - short.videos) < 4 * math.sqrt(short.videos / len(counts))
    assert 90 <= sum(in_peak) / len(in_peak) <= 115  # the burst, and a little trickle


def test_reclaimed_spot_jobs_resume_and_redo_a_few_steps(sim: ModuleType, short: Any) -> None:
    p = replace(short, preempt_per_hour=6.0)  # a reclaim every 10 minutes per GPU
    times = sim.arrivals(p, random.Random(p.seed))
    r = sim.simulate(p, sim.Ours(sim.our_policy(p, True), p.half_life_s), True, times)
    assert r["preemptions"] > 0 and r["completed"] == r["videos"]
    step_s = p.service_s / p.steps
    assert 0 < r["lost_gpu_hours"] * 3600 <= r["preemptions"] * p.lost_steps * step_s + 1e-6
